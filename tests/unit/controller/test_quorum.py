"""QuorumLease's arithmetic, over members that answer as a cluster's Lease would (held, held by
another, or unreachable); the real Lease objects are in tests/integration/controller/test_quorum_lease.py."""

from __future__ import annotations

from typing import Any

import pytest

from edgefabric.errors import ConfigError
from edgefabric.traffic.lease import LeaseStatus, LeaseUnavailable, QuorumLease, lease_cluster_args


class Member:
    """One cluster's lease: `answer` is what the next acquire finds ("us", another holder, or an error)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.duration_s = 10.0
        self.released = 0
        self.held = False

    def acquire(self) -> LeaseStatus:
        if isinstance(self.answer, Exception):
            raise self.answer
        self.held = self.answer == "us"
        return LeaseStatus(self.held, "us" if self.held else self.answer, 100.0 if self.held else 50.0)

    def may_write(self) -> bool:
        return self.held

    def release(self) -> None:
        self.released += 1
        self.held = False


def quorum(*answers: Any) -> tuple[QuorumLease, dict[str, Member]]:
    members = {f"c{i}": Member(a) for i, a in enumerate(answers)}
    return QuorumLease(members, "us", 10), members  # type: ignore[arg-type]


def test_a_majority_leads_a_minority_gives_its_share_back() -> None:
    q, m = quorum("us", "us", "them")
    st = q.acquire()
    assert st.held and st.acquired and q.may_write() and q.majority == 2
    assert q.acquire().acquired is False  # the same term
    m["c1"].answer = "them"
    st = q.acquire()
    assert not st.held and st.holder == "them" and not q.may_write()
    assert m["c0"].released == 1 and not m["c0"].held  # so "them" can take it at once


def test_a_lost_cluster_does_not_stop_the_majority_two_do() -> None:
    q, m = quorum("us", "us", ConnectionRefusedError("c2 is gone"))
    assert q.acquire().held and "c2" in q.member_errors
    m["c1"].answer = TimeoutError("c1 black-holed")
    with pytest.raises(LeaseUnavailable, match="1 of 3 clusters answered, 2 needed"):
        q.acquire()
    assert not q.may_write() and m["c0"].released == 1


def test_one_cluster_is_a_quorum_of_one() -> None:
    q, _ = quorum("us")
    assert q.acquire().held and q.majority == 1


def test_cluster_flags_name_the_flag(tmp_path: Any) -> None:
    kc = tmp_path / "kc"
    kc.write_text("apiVersion: v1\n")
    assert lease_cluster_args([f"aws={kc}", "azure=in-cluster"]) == {"aws": str(kc), "azure": "in-cluster"}
    for bad, why in ((["aws"], "CLUSTER=PATH"), ([f"aws={kc}", f"aws={kc}"], "given twice"),
                     (["aws=/nonexistent/kc"], "a readable kubeconfig")):  # fmt: skip
        with pytest.raises(ConfigError, match=why) as err:
            lease_cluster_args(bad)
        assert "--lease-kubeconfig" in str(err.value)
