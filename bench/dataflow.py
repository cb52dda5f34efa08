"""Data-flow benchmark: real mosquitto brokers on loopback, edge → region → core over TLS
bridges, each running exactly the configs `edgefabric.dataflow` generates.

    venv/bin/python bench/dataflow.py [--json] [--messages 10000] [--rate 5000] [--outage-s 10] [--rounds 3]

Figures
- edge_to_core_p50_ms / edge_to_core_p99_ms: from a QoS 1 publish at the edge broker until the
  message arrives at a subscriber of the core broker, two bridges away; --messages messages
  paced at --rate per second (the throughput target), so the figure is latency under that
  load and not the queueing delay of a burst. Target p99 <= 50 ms.
- msgs_per_s: --messages messages published as fast as the edge broker acknowledges them
  (QoS 1, 100 in flight), divided by the time from the first publish to the last arrival at
  the core. Target >= 5,000.
- lost_after_outage: the regional broker is stopped for --outage-s seconds while the edge
  publishes 1,000 QoS 1 messages; ids missing at the core after its restart. Target 0.
- Every figure but lost_after_outage is the median over --rounds rounds.
- baseline: the same two runs through one broker (publish and subscribe at the core broker,
  same TLS, same client), in the same process; the ratios are bridged / direct.

The latency and rate runs use mosquitto_pub / mosquitto_sub (C clients) fed and read by this
process; the outage run uses paho-mqtt. Wall-clock send and arrival times, one machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from devenv.mosquitto import LocalFabric, connect, subscribe
from edgefabric.config import DataFlowsConfig

SITE, REGION, CLOUD = "factory-berlin", "eu-west", "aws"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _tls_args(fabric: LocalFabric, identity: str, broker_key: str) -> list[str]:
    ca, cert, key = fabric.client_tls(identity)
    return ["-h", "127.0.0.1", "-p", str(fabric.broker(broker_key).port), "--cafile", ca,
            "--cert", cert, "--key", key, "-q", "1"]


def run_flow(fabric: LocalFabric, publish_at: str, identity: str, count: int, rate: float | None,
             topic: str) -> dict[str, float]:
    """`count` QoS 1 messages published at `publish_at` on `topic`, received at the core.

    The clients are mosquitto's own (C): `mosquitto_pub -l` publishes each line written to it,
    and `mosquitto_sub` prints each arrival with its wall-clock time. Python only writes
    "id send-time" lines and reads arrivals, so the figures measure the brokers, not a
    Python client contending for the GIL with itself.
    """
    core = f"core-{CLOUD}"
    sub = subprocess.Popen(["mosquitto_sub", *_tls_args(fabric, core, core), "-t", topic, "-F", "%U %p",
                            "-C", str(count + 1), "-W", "120"], stdout=subprocess.PIPE, text=True)
    arrivals: list[tuple[float, str]] = []

    def read() -> None:
        assert sub.stdout is not None
        for line in sub.stdout:
            stamp, _, payload = line.strip().partition(" ")
            arrivals.append((float(stamp), payload))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)  # subscribed (mosquitto_sub has no "ready" signal; the broker is local)
    pub = subprocess.Popen(["mosquitto_pub", *_tls_args(fabric, identity, publish_at), "-t", topic, "-l"],
                           stdin=subprocess.PIPE, text=True)
    assert pub.stdin is not None
    # One message first, waited for: the clock starts once both clients are connected and the
    # bridges carry traffic, not while TLS handshakes are still going on.
    pub.stdin.write(f"-1 {time.time():.6f}\n")
    pub.stdin.flush()
    deadline = time.monotonic() + 30
    while not arrivals and time.monotonic() < deadline:
        time.sleep(0.005)
    arrivals.clear()
    start = time.time()
    for i in range(count):
        if rate:
            # Open-loop pacing: message i leaves at start + i / rate, late or not.
            delay = start + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        pub.stdin.write(f"{i} {time.time():.6f}\n")
        if rate:
            pub.stdin.flush()
    pub.stdin.close()
    pub.wait(120)
    reader.join(125)
    sub.wait(5)
    sent = {}
    for _, payload in arrivals:
        ident, _, stamp = payload.partition(" ")
        sent[int(ident)] = float(stamp)
    latencies = [(arrived - float(payload.partition(" ")[2])) * 1000 for arrived, payload in arrivals]
    last = max((a for a, _ in arrivals), default=start)
    return {"p50_ms": statistics.median(latencies), "p99_ms": _quantile(latencies, 0.99),
            "msgs_per_s": len(sent) / (last - start), "lost": count - len(sent)}


def run_outage(fabric: LocalFabric, outage_s: float, count: int = 1000) -> int:
    """Ids of `count` QoS 1 messages missing at the core after a regional outage."""
    core = subscribe(fabric, f"core-{CLOUD}", f"core-{CLOUD}", f"telemetry/{SITE}/outage/#",
                     client_id="bench-outage", clean=False)
    site = connect(fabric, f"site-{SITE}", f"edge-{SITE}")
    region = fabric.broker(f"region-{REGION}")
    try:
        region.stop()
        stopped = time.monotonic()
        infos = [site.publish(f"telemetry/{SITE}/outage/m", str(i).encode(), qos=1) for i in range(count)]
        for info in infos:
            info.wait_for_publish(30)
        time.sleep(max(0.0, outage_s - (time.monotonic() - stopped)))
        region.start()
        received = core.wait_for(count, 60)
    finally:
        site.disconnect()
        core.close()
    return count - len({int(m.payload) for m in received})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=5_000, help="paced rate of the latency run, msg/s")
    parser.add_argument("--outage-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="figures are medians over the rounds")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dataflow-bench-") as tmp:
        fabric = LocalFabric.create(Path(tmp), DataFlowsConfig(sites={SITE: REGION}), {REGION: CLOUD})
        fabric.start()
        try:
            time.sleep(0.5)  # bridges connect
            core_key = f"core-{CLOUD}"
            edge, site = f"edge-{SITE}", f"site-{SITE}"
            rounds: list[dict[str, dict[str, float]]] = []
            for r in range(args.rounds):
                # The baseline publishes where the core's own identity may write (a down root).
                rounds.append({
                    "paced": run_flow(fabric, edge, site, args.messages, args.rate, f"telemetry/{SITE}/paced/{r}"),
                    "base_paced": run_flow(fabric, core_key, core_key, args.messages, args.rate, f"config/paced/{r}"),
                    "burst": run_flow(fabric, edge, site, args.messages, None, f"telemetry/{SITE}/burst/{r}"),
                    "base_burst": run_flow(fabric, core_key, core_key, args.messages, None, f"config/burst/{r}"),
                })
            lost = run_outage(fabric, args.outage_s)
        finally:
            fabric.stop()

    def med(run: str, figure: str) -> float:
        return statistics.median(r[run][figure] for r in rounds)

    figures: dict[str, Any] = {
        "edge_to_core_p50_ms": round(med("paced", "p50_ms"), 2),
        "edge_to_core_p99_ms": round(med("paced", "p99_ms"), 2),
        "msgs_per_s": round(med("burst", "msgs_per_s")),
        "lost_after_outage": lost,
        "lost_in_runs": int(sum(r[k]["lost"] for r in rounds for k in r)),
        "baseline_direct_p50_ms": round(med("base_paced", "p50_ms"), 2),
        "baseline_direct_p99_ms": round(med("base_paced", "p99_ms"), 2),
        "baseline_direct_msgs_per_s": round(med("base_burst", "msgs_per_s")),
        "p50_ratio_vs_direct": round(med("paced", "p50_ms") / med("base_paced", "p50_ms"), 2),
        "p99_ratio_vs_direct": round(med("paced", "p99_ms") / med("base_paced", "p99_ms"), 2),
        "msgs_per_s_ratio_vs_direct": round(med("burst", "msgs_per_s") / med("base_burst", "msgs_per_s"), 2),
        "messages": args.messages, "paced_rate": args.rate, "rounds": args.rounds, "outage_s": args.outage_s,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:32} {value}")
    ok = (figures["edge_to_core_p99_ms"] <= 50 and figures["msgs_per_s"] >= 5000
          and lost == 0 and figures["lost_in_runs"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
