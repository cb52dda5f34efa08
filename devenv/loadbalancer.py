"""A LoadBalancer controller for the local clusters: answers Services of type LoadBalancer the
way each cloud's own controller does, by writing `status.loadBalancer.ingress`:

- aws:   a hostname only, shaped like an NLB's
         (`k8s-<namespace>-<name>-<hash>-<hash>.elb.<region>.amazonaws.com`); it resolves only where
         the controller is given a local PowerDNS (`HostnameRecords`): it then publishes an A record
         for each name, pointing at one loopback address, before the Service reports it;
- azure: an IP from the cluster's pool (default 127.0.2.0/24);
- gcp:   an IP from the cluster's pool (default 127.0.3.0/24);
- generic: an IP from 127.0.4.0/24.

Pools are loopback only. An IP stays with its Service across controller restarts (it is read back
from the Service's status); a Service with `spec.loadBalancerClass` set is left alone, as the
clouds' default controllers do; a Service that stops being a LoadBalancer loses its ingress.

Run it as a thread (`LoadBalancerController(api, scheme).start_thread()`) or as a process, which
is how devenv/kubernetes.py runs it next to a cluster (scripts/local-env runs one process for all
its clusters: `--clusters FILE`, a JSON list of each cluster's arguments):

    python -m devenv.loadbalancer --server https://127.0.0.1:6443 --ca ca.crt --cert c.crt --key c.key \\
        --cluster aws --flavor aws --region us-east-1 \\
        [--dns-api http://127.0.0.1:18081 --dns-address 127.0.1.1]   # key: $EDGEFABRIC_LB_DNS_API_KEY

Engine-free: never import pulumi here.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from devenv.kubeapi import KubeApi, KubernetesError

FLAVORS = ("aws", "azure", "gcp", "generic")
DEFAULT_POOLS: dict[str, str] = {"azure": "127.0.2.0/24", "gcp": "127.0.3.0/24", "generic": "127.0.4.0/24"}
DEFAULT_REGIONS: dict[str, str] = {
    "aws": "us-east-1",
    "azure": "westeurope",
    "gcp": "europe-west1",
    "generic": "local",
}
LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")

# The PowerDNS API key for `--dns-api` comes from the environment, never from the command line.
DNS_API_KEY_ENV = "EDGEFABRIC_LB_DNS_API_KEY"

log = logging.getLogger("devenv.loadbalancer")


class PoolExhausted(RuntimeError):
    pass


# ------------------------------------------------------------------------- the scheme (pure)


@dataclass(frozen=True)
class LoadBalancerScheme:
    """How one cluster's LoadBalancer Services are answered: by hostname (aws) or from an IP pool."""

    cluster: str
    flavor: str
    region: str
    pool: ipaddress.IPv4Network | None  # None: hostnames

    @property
    def uses_hostname(self) -> bool:
        return self.pool is None


def scheme_for(flavor: str, cluster: str, region: str = "", pool: str | None = None) -> LoadBalancerScheme:
    """The scheme of a cluster of `flavor`. Raises ValueError for an unknown flavor or a pool that
    is not a loopback network (nothing may ever point outside this machine)."""
    if flavor not in FLAVORS:
        raise ValueError(f"flavor {flavor!r} is unknown; allowed: {', '.join(FLAVORS)}")
    region = region or DEFAULT_REGIONS[flavor]
    if flavor == "aws":
        if pool:
            raise ValueError("aws load balancers answer with a hostname, not an IP pool")
        return LoadBalancerScheme(cluster, flavor, region, None)
    net = ipaddress.ip_network(pool or DEFAULT_POOLS[flavor], strict=True)
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(LOOPBACK_NET):
        raise ValueError(f"load balancer pool {net} is not inside 127.0.0.0/8")
    if net.num_addresses < 4:
        raise ValueError(f"load balancer pool {net} is too small")
    return LoadBalancerScheme(cluster, flavor, region, net)


def _slug(text: str, n: int) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())[:n]


def aws_hostname(cluster: str, namespace: str, name: str, uid: str, region: str) -> str:
    """An NLB-shaped DNS name, as the AWS Load Balancer Controller makes them: the load balancer's
    name (k8s-<ns:8>-<name:8>-<hash:10>, at most AWS's 32 characters) plus a 16-hex suffix, in the
    region's elb domain. A recreated Service (new uid) gets a new name, as on AWS."""
    digest = hashlib.sha256(f"{cluster}/{namespace}/{name}/{uid}".encode()).hexdigest()
    lb_name = f"k8s-{_slug(namespace, 8)}-{_slug(name, 8)}-{digest[:10]}"
    return f"{lb_name}-{digest[10:26]}.elb.{region}.amazonaws.com"


def pick_ip(pool: ipaddress.IPv4Network, taken: Iterable[str]) -> str:
    """The lowest host address of `pool` not in `taken`."""
    used = set(taken)
    for host in pool.hosts():
        if str(host) not in used:
            return str(host)
    raise PoolExhausted(f"load balancer pool {pool} is exhausted ({len(used)} addresses in use)")


def desired_ingress(scheme: LoadBalancerScheme, namespace: str, name: str, uid: str,
                    current: list[Mapping[str, Any]], taken: Iterable[str]) -> list[dict[str, str]]:  # fmt: skip
    """The `status.loadBalancer.ingress` a Service should have.

    current: what it has now (an IP from the pool is kept, so addresses survive restarts);
    taken: the pool addresses other Services hold.
    """
    if scheme.pool is None:
        return [{"hostname": aws_hostname(scheme.cluster, namespace, name, uid, scheme.region)}]
    others = set(taken)
    for entry in current:
        ip = entry.get("ip")
        if ip and ip not in others and _in_pool(scheme.pool, ip):
            return [{"ip": ip, "ipMode": "VIP"}]
    return [{"ip": pick_ip(scheme.pool, others), "ipMode": "VIP"}]


def _in_pool(pool: ipaddress.IPv4Network, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in pool
    except ValueError:
        return False


# ------------------------------------------------------------------------ hostnames in DNS


def hostname_zone(region: str) -> str:
    """The zone an aws cluster's load-balancer hostnames live in: `elb.<region>.amazonaws.com.`."""
    return f"elb.{region}.amazonaws.com."


@dataclass(frozen=True)
class HostnameRecords:
    """Makes aws load-balancer hostnames resolve: an A record per name in a local PowerDNS
    (the zone `hostname_zone(region)` must exist there), all pointing at `address`."""

    api_url: str
    api_key: str
    zone: str
    address: str
    ttl: int = 5

    def _patch(self, rrset: dict[str, Any]) -> None:
        url = f"{self.api_url.rstrip('/')}/api/v1/servers/localhost/zones/{self.zone}"
        with requests.Session() as session:
            session.trust_env = False  # loopback only, never a proxy
            resp = session.patch(url, json={"rrsets": [rrset]}, headers={"X-API-Key": self.api_key}, timeout=5)
        if resp.status_code not in (200, 204):
            raise KubernetesError(f"PowerDNS {url}: HTTP {resp.status_code}: {resp.text[:300]}")

    def publish(self, hostname: str) -> None:
        self._patch({"name": hostname.rstrip(".") + ".", "type": "A", "ttl": self.ttl, "changetype": "REPLACE",
                     "records": [{"content": self.address, "disabled": False}]})

    def withdraw(self, hostname: str) -> None:
        self._patch({"name": hostname.rstrip(".") + ".", "type": "A", "changetype": "DELETE"})


# ------------------------------------------------------------------------------ the controller


def _key(svc: Mapping[str, Any]) -> str:
    return f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"


def _ours(svc: Mapping[str, Any]) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def _ingress(svc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])


class LoadBalancerController:
    """List, then watch, Services; write each LoadBalancer Service's ingress. Re-lists on any
    watch error (410 Gone, a restarted apiserver) after a short pause."""

    def __init__(self, api: KubeApi, scheme: LoadBalancerScheme, watch_timeout_s: int = 60,
                 records: HostnameRecords | None = None) -> None:  # fmt: skip
        self.api = api
        self.scheme = scheme
        self.watch_timeout_s = watch_timeout_s
        self.records = records if scheme.uses_hostname else None
        self.assigned: dict[str, str] = {}  # namespace/name -> pool IP
        self.published: set[str] = set()  # hostnames with an A record
        self._stop = threading.Event()
        self._resp: requests.Response | None = None
        self._thread: threading.Thread | None = None

    # ---- one Service
    def sync(self, svc: Mapping[str, Any]) -> bool:
        """Bring one Service's ingress to what it should be; True if it was patched."""
        key, meta = _key(svc), svc["metadata"]
        current = _ingress(svc)
        if not _ours(svc):
            self.assigned.pop(key, None)
            if current and (svc.get("spec") or {}).get("type") != "LoadBalancer":
                self._withdraw(current)
                self._patch(meta["namespace"], meta["name"], None)
                return True
            return False
        taken = [ip for k, ip in self.assigned.items() if k != key]
        want = desired_ingress(
            self.scheme, meta["namespace"], meta["name"], meta.get("uid", ""), current, taken
        )
        if want and "ip" in want[0]:
            self.assigned[key] = want[0]["ip"]
        hostname = want[0].get("hostname") if want else None
        if self.records is not None and hostname and hostname not in self.published:
            # Before the Service reports the name: whoever reads it can resolve it at once.
            try:
                self.records.publish(hostname)
                self.published.add(hostname)
            except (KubernetesError, requests.RequestException) as exc:
                log.error("%s: A record for %s: %s (retried at the next re-list)", key, hostname, exc)
        if [dict(e) for e in current] == want:
            return False
        self._patch(meta["namespace"], meta["name"], want)
        log.info("%s: ingress %s", key, want[0].get("hostname") or want[0].get("ip"))
        return True

    def forget(self, svc: Mapping[str, Any]) -> None:
        self.assigned.pop(_key(svc), None)
        self._withdraw(_ingress(svc))

    def _withdraw(self, ingress: list[Mapping[str, Any]]) -> None:
        """A deleted load balancer's name stops resolving, as on AWS."""
        if self.records is None:
            return
        for entry in ingress:
            hostname = entry.get("hostname")
            if hostname:
                try:
                    self.records.withdraw(hostname)
                except (KubernetesError, requests.RequestException) as exc:
                    log.error("A record for %s: %s", hostname, exc)
                self.published.discard(hostname)

    def _patch(self, namespace: str, name: str, ingress: list[dict[str, str]] | None) -> None:
        body = {"status": {"loadBalancer": {"ingress": ingress}}}
        self.api.merge_patch(f"/api/v1/namespaces/{namespace}/services/{name}/status", body)

    # ---- list + watch
    def resync(self) -> str:
        """Sync every Service; returns the list's resourceVersion (where the watch starts)."""
        listed = self.api.get("/api/v1/services")
        items = sorted(listed.get("items", []), key=lambda s: s["metadata"].get("creationTimestamp", ""))
        # IPs already handed out stay where they are: claim them before anything new is picked.
        self.assigned = {}
        self.published = set()  # (re)publish every name: the DNS data may be newer or gone
        for svc in items:
            if _ours(svc) and self.scheme.pool is not None:
                for entry in _ingress(svc):
                    ip = entry.get("ip")
                    if ip and _in_pool(self.scheme.pool, ip) and ip not in self.assigned.values():
                        self.assigned[_key(svc)] = ip
                        break
        for svc in items:
            self._sync_logged(svc)
        return str(listed["metadata"]["resourceVersion"])

    def _sync_logged(self, svc: Mapping[str, Any]) -> None:
        try:
            self.sync(svc)
        except (KubernetesError, PoolExhausted) as exc:  # one bad Service must not stop the rest
            log.error("%s: %s", _key(svc), exc)

    def _watch(self, resource_version: str) -> str | None:
        """Follow the watch until it ends; the last resourceVersion seen, None to re-list."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_timeout_s),
        }
        with self.api.session.get(
            f"{self.api.server}/api/v1/services", params=params, stream=True,
            timeout=(5, self.watch_timeout_s + 15),
        ) as resp:  # fmt: skip
            self._resp = resp
            if resp.status_code == 410:
                return None
            if resp.status_code != 200:
                raise KubernetesError(f"watch services: HTTP {resp.status_code}: {resp.text[:300]}")
            buf = b""
            # chunk_size=None: hand over what arrived, so an event is not held back for more bytes.
            for chunk in resp.iter_content(chunk_size=None):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            return None
                        raise KubernetesError(f"watch services: {obj.get('message')}")
                    resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                    if event["type"] == "DELETED":
                        self.forget(obj)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._sync_logged(obj)
                if self._stop.is_set():
                    return resource_version
        return resource_version

    def run(self) -> None:
        """Until stop(): list, watch, and again after errors."""
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self.resync()
                rv = self._watch(rv)
            except (KubernetesError, requests.RequestException, ValueError) as exc:
                if self._stop.is_set():
                    break
                log.warning("services watch interrupted (%s); re-listing in 1 s", exc)
                rv = None
                self._stop.wait(1.0)
            finally:
                self._resp = None

    def start_thread(self) -> threading.Thread:
        self._thread = threading.Thread(
            target=self.run, name=f"loadbalancer-{self.scheme.cluster}", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            # Closing a socket does not wake a thread blocked reading it; shutting it down does.
            # Either may raise anything on a stream that is being read.
            sock = getattr(getattr(resp.raw, "_connection", None), "sock", None)
            with contextlib.suppress(Exception):
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                resp.close()
        if self._thread is not None:
            self._thread.join(timeout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.loadbalancer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--server", required=True, help="https://127.0.0.1:<port>")
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--flavor", choices=FLAVORS, required=True)
    parser.add_argument("--region", default="")
    parser.add_argument("--pool", default=None, help="loopback CIDR for IPs (azure/gcp/generic)")
    parser.add_argument("--dns-api", default=None,
                        help=f"aws: a PowerDNS API (http://127.0.0.1:<port>) to publish each hostname in, "
                             f"its key in ${DNS_API_KEY_ENV}")
    parser.add_argument("--dns-address", default=None, help="aws: the loopback address the hostnames resolve to")
    return parser


def controller_from_args(argv: list[str]) -> LoadBalancerController:
    """One cluster's controller from its arguments (see `_parser`); exits with usage on bad ones."""
    parser = _parser()
    args = parser.parse_args(argv)
    scheme = scheme_for(args.flavor, args.cluster, args.region, args.pool)
    records = None
    if args.dns_api:
        if not args.dns_address:
            parser.error("--dns-api needs --dns-address")
        address = ipaddress.ip_address(args.dns_address)
        if address not in LOOPBACK_NET:
            parser.error(f"--dns-address {address} is not inside {LOOPBACK_NET}")
        records = HostnameRecords(args.dns_api, os.environ.get(DNS_API_KEY_ENV, ""),
                                  hostname_zone(scheme.region), str(address))
    return LoadBalancerController(KubeApi(args.server, args.ca, args.cert, args.key), scheme, records=records)


def main(argv: list[str] | None = None) -> int:
    """One cluster (its arguments), or several: `--clusters FILE`, a JSON list of each cluster's
    argument list. scripts/local-env runs one process for all its clusters: a Python process
    costs ~40 MiB resident, a controller thread next to nothing."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--clusters"] and len(argv) == 2:
        controllers = [controller_from_args(list(a)) for a in json.loads(Path(argv[1]).read_text())]
    else:
        controllers = [controller_from_args(argv)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def on_term(*_: object) -> None:
        for c in controllers:
            c.stop(timeout=0)
        sys.exit(0)  # the watch threads are daemons: they end with the process

    signal.signal(signal.SIGTERM, on_term)
    for controller in controllers:
        scheme = controller.scheme
        log.info("cluster %s (%s): answering LoadBalancer services with %s", scheme.cluster, scheme.flavor,
                 f"hostnames in {scheme.region}" if scheme.pool is None else f"IPs from {scheme.pool}")  # fmt: skip
        controller.start_thread()
    while any(c._thread is not None and c._thread.is_alive() for c in controllers):
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
