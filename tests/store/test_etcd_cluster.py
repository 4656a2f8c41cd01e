"""A 3-member etcd cluster with a hung member (SIGSTOP) and a dead one.

An LRM-style round of store calls (membership heartbeat, agent lock, manager status,
config, LRM status) runs under the round deadline the daemon loop sets
(``Timings.store_latency``, checked by :mod:`hafence.ha.timings`). With one member hung or
dead, rounds must
still finish inside that deadline, and the membership lease and agent lock must never
be lost (checked from a second client on the healthy members).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from hafence.ha.realenv import node_alive_lease
from hafence.ha.timings import Timings
from hafence.store import StoreUnavailable, open_store
from hafence.store.etcd import EtcdStore
from tests.peers import etcd as peer

pytestmark = pytest.mark.peer("etcd")

# a small real cluster: 2 s rounds and store deadline, membership and watchdog 8 s
T = Timings(interval=2, lease_ttl=30, watchdog_timeout=8, fence_delay=4, node_timeout=8,
            store_deadline=2)  # fmt: skip
T.check()
BUDGET = T.store_latency
AGENT = "ha_agent_node1_lock"
MEMBER = node_alive_lease("node1")


def _cluster() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def lrm_round(s: EtcdStore, n: int) -> float:
    """One LRM round's store calls under the round deadline; its duration."""
    started = time.monotonic()
    s.set_deadline(started + BUDGET)
    s.keep_leases_until(started + T.round_time)
    try:
        assert s.acquire_lease(MEMBER, "node1", T.node_timeout), "membership lost"
        assert s.quorate()
        assert s.acquire_lease(AGENT, "node1", T.lease_ttl), "agent lock lost"
        s.read_manager_status()
        s.read_resources()
        s.ha_options()
        s.write_lrm_status("node1", {"state": "active", "results": {"n": n}, "timestamp": n})
    finally:
        s.set_deadline(None)
    return time.monotonic() - started


def _watch_leases(observer: EtcdStore) -> None:
    assert observer.lease_owner(MEMBER) == "node1"
    assert observer.lease_owner(AGENT) == "node1"


@pytest.fixture
def healthy(etcd3: peer.EtcdCluster) -> Iterator[peer.EtcdCluster]:
    yield etcd3
    for i in list(etcd3.paused):
        etcd3.resume(i)


@pytest.mark.parametrize("who", ["leader", "follower"])
def test_hung_member_rounds_stay_within_the_deadline(healthy: peer.EtcdCluster, who: str) -> None:
    c = healthy
    leader = c.leader()
    hung = leader if who == "leader" else (leader + 1) % 3
    cluster = _cluster()
    # the client knows the hung member first and is stuck to it when it hangs
    order = [hung, *(i for i in range(3) if i != hung)]
    s = open_store(c.url(cluster, order))
    others = [i for i in range(3) if i != hung]
    observer = open_store(c.url(cluster, others))
    assert isinstance(s, EtcdStore) and isinstance(observer, EtcdStore)
    try:
        lrm_round(s, 0)
        assert s.client.order()[0] == c.members[hung].client_url
        c.pause(hung)
        durations, failed = [], []
        for n in range(1, 6):
            try:
                durations.append(lrm_round(s, n))
            except StoreUnavailable as exc:  # a leader election may cost the first round
                failed.append((n, str(exc)))
            _watch_leases(observer)
            time.sleep(max(0.0, T.interval - (durations or [0])[-1]))
        assert all(n == 1 for n, _ in failed), failed
        assert len(durations) >= 4
        # every round ended by its deadline: a call never outlives it (the tries share
        # what is left), so only a round's bookkeeping can lie past it
        assert max(durations) < BUDGET + 0.5, durations
        assert s.client.order()[0] != c.members[hung].client_url  # stuck to a live one now
        assert observer.read_lrm_status("node1")["results"] == {"n": 5}
    finally:
        c.resume(hung) if hung in c.paused else None
        s.close()
        observer.close()


def test_dead_member_is_skipped_without_waiting(tmp_path) -> None:
    if not peer.available():
        pytest.skip("etcd binary not installed")
    with peer.etcd_cluster(tmp_path, 3) as c:
        cluster = _cluster()
        s = open_store(c.url(cluster, [0, 1, 2]))
        observer = open_store(c.url(cluster, [1, 2]))
        assert isinstance(s, EtcdStore) and isinstance(observer, EtcdStore)
        try:
            lrm_round(s, 0)
            c.kill(0)
            durations = []
            for n in range(1, 4):
                try:
                    durations.append(lrm_round(s, n))
                except StoreUnavailable:  # the killed member may have led: one election
                    assert n == 1
                _watch_leases(observer)
            assert len(durations) >= 2
            assert max(durations) < BUDGET + 0.5, durations
        finally:
            s.close()
            observer.close()


def test_calls_after_the_deadline_fail_fast(etcd3: peer.EtcdCluster) -> None:
    s = open_store(etcd3.url(_cluster()))
    try:
        s.set_deadline(time.monotonic() - 0.001)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="deadline passed"):
            s.read_resources()
        assert time.monotonic() - t0 < BUDGET  # no network try was made
        s.set_deadline(None)
        assert s.read_resources() == {}
    finally:
        s.close()


def test_keep_alive_renews_only_while_the_loop_comes_round(etcd3: peer.EtcdCluster) -> None:
    """The background keep-alive holds a lease past its TTL only until the time the loop
    last granted; after that the lease runs out as if there were no thread."""
    cluster = _cluster()
    s = open_store(etcd3.url(cluster))
    observer = open_store(etcd3.url(cluster))
    assert isinstance(s, EtcdStore)
    ttl = 3
    try:
        s.keep_leases_until(time.monotonic() + 3 * ttl)
        assert s.acquire_lease(MEMBER, "node1", ttl)
        time.sleep(2 * ttl)  # twice the TTL without a call from the "loop"
        assert observer.lease_owner(MEMBER) == "node1"
        s.keep_leases_until(time.monotonic())  # the loop is stuck from now on
        deadline = time.monotonic() + 60
        while observer.lease_owner(MEMBER) is not None:
            assert time.monotonic() < deadline, "the keep-alive outlived the loop"
            time.sleep(0.2)
        assert not s.renew_lease(MEMBER, "node1", ttl)  # lost stays lost
    finally:
        s.close()
        observer.close()
