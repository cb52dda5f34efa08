"""`make demo`: a real `pulumi up` of the local stack, then a live failover.

    venv/bin/python scripts/demo.py [--skip-up] [--samples 200]

1. start what the stack deploys onto (scripts/local-env up: a local Kubernetes control plane
   per cloud and one for the edge sites, anvil, PowerDNS, one /health endpoint per cloud);
2. `pulumi up --stack local --yes` with the engine from .tools/bin (make engine) and the
   Kubernetes provider plugin (tools/pulumi-kubernetes/build.sh, installed into PULUMI_HOME);
   the kubeconfigs reach the program through the environment (`local-env env`);
3. per cluster, the Deployments (available/desired) and Services (with their addresses); then
   the contract address, the registered service ids, the DNS weights and a sample of answers
   from PowerDNS, counted by cloud;
4. fail aws, reconcile once with the failover controller, show the new distribution;
   heal aws, wait out the recovery hold-down, reconcile, show it back;
5. data flows: publish one reading at an edge site's broker and show it arriving at the core,
   through mosquitto brokers on loopback running the configs the stack's `dataFlows` generates
   (devenv.mosquitto; the local clusters' kwok pods run no containers);
6. say what to try next.

Safe to re-run: every step converges on what is already there.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from devenv.cli import DEFAULT_DIR, DEFAULT_STACK_FILE, LocalEnv

REPO = Path(__file__).resolve().parent.parent

STACK = "local"
# Published on purpose: it guards only the public anvil dev key and a loopback-only API key.
LOCAL_PASSPHRASE = "edgefabric-local"
PYTHON = str(REPO / "venv" / "bin" / "python")

TOKENS = {
    "contract": "pulumi-python:dynamic/registry:RegistryContract",
    "service": "pulumi-python:dynamic/registry:ServiceRegistration",
    "failover": "pulumi-python:dynamic/failover:WeightedFailover",
}


MANAGED = "app.kubernetes.io/managed-by=edgefabric"
# Wide enough for an aws load balancer's hostname when the output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 160)


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def engine_env(local: LocalEnv) -> dict[str, str]:
    """What scripts/engine-env.sh sets, the local stack's passphrase, and what the program reads
    from the environment here (`local-env env`: the kubeconfigs, the resolver)."""
    env = dict(os.environ)
    env.update(
        PULUMI_HOME=env.get("PULUMI_HOME") or str(REPO / ".pulumi-home"),
        PULUMI_BACKEND_URL=env.get("PULUMI_BACKEND_URL") or f"file://{REPO / '.state'}",
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        PULUMI_CONFIG_PASSPHRASE=LOCAL_PASSPHRASE,
        PATH=f"{REPO / '.tools' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        # This tree's packages, for the program and the dynamic-provider host.
        PYTHONPATH=str(REPO),
    )
    env.update(local.program_env())
    Path(env["PULUMI_HOME"]).mkdir(parents=True, exist_ok=True)
    Path(env["PULUMI_BACKEND_URL"].removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    return env


def ensure_k8s_provider(env: Mapping[str, str]) -> None:
    """The Kubernetes provider plugin in PULUMI_HOME (built from Go modules once, then cached)."""
    script = REPO / "tools" / "pulumi-kubernetes" / "build.sh"
    quick = subprocess.run(["bash", str(script), "--check"], env=dict(env), capture_output=True, text=True)
    if quick.returncode == 0:
        return
    log = Path(env["PULUMI_HOME"]) / "pulumi-kubernetes-build.log"
    with console.status(f"building the Kubernetes provider plugin from Go modules (~10 min cold; log {log})"), \
            open(log, "w") as out:
        proc = subprocess.run(["bash", str(script)], env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"demo: {script.relative_to(REPO)} failed; see {log}")


def print_clusters(local: LocalEnv) -> None:
    """Per cluster: our Deployments (available/desired) and Services (with their addresses)."""
    for plan in local.layout.cluster_plans:
        api = local.cluster(plan).api
        table = Table(title=f"cluster {plan.name} ({plan.flavor}, {plan.server})", title_justify="left")
        table.add_column("kind", no_wrap=True)
        table.add_column("namespace", overflow="fold")
        table.add_column("name", overflow="fold")
        table.add_column("ready / ports", no_wrap=True)
        table.add_column("address", overflow="fold")
        for dep in api.get("/apis/apps/v1/deployments", labelSelector=MANAGED).get("items", []):
            meta, status = dep["metadata"], dep.get("status") or {}
            desired, available = dep["spec"].get("replicas", 0), status.get("availableReplicas", 0)
            style = "green" if available == desired else "yellow"
            table.add_row("Deployment", meta["namespace"], meta["name"], f"[{style}]{available}/{desired}[/{style}]", "")
        for svc in api.get("/api/v1/services", labelSelector=MANAGED).get("items", []):
            meta, spec = svc["metadata"], svc["spec"]
            points = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            lb = ", ".join(p.get("hostname") or p.get("ip", "") for p in points)
            ports = ",".join(str(p["port"]) for p in spec.get("ports") or [])
            kind = "Service LB" if spec.get("type") == "LoadBalancer" else "Service"
            table.add_row(kind, meta["namespace"], meta["name"], ports, lb or str(spec.get("clusterIP")))
        console.print(table)


def pulumi(env: Mapping[str, str], *args: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("pulumi", path=env["PATH"])
    if exe is None:
        raise SystemExit("demo: no `pulumi` found; run `make engine` first")
    proc = subprocess.run([exe, *args], cwd=REPO, env=dict(env), text=True, capture_output=capture)
    if proc.returncode != 0:
        if capture:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"demo: `pulumi {' '.join(args)}` failed (exit {proc.returncode})")
    return proc


def find(obj: Any, *keys: str) -> Any:
    """First value under any of `keys`, searching nested outputs depth-first."""
    if isinstance(obj, Mapping):
        for key in keys:
            if key in obj:
                return obj[key]
        for value in obj.values():
            got = find(value, *keys)
            if got is not None:
                return got
    return None


def forget_state_of_purged_env(env: Mapping[str, str], local: LocalEnv) -> None:
    """After `local-env down --purge` the chain is new: a deployed stack's contract is gone.

    Everything the local stack deploys lives in the stand-ins, so its state then describes
    nothing that exists; start the stack afresh (keeping Pulumi.local.yaml) instead of
    failing on a contract that is not there.
    """
    from devenv.anvil import rpc_call

    state = json.loads(pulumi(env, "stack", "export", "--stack", STACK).stdout)
    for res in state["deployment"].get("resources", []):
        address = (res.get("outputs") or {}).get("address") if res.get("type") == TOKENS["contract"] else None
        if address and rpc_call(local.layout.rpc_url, "eth_getCode", [address, "latest"]) in ("0x", "0x0"):
            print(f"  the chain has no contract at {address} any more (local-env down --purge?):")
            print("  starting the local stack's state afresh")
            pulumi(env, "stack", "rm", STACK, "--force", "--yes", "--preserve-config")
            pulumi(env, "stack", "init", STACK)
            return


def summary(env: Mapping[str, str]) -> tuple[str | None, dict[str, str], dict[str, Any] | None]:
    """Contract address, service ids and DNS weights: stack outputs first, else the state."""
    outputs = json.loads(pulumi(env, "stack", "output", "--json", "--stack", STACK).stdout or "{}")
    address = find(outputs, "contractAddress", "contract_address")
    services = find(outputs, "serviceIds", "service_ids") or {}
    weights = find(outputs, "dnsWeights", "dns_weights", "weights")
    if address is None or not services or weights is None:
        state = json.loads(pulumi(env, "stack", "export", "--stack", STACK).stdout)
        resources = state["deployment"].get("resources", [])
        for res in resources:
            outs = res.get("outputs", {})
            name = res["urn"].rsplit("::", 1)[-1]
            if res["type"] == TOKENS["contract"] and address is None:
                address = find(outs, "address", "contract_address", "contractAddress")
            elif res["type"] == TOKENS["service"] and isinstance(services, dict):
                sid = find(outs, "service_id", "serviceId")
                if sid:
                    services.setdefault(name, sid)
            elif res["type"] == TOKENS["failover"] and weights is None:
                weights = outs.get("plan")
    return address, dict(services) if isinstance(services, Mapping) else {}, weights


def print_weights(weights: Any) -> None:
    answers = find(weights, "answers") if isinstance(weights, Mapping) else None
    if not isinstance(answers, Mapping):
        print(f"  {json.dumps(weights)}")
        return
    for name, answer in answers.items():
        regions = ", ".join(answer.get("regions") or []) or "everyone else"
        shares = "  ".join(f"{cloud} {w:>3}" for cloud, w in sorted(answer.get("weights", {}).items()))
        print(f"  {name:<16} {shares}    ({regions})")


def sample(env_layout: LocalEnv, n: int, name: str | None = None) -> collections.Counter[str]:
    """Ask PowerDNS n times for the record (or `name`); count answers by cloud."""
    import dns.message
    import dns.query
    import dns.rdatatype

    layout = env_layout.layout
    cloud_of = {ip: cloud for cloud, ip in layout.endpoint_ips.items()}
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        query = dns.message.make_query(name or layout.record_name, dns.rdatatype.A)
        reply = dns.query.udp(query, "127.0.0.1", port=layout.pdns_dns_port, timeout=2)
        ips = [item.address for rrset in reply.answer for item in rrset if rrset.rdtype == dns.rdatatype.A]
        for ip in ips or ["(no answer)"]:
            counts[cloud_of.get(ip, ip)] += 1
    return counts


def other_records(outputs: Mapping[str, Any], primary: str) -> dict[str, Any]:
    """The names besides the primary (`dns.records`), each with its plan (`dnsRecordWeights`)."""
    plans = outputs.get("dnsRecordWeights") or {}
    return {name: plan for name, plan in sorted(plans.items()) if name != primary}


def print_sample(counts: collections.Counter[str], n: int) -> None:
    for cloud in sorted(counts):
        bar = "#" * round(40 * counts[cloud] / n)
        print(f"  {cloud:<12} {counts[cloud]:>4}/{n}  {bar}")


def describe_event(event: Mapping[str, Any]) -> str:
    """One controller event as a short line (the controller prints JSON lines)."""
    kind = event.get("event")
    if kind == "transition":
        return f"{event.get('target')} is now {event.get('to')} ({event.get('detail', '')})"
    if kind == "plan":
        default = (event.get("weights") or {}).get("default")
        record = f" for {event['record']}" if event.get("record") else ""
        return f"new plan{record}, default answer {default}" + (" (fail-open)" if event.get("fail_open") else "")
    if kind == "applied":
        return f"applied to {event.get('backend')}"
    if kind == "notify":
        return f"notified {event.get('channels') or 'no channel configured'}: {event.get('summary')}"
    if kind in ("stop", None):
        return ""
    return json.dumps({k: v for k, v in event.items() if k != "ts"})[:200]


def controller_once(layout_env: LocalEnv, state_file: Path, ingress: Mapping[str, str]) -> None:
    """One reconcile of the failover controller (same planner and backends as `pulumi up`), at
    the clouds' deployed ingress addresses (the aws one a hostname, resolved by the local PowerDNS)."""
    env = dict(os.environ)
    env["EDGEFABRIC_SECRET_POWERDNSAPIKEY"] = layout_env.layout.pdns_api_key
    env.update(layout_env.program_env())
    env.update({f"EDGEFABRIC_ENDPOINT_{cloud.upper()}": address for cloud, address in ingress.items()})
    proc = subprocess.run(
        [PYTHON, "-m", "edgefabric.controller.daemon", "--stack", STACK, "--once", "--state-file", str(state_file)],
        cwd=REPO, env=env, text=True, capture_output=True, timeout=300,
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        text = describe_event(event)
        if text:
            print(f"  controller: {text}")
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"demo: the failover controller failed (exit {proc.returncode})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="DNS answers to sample (default 200)")
    parser.add_argument("--skip-up", action="store_true", help="use the deployed stack as it is")
    args = parser.parse_args(argv)
    started = time.monotonic()

    say("1/6  local clusters (aws, azure, gcp, edge), anvil, PowerDNS, cloud endpoints (scripts/local-env up)")
    subprocess.run([PYTHON, "-m", "devenv.cli", "up"], cwd=REPO, check=True)
    local = LocalEnv.load(DEFAULT_DIR, DEFAULT_STACK_FILE)

    if "encryptionsalt:" not in DEFAULT_STACK_FILE.read_text():
        # Without it, `pulumi stack init` would rewrite the committed stack file.
        raise SystemExit(
            f"demo: {DEFAULT_STACK_FILE.name} has no `encryptionsalt`: the local stack must ship its secrets "
            f"(deployerKey, powerdnsApiKey) encrypted with the passphrase {LOCAL_PASSPHRASE!r}"
        )
    env = engine_env(local)
    say(f"2/6  pulumi up --stack {STACK}  (file backend {env['PULUMI_BACKEND_URL']})")
    ensure_k8s_provider(env)
    pulumi(env, "stack", "select", STACK, "--create")
    if not args.skip_up:
        forget_state_of_purged_env(env, local)
        pulumi(env, "up", "--yes", "--stack", STACK, "--skip-preview", capture=False)

    say("3/6  what was deployed")
    print_clusters(local)
    outputs = json.loads(pulumi(env, "stack", "output", "--json", "--stack", STACK).stdout or "{}")
    ingress = outputs.get("ingress") or {}
    for cloud, where in sorted(ingress.items()):
        print(f"  {cloud:<6} ingress {where}  (/health at {local.layout.endpoint_ips.get(cloud)}:{local.layout.endpoint_port})")
    address, services, weights = summary(env)
    print(f"  ServiceRegistry contract   {address or '(none: registry disabled?)'}  on {local.layout.rpc_url}")
    print("  registered services")
    for name, sid in sorted(services.items()):
        print(f"    {name:<28} {sid}")
    print(f"  DNS weights for {local.layout.record_name}")
    print_weights(weights)
    print(f"  {args.samples} answers from PowerDNS (127.0.0.1:{local.layout.pdns_dns_port}), by cloud")
    print_sample(sample(local, args.samples), args.samples)
    # dns.records: more names, each following its own service's strategy.
    others = other_records(outputs, local.layout.record_name)
    for name, plan in others.items():
        print(f"  DNS weights for {name} (its own strategy)")
        print_weights(plan)
        print(f"  {args.samples} answers for {name}, by cloud")
        print_sample(sample(local, args.samples, name), args.samples)

    say("4/6  failover, for real: aws's /health starts answering 503")
    print(f"  {local.set_health('aws', healthy=False)}")
    with tempfile.TemporaryDirectory(prefix="edgefabric-demo-") as tmp:
        state_file = Path(tmp) / "controller-state.json"
        controller_once(local, state_file, ingress)
        print(f"  {args.samples} answers after the failover")
        print_sample(sample(local, args.samples), args.samples)
        for name in others:
            print(f"  {args.samples} answers for {name} after the failover")
            print_sample(sample(local, args.samples, name), args.samples)

        say("     heal aws: it must answer 200 for the whole recovery hold-down before it gets traffic back")
        print(f"  {local.set_health('aws', healthy=True)}")
        controller_once(local, state_file, ingress)  # starts aws's success streak
        hold = local_hold_down_s()
        print(f"  waiting out the recovery hold-down ({hold:g} s, healthCheck.recoveryHoldDownS)")
        time.sleep(hold)
        controller_once(local, state_file, ingress)
        print(f"  {args.samples} answers after the recovery")
        print_sample(sample(local, args.samples), args.samples)

    say("5/6  data flows: one reading published at an edge site, arriving at the core (MQTT, TLS bridges)")
    print(f"  {data_flow_reading()}")

    say(f"6/6  done in {time.monotonic() - started:.0f} s. What to try next")
    print(
        "  . scripts/engine-env.sh && export PULUMI_CONFIG_PASSPHRASE=edgefabric-local\n"
        '  eval "$(scripts/local-env env)"           the kubeconfigs and the resolver, for pulumi\n'
        "  scripts/local-env status                  what runs where: clusters, nodes, kubeconfigs\n"
        "  scripts/local-env fail gcp && pulumi preview --stack local   a health change is a weight change\n"
        "  keep failover running between deploys (config: secrets come from EDGEFABRIC_SECRET_<KEY>):\n"
        f"    EDGEFABRIC_SECRET_POWERDNSAPIKEY={local.layout.pdns_api_key} venv/bin/python -m edgefabric.controller.daemon"
        f" --stack local {' '.join(f'--endpoint {c}={a}' for c, a in sorted(ingress.items()))}\n"
        f"  kubectl --kubeconfig {local.kubeconfig_path('aws')} get pods -A   any cluster, with any kubectl\n"
        f"  dig @127.0.0.1 -p {local.layout.pdns_dns_port} {local.layout.record_name} A\n"
        "  pulumi destroy --stack local --yes && scripts/local-env down   clean up\n"
        "  venv/bin/python -m devenv.mosquitto        the data flows again: edge -> region -> core\n"
        "  make test                                  the whole ladder, engine tests included"
    )
    return 0


def data_flow_reading() -> str:
    """The first site of the local stack's `dataFlows`: one reading through its chain of
    brokers (edge -> its region -> the core of the region's cloud), as the core received it."""
    from devenv.mosquitto import demo
    from edgefabric.config import load_stack_file

    cfg = load_stack_file(DEFAULT_STACK_FILE)
    if cfg.data_flows is None or not cfg.data_flows.enabled or not cfg.data_flows.sites:
        return f"(no dataFlows in {DEFAULT_STACK_FILE.name}: nothing to show)"
    site, region = sorted(cfg.data_flows.sites.items())[0]
    cloud = next(r.cloud for r in cfg.regions if r.name == region)
    with tempfile.TemporaryDirectory(prefix="edgefabric-mqtt-") as tmp:
        return demo(Path(tmp), site, region, cloud, flows=cfg.data_flows)


def local_hold_down_s() -> float:
    import yaml

    cfg = yaml.safe_load(DEFAULT_STACK_FILE.read_text())["config"]
    return float((cfg.get("edgefabric:healthCheck") or {}).get("recoveryHoldDownS", 10))


if __name__ == "__main__":
    raise SystemExit(main())
