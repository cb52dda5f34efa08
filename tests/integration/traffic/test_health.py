"""Hysteresis with a fake clock, and real probes against local HTTP/HTTPS/TCP endpoints
(certificates from a CA made in the test), commands and black holes."""

from __future__ import annotations

import datetime
import selectors
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devenv.endpoints import LocalEndpoints, free_common_port
from edgefabric.errors import ConfigError
from edgefabric.traffic.health import (
    AllOf,
    CustomProbe,
    HealthTracker,
    HttpProbe,
    Probe,
    ProbeResult,
    TcpProbe,
    Thresholds,
    assess,
    probe_many_sync,
)
from edgefabric.traffic.spec import FailoverSpec


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ok(flag: bool) -> dict[str, ProbeResult]:
    return {"aws": ProbeResult(flag, 0.001, "ok" if flag else "fail")}


def feed(tracker: HealthTracker, clock: FakeClock, outcomes: list[bool], step: float = 1.0) -> list[bool]:
    seen = []
    for flag in outcomes:
        clock.advance(step)
        tracker.observe(ok(flag))
        seen.append(tracker.states["aws"].healthy)
    return seen


def test_down_only_after_failure_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(3, 2, 10), clock)
    assert feed(t, clock, [False, False, True, False, False]) == [True] * 5
    transitions = []
    clock.advance(1)
    transitions += t.observe(ok(False))
    assert t.states["aws"].healthy is False
    assert [(x.target, x.to_healthy) for x in transitions] == [("aws", False)]


def test_recovery_needs_success_threshold_and_hold_down() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(failure_threshold=1, success_threshold=2, recovery_hold_down_s=10), clock)
    feed(t, clock, [False])
    assert t.states["aws"].healthy is False
    # Two successes are enough for the threshold but the streak is only 1 s old.
    assert feed(t, clock, [True, True]) == [False, False]
    # Streak age reaches 10 s at the 11th success (streak started at the first one).
    states = feed(t, clock, [True] * 9)
    assert states[-2] is False and states[-1] is True
    assert t.states["aws"].last_transition_at == clock.now


def test_hold_down_restarts_after_any_failure() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(1, 1, 5), clock)
    feed(t, clock, [False])
    feed(t, clock, [True, True, True, True])  # 3 s of streak
    feed(t, clock, [False])  # resets the streak
    assert feed(t, clock, [True] * 5) == [False] * 5
    assert feed(t, clock, [True]) == [True]


def test_success_threshold_larger_than_hold_down() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(1, 4, 0), clock)
    feed(t, clock, [False])
    assert feed(t, clock, [True] * 4) == [False, False, False, True]


def test_flapping_target_never_changes_state() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(3, 2, 5), clock)
    flips = 0
    last = True
    for i in range(60):
        clock.advance(1)
        t.observe(ok(i % 2 == 0))
        flips += t.states["aws"].healthy != last
        last = t.states["aws"].healthy
    assert flips == 0 and last is True


def test_flapping_while_down_never_recovers() -> None:
    clock = FakeClock()
    t = HealthTracker(Thresholds(2, 2, 3), clock)
    feed(t, clock, [False, False])
    assert feed(t, clock, [True, False] * 20) == [False] * 40


def test_evidence_round_trip_keeps_hold_down_across_runs() -> None:
    clock = FakeClock()
    th = Thresholds(1, 1, 10)
    t = HealthTracker(th, clock)
    feed(t, clock, [False, True])
    again = HealthTracker.from_evidence(th, t.evidence(), clock)
    clock.advance(9)  # streak age 9 s
    again.observe(ok(True))
    assert again.states["aws"].healthy is False
    clock.advance(1)
    again.observe(ok(True))
    assert again.states["aws"].healthy is True


def test_invalid_thresholds_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"healthCheck\.failureThreshold"):
        Thresholds(failure_threshold=0)
    with pytest.raises(ConfigError, match=r"healthCheck\.recoveryHoldDownS"):
        Thresholds(recovery_hold_down_s=-1)


# ----------------------------------------------------------- real endpoints


class Blackhole:
    """Accepts connections and never answers; records the peak number held open at once."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        open_conns = 0
        while not self._stop.is_set():
            # Hang-ups before new connections: a client that closes one socket and then opens
            # the next must not look like two at once because both arrived in one batch.
            events = sorted(sel.select(timeout=0.05), key=lambda event: event[0].fileobj is self.sock)
            for key, _ in events:
                if key.fileobj is self.sock:
                    conn, _ = self.sock.accept()
                    sel.register(conn, selectors.EVENT_READ)
                    open_conns += 1
                    self.peak = max(self.peak, open_conns)
                else:
                    conn = key.fileobj  # type: ignore[assignment]
                    if not conn.recv(4096):  # the client gave up (timeout) and closed
                        sel.unregister(conn)
                        conn.close()
                        open_conns -= 1
        sel.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


def test_http_probes_against_real_endpoints(endpoints: LocalEndpoints) -> None:
    probes = {c: HttpProbe(endpoints.health_url(c)) for c in endpoints.clouds()}
    assert all(r.ok for r in probe_many_sync(probes, 1.0).values())
    endpoints.set_healthy("azure", False)
    endpoints.stop("gcp")
    res = probe_many_sync(probes, 1.0)
    assert res["aws"].ok
    assert not res["azure"].ok and "503" in res["azure"].detail
    assert not res["gcp"].ok and "Refused" in res["gcp"].detail


def test_http_expected_status_and_tcp(endpoints: LocalEndpoints) -> None:
    url = endpoints.health_url("aws")
    assert not probe_many_sync({"x": HttpProbe(url, expected_status=204)}, 1.0)["x"].ok
    assert probe_many_sync({"x": TcpProbe(endpoints.address("aws"), endpoints.port)}, 1.0)["x"].ok
    endpoints.stop("aws")
    assert not probe_many_sync({"x": TcpProbe(endpoints.address("aws"), endpoints.port)}, 1.0)["x"].ok


@pytest.mark.parametrize("concurrency", [1, 5, 20])
def test_timeouts_and_concurrency_bound(blackhole: Blackhole, concurrency: int) -> None:
    host, port = blackhole.address
    probes = {f"t{i}": HttpProbe(f"http://{host}:{port}/health") for i in range(2 * concurrency)}
    res = probe_many_sync(probes, 0.3, concurrency=concurrency)
    assert all(not r.ok and "timeout" in r.detail for r in res.values())
    # A hung target costs the whole timeout: to the millisecond, the resolution of the probe
    # loop's (libuv's) timer clock, which may fire a fraction of a millisecond before perf_counter says.
    assert all(r.latency_s >= 0.299 for r in res.values()), sorted(r.latency_s for r in res.values())
    # The black hole saw exactly `concurrency` probes held open at once: bounded, and used fully.
    assert blackhole.peak == concurrency


def test_custom_probe_exit_code_and_timeout() -> None:
    res = probe_many_sync(
        {
            "good": CustomProbe((sys.executable, "-c", "raise SystemExit(0)")),
            "bad": CustomProbe((sys.executable, "-c", "raise SystemExit(3)")),
            "slow": CustomProbe((sys.executable, "-c", "import time; time.sleep(5)")),
        },
        1.0,
    )
    assert res["good"].ok and not res["bad"].ok and res["bad"].detail == "exit 3"
    assert not res["slow"].ok and "timeout" in res["slow"].detail


def test_assess_reaches_a_verdict_in_threshold_rounds(endpoints: LocalEndpoints) -> None:
    endpoints.stop("gcp")
    probes = {c: HttpProbe(endpoints.health_url(c)) for c in endpoints.clouds()}
    sleeps: list[float] = []
    tracker = assess(probes, Thresholds(3, 2, 60), 0.5, round_gap_s=0.25, sleep=sleeps.append)
    assert tracker.healthy() == {"aws": True, "azure": True, "gcp": False}
    assert sleeps == [0.25, 0.25]  # three rounds, and only gcp was re-probed
    # With everything healthy one round is enough.
    endpoints.start("gcp")
    sleeps.clear()
    fresh = assess(probes, Thresholds(3, 2, 60), 0.5, round_gap_s=0.25, sleep=sleeps.append)
    assert all(fresh.healthy().values()) and sleeps == []
    # Continuing from the down evidence, gcp stays down: the hold-down has not passed.
    again = assess(probes, Thresholds(3, 2, 60), 0.5, evidence=tracker.evidence(), sleep=sleeps.append)
    assert again.healthy()["gcp"] is False


# ------------------------------------------------------- https, several checks, custom


RECORD = "api.edgefabric.test."
NAME = RECORD.rstrip(".")


class LocalCa:
    """A CA made in the test (cryptography), and server certificates it issues."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefabric test CA")])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, name: str, *, expired: bool = False) -> tuple[Path, Path]:
        """(certificate, key) files for `name`; `expired` ended yesterday."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = ((now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired
                      else (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7)))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        stem = self.dir / f"{name}{'-expired' if expired else ''}"
        cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))  # fmt: skip
        return cert_path, key_path


@pytest.fixture
def ca(tmp_path: Path) -> LocalCa:
    (tmp_path / "ca").mkdir()
    return LocalCa(tmp_path / "ca")


def https_endpoint(tmp_path: Path, ca: LocalCa, tag: str, name: str = NAME, *,
                   expired: bool = False) -> LocalEndpoints:
    """One https stand-in (the aws one, on 127.0.1.1) serving a certificate for `name`."""
    cert, key = ca.issue(name, expired=expired)
    eps = LocalEndpoints(tmp_path / tag, free_common_port(["127.0.1.1"]), ips={"aws": "127.0.1.1"},
                         tls_cert=cert, tls_key=key)  # fmt: skip
    eps.start_all()
    return eps


@pytest.fixture
def https_good(tmp_path: Path, ca: LocalCa) -> Iterator[LocalEndpoints]:
    eps = https_endpoint(tmp_path, ca, "good")
    yield eps
    eps.stop_all()


def spec_for(eps: LocalEndpoints, *checks: dict[str, Any], timeout_s: float = 1.0) -> FailoverSpec:
    """The failover spec of a stack whose only cloud is `eps`, probing with `checks`."""
    return FailoverSpec.from_inputs({
        "record_name": RECORD, "ttl": 30,
        "endpoints": {c: {"address": eps.address(c)} for c in eps.clouds()},
        "health_check": {"interval_s": 5, "timeout_s": timeout_s, "checks": list(checks)},
        "strategy": {"order": eps.clouds()},
        "backends": {"powerdns": {"api_url": "http://127.0.0.1:1", "api_key_ref": "env:UNUSED", "zone": "edgefabric.test."}},
    })  # fmt: skip


def https_check(eps: LocalEndpoints, **over: Any) -> dict[str, Any]:
    return {"type": "http", "scheme": "https", "port": eps.port, "path": "/health",
            "ca_bundle_ref": "env:EDGEFABRIC_TEST_CA", **over}  # fmt: skip


def test_https_with_a_good_certificate_is_healthy(https_good: LocalEndpoints, ca: LocalCa,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """SNI and Host are the record name while the connection goes to 127.0.1.1: the
    certificate (issued for the name only) verifies against the CA bundle the ref names."""
    monkeypatch.setenv("EDGEFABRIC_TEST_CA", ca.pem)
    res = probe_many_sync(spec_for(https_good, https_check(https_good)).probes(), 1.0)
    assert res["aws"].ok and res["aws"].detail == "status 200", res["aws"].detail
    https_good.set_healthy("aws", False)
    res = probe_many_sync(spec_for(https_good, https_check(https_good)).probes(), 1.0)
    assert not res["aws"].ok and "503" in res["aws"].detail


def test_https_wrong_name_and_unknown_ca_are_unhealthy_and_say_why(https_good: LocalEndpoints, ca: LocalCa,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFABRIC_TEST_CA", ca.pem)
    other = spec_for(https_good, https_check(https_good, host_header="www.edgefabric.test"))
    (res,) = probe_many_sync(other.probes(), 1.0).values()
    assert not res.ok and "hostname mismatch" in res.detail and "www.edgefabric.test" in res.detail, res.detail
    # Without the bundle, the system CAs do not know the test CA.
    system = spec_for(https_good, https_check(https_good, ca_bundle_ref=None))
    (res,) = probe_many_sync(system.probes(), 1.0).values()
    assert not res.ok and "unknown CA" in res.detail, res.detail


def test_https_expired_certificate_is_unhealthy_and_says_so(tmp_path: Path, ca: LocalCa,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFABRIC_TEST_CA", ca.pem)
    eps = https_endpoint(tmp_path, ca, "expired", expired=True)
    try:
        (res,) = probe_many_sync(spec_for(eps, https_check(eps)).probes(), 1.0).values()
    finally:
        eps.stop_all()
    assert not res.ok and "certificate expired" in res.detail, res.detail


def test_a_target_passes_only_when_every_check_passes(endpoints: LocalEndpoints) -> None:
    tcp = {"type": "tcp", "port": endpoints.port}
    http = {"type": "http", "path": "/health", "port": endpoints.port}
    spec = spec_for(endpoints, tcp, http)
    assert all(r.ok for r in probe_many_sync(spec.probes(), 1.0).values())
    endpoints.set_healthy("azure", False)  # tcp still connects, http answers 503
    res = probe_many_sync(spec.probes(), 1.0)
    assert res["aws"].ok and not res["azure"].ok
    assert res["azure"].detail == "healthCheck.checks[1]: status 503 != expected 200", res["azure"].detail


def test_a_black_holed_target_costs_its_timeout_and_no_more(blackhole: Blackhole) -> None:
    """http and https alike (the hole never answers a byte, so TLS never starts); each check
    of a target runs within its own timeout, at the same time as the others."""
    host, port = blackhole.address
    probes: dict[str, Probe] = {
        "http": HttpProbe(f"http://{host}:{port}/health"),
        "https": HttpProbe(f"https://{host}:{port}/health", server_name=NAME),
        "both": AllOf((HttpProbe(f"http://{host}:{port}/a", timeout_s=0.2),
                       HttpProbe(f"https://{host}:{port}/b", server_name=NAME, timeout_s=0.4)), ("a", "b")),
    }
    t0 = time.perf_counter()
    res = probe_many_sync(probes, 0.3)
    elapsed = time.perf_counter() - t0
    for key, want in (("http", 0.3), ("https", 0.3), ("both", 0.4)):
        # The whole timeout, to the millisecond: the probe loop's timers (libuv) have millisecond
        # resolution, and one fired 0.25 ms early by perf_counter in a CI run.
        assert not res[key].ok and want - 0.001 <= res[key].latency_s < want + 0.1, (key, res[key])
    assert res["both"].detail == "a: timeout after 0.2s; b: timeout after 0.4s"
    assert elapsed < 0.4 + 0.25


def test_custom_check_gets_path_only_never_our_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFABRIC_SECRET_POWERDNSAPIKEY", "s3cret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
    script = ("import os, sys; env = set(os.environ) - {'LC_CTYPE'}; "  # LC_CTYPE: Python's own locale coercion
              "sys.exit(0 if env == {'PATH'} and os.environ['PATH'] else 1)")
    res = probe_many_sync({"env": CustomProbe((sys.executable, "-c", script))}, 2.0)
    assert res["env"].ok, res["env"].detail


def test_a_timed_out_custom_check_leaves_nothing_running(tmp_path: Path) -> None:
    """The command's own children die with it: its process group is killed."""
    marker = tmp_path / "survived"
    child = tmp_path / "child.py"
    child.write_text(f"import time\ntime.sleep(0.8)\nopen({str(marker)!r}, 'w').close()\n")
    parent = tmp_path / "parent.py"
    parent.write_text(f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(child)!r}])\n"
                      "time.sleep(5)\n")
    res = probe_many_sync({"slow": CustomProbe((sys.executable, str(parent)))}, 0.4)
    assert not res["slow"].ok and "timeout" in res["slow"].detail, res["slow"].detail
    time.sleep(1.0)
    assert not marker.exists()
