"""Store primitives for the HA core (issue 15): lease incarnations, a manager status write
that only the lease holder can make, and an atomic takeover of a dead node's lease."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hafence.store import Store, open_store
from hafence.store.proc import boot_id


def test_lease_holder_names_the_incarnation(store: Store) -> None:
    assert store.lease_holder("ha_agent_node1_lock") is None
    assert store.acquire_lease("ha_agent_node1_lock", "node1", 60)
    holder = store.lease_holder("ha_agent_node1_lock")
    assert holder is not None and holder["owner"] == "node1"
    assert holder["incarnation"].startswith(f"node1@{boot_id()[:8]}:{os.getpid()}:")
    assert store.lease_owner("ha_agent_node1_lock") == "node1"  # still the node
    assert store.renew_lease("ha_agent_node1_lock", "node1", 60)
    assert store.lease_holder("ha_agent_node1_lock") == holder


def test_deposed_master_cannot_write_the_manager_status(store: Store, spec: str) -> None:
    ms1 = {"master_node": "node1", "service_status": {"vm:100": {"state": "started"}},
           "timestamp": 1}  # fmt: skip
    assert not store.write_manager_status_as("node1", ms1)  # no lock: refused
    assert store.read_manager_status() == {}
    assert store.acquire_lease("ha_manager_lock", "node1", 60)
    assert store.write_manager_status_as("node1", ms1)
    assert store.write_manager_status_as("node1", {**ms1, "timestamp": 2})  # unchanged: ok
    # node1 loses the lock (released here; expired in life) and node2 becomes master
    other = open_store(spec)
    try:
        assert store.release_lease("ha_manager_lock", "node1")
        assert other.acquire_lease("ha_manager_lock", "node2", 60)
        ms2 = {"master_node": "node2", "service_status": {"vm:100": {"state": "stopped"}},
               "timestamp": 3}  # fmt: skip
        assert other.write_manager_status_as("node2", ms2)
        late = {**ms1, "service_status": {"vm:100": {"state": "started"}, "vm:101": {}}}
        assert not store.write_manager_status_as("node1", late)  # the late write is refused
        assert other.read_manager_status() == ms2
        assert store.read_manager_status() == ms2
    finally:
        other.close()


def test_take_over_a_dead_nodes_agent_lease_at_once(store: Store, spec: str) -> None:
    lrm1 = open_store(spec)
    try:
        assert lrm1.acquire_lease("ha_agent_node1_lock", "node1", 300)
        assert not store.acquire_lease("ha_agent_node1_lock", "node2", 60)
        # node1 confirmed off: the master takes its lock now, not in 300 s
        assert not store.take_over_lease("ha_agent_node1_lock", "node2", 60, from_owner="node3")
        assert store.take_over_lease("ha_agent_node1_lock", "node2", 60, from_owner="node1")
        assert store.lease_owner("ha_agent_node1_lock") == "node2"
        assert not lrm1.renew_lease("ha_agent_node1_lock", "node1", 300)  # node1's is gone
        assert not lrm1.acquire_lease("ha_agent_node1_lock", "node1", 300)
        assert store.take_over_lease("ha_agent_node3_lock", "node2", 60, from_owner="node3")
    finally:
        lrm1.close()


def _take_in_another_process(spec: str, name: str, owner: str, ttl: float) -> str:
    """``owner`` takes ``name`` from a process of its own (another incarnation) that then
    exits; its incarnation."""
    code = (
        "import sys; from hafence.store import open_store\n"
        "s = open_store(sys.argv[1]); assert s.acquire_lease(sys.argv[2], sys.argv[3], "
        "float(sys.argv[4]), keep=False)\n"
        "print(s.lease_holder(sys.argv[2])['incarnation']); s.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code, spec, name, owner, str(ttl)],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return out.stdout.strip()


def test_lease_info_moves_up_with_a_renewal(store: Store) -> None:
    assert store.lease_info("ha_agent_node1_lock") is None
    assert store.acquire_lease("ha_agent_node1_lock", "node1", 60)
    info = store.lease_info("ha_agent_node1_lock")
    assert info is not None and info["owner"] == "node1"
    assert 58 <= info["expires_in"] <= 60
    assert info["incarnation"] == store.lease_holder("ha_agent_node1_lock")["incarnation"]


def test_a_takeover_never_robs_an_incarnation_it_did_not_judge(store: Store, spec: str) -> None:
    name = "ha_agent_node1_lock"
    judged = _take_in_another_process(spec, name, "node1", 300)
    assert store.lease_holder(name)["incarnation"] == judged
    # node1 reboots and its new LRM takes a fresh lock (the old one released) before
    # the master acts on what it judged: the takeover must fail
    assert _release_in_another_process(spec, name, "node1")
    fresh = _take_in_another_process(spec, name, "node1", 300)
    assert fresh != judged
    assert not store.take_over_lease(name, "node2", 60, from_owner="node1", incarnation=judged)
    assert store.lease_holder(name)["incarnation"] == fresh
    assert store.take_over_lease(name, "node2", 60, from_owner="node1", incarnation=fresh)
    assert store.lease_owner(name) == "node2"


def _release_in_another_process(spec: str, name: str, owner: str) -> bool:
    code = (
        "import sys; from hafence.store import open_store\n"
        "s = open_store(sys.argv[1]); print(s.release_lease(sys.argv[2], sys.argv[3]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, spec, name, owner],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return out.stdout.strip() == "True"


def test_a_lock_taken_with_keep_false_is_not_kept_alive(spec: str) -> None:
    """The master's background keep-alive renews its own locks, never one it took from a
    dead node: that one must expire so the node can take it again when it is back."""
    if not spec.startswith("etcd"):
        pytest.skip("the embedded store renews nothing in the background")
    master = open_store(spec)
    try:
        master.keep_leases_until(time.monotonic() + 60)
        assert master.acquire_lease("ha_manager_lock", "node2", 2)
        assert master.take_over_lease("ha_agent_node1_lock", "node2", 2, "node1", keep=False)
        assert master.acquire_lease("ha_agent_node3_lock", "node2", 2, keep=False)
        time.sleep(4)  # two lease lifetimes: the keeper renews every ttl/3
        assert master.lease_owner("ha_manager_lock") == "node2"  # kept alive
        assert master.lease_owner("ha_agent_node1_lock") is None  # expired
        assert master.lease_owner("ha_agent_node3_lock") is None
    finally:
        master.close()
