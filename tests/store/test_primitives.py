"""Store primitives for the HA core (issue 15): lease incarnations, a manager status write
that only the lease holder can make, and an atomic takeover of a dead node's lease."""

from __future__ import annotations

import os

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
