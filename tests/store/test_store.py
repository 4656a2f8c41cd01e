"""The Store contract, run against both backends: a temp directory and a real etcd."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading

import pytest

from hafence.errors import ConfigErrors
from hafence.ha import config as hacfg
from hafence.store import EmbeddedStore, LockTimeout, Store, open_store
from hafence.store.etcd import EtcdStore

CTX = mp.get_context("spawn")
N_CMDS = 40  # a fresh interpreter: no inherited locks or sockets


def test_open_store_picks_backend(spec: str) -> None:
    s = open_store(spec)
    assert isinstance(s, EtcdStore if spec.startswith("etcd://") else EmbeddedStore)


def test_empty_store_reads_defaults(store: Store) -> None:
    assert store.read_resources() == {}
    assert store.read_groups() == {}
    assert store.ha_options() == {"shutdown_policy": "conditional", "max_worker": 4}
    assert store.read_manager_status() == {}
    assert store.lrm_nodes() == []
    assert store.read_crm_commands() == []
    assert store.quorate()


def test_config_round_trip(store: Store) -> None:
    groups = {"g1": {**hacfg.default_group(), "nodes": {"node1": 2, "node2": 0}}}
    res = {"vm:100": {**hacfg.default_resource(), "node": "node1", "group": "g1"}}
    store.write_groups(groups)
    store.write_resources(res)
    assert store.read_groups() == groups
    assert store.read_resources() == res
    assert store.read_text("groups.cfg") == "group: g1\n\tnodes node1:2,node2\n"
    store.write_datacenter({"ha": {"shutdown_policy": "migrate"}, "crs": {"ha": "static"}})
    assert store.ha_options() == {"shutdown_policy": "migrate", "max_worker": 4}
    assert store.read_datacenter()["crs"] == {"ha": "static"}


def test_bad_datacenter_options_are_not_stored(store: Store) -> None:
    with pytest.raises(ConfigErrors, match="shutdown_policy"):
        store.write_datacenter({"ha": {"shutdown_policy": "never"}})
    assert store.read_text("datacenter.cfg") == ""


def test_parse_errors_name_the_location(store: Store) -> None:
    store.write_text("resources.cfg", "vm: 100\n\tstate maybe\n")
    with pytest.raises(ConfigErrors) as exc:
        store.read_resources()
    assert str(exc.value.errors[0]).startswith(store.location("resources.cfg") + ":2: state:")


def test_status_and_lrm_entries(store: Store) -> None:
    ms = {"master_node": "node1", "node_status": {"node1": "online"}, "timestamp": 20}
    store.write_manager_status(ms)
    store.write_lrm_status("node2", {"state": "active", "mode": "active", "timestamp": 21})
    store.write_lrm_status("node1", {"state": "wait_for_agent_lock", "timestamp": 21})
    assert store.read_manager_status() == ms
    assert store.lrm_nodes() == ["node1", "node2"]
    assert store.read_lrm_status("node2")["state"] == "active"
    assert store.read_lrm_status("node9") == {}
    with pytest.raises(ValueError):
        store.read_lrm_status("../resources.cfg")


def test_crm_commands_queue_and_take(store: Store) -> None:
    store.queue_crm_command("migrate vm:100 node2")
    store.queue_crm_command("enable-node-maintenance node1")
    assert store.read_crm_commands() == ["migrate vm:100 node2", "enable-node-maintenance node1"]
    assert store.take_crm_commands() == ["migrate vm:100 node2", "enable-node-maintenance node1"]
    assert store.take_crm_commands() == []
    with pytest.raises(ValueError):
        store.queue_crm_command("stop vm:100 0\nmigrate vm:101 node3")


def test_leases_between_owners(store: Store) -> None:
    assert store.acquire_lease("ha_manager_lock", "node1", 60)
    assert not store.acquire_lease("ha_manager_lock", "node2", 60)
    assert store.lease_owner("ha_manager_lock") == "node1"
    assert store.acquire_lease("ha_manager_lock", "node1", 60)  # re-acquire = extend
    assert store.renew_lease("ha_manager_lock", "node1", 60)
    assert not store.renew_lease("ha_manager_lock", "node2", 60)
    assert not store.release_lease("ha_manager_lock", "node2")
    assert store.lease_owner("ha_manager_lock") == "node1"
    assert store.release_lease("ha_manager_lock", "node1")
    assert store.lease_owner("ha_manager_lock") is None
    assert not store.renew_lease("ha_manager_lock", "node1", 60)
    assert store.acquire_lease("ha_manager_lock", "node2", 60)
    assert store.lease_owner("ha_manager_lock") == "node2"
    # independent names do not interfere
    assert store.acquire_lease("ha_agent_node1_lock", "node1", 60)
    assert store.lease_owner("ha_manager_lock") == "node2"


def _hold_lock(spec: str, holding: mp.synchronize.Event, release: mp.synchronize.Event) -> None:
    s = open_store(spec)
    with s.locked():
        holding.set()
        release.wait(60)


def test_lock_contention_between_processes(store: Store, spec: str) -> None:
    holding, release = CTX.Event(), CTX.Event()
    proc = CTX.Process(target=_hold_lock, args=(spec, holding, release))
    proc.start()
    try:
        assert holding.wait(60), "child never took the lock"
        with pytest.raises(LockTimeout), store.locked(timeout=0.3):
            pass
        release.set()
        with store.locked(timeout=30):  # free once the holder leaves
            with store.locked():  # re-entrant in one process
                pass
    finally:
        release.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert proc.exitcode == 0


def _queue_many(spec: str, tag: str, n: int, start: mp.synchronize.Barrier) -> None:
    s = open_store(spec)
    start.wait(60)  # all writers race from the same moment
    for i in range(n):
        s.queue_crm_command(f"stop vm:{tag} {i}")


def test_concurrent_writers_lose_no_command(store: Store, spec: str) -> None:
    start = CTX.Barrier(3)
    procs = [
        CTX.Process(target=_queue_many, args=(spec, str(100 + k), N_CMDS, start)) for k in range(3)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(120)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0]
    cmds = store.read_crm_commands()
    assert sorted(cmds) == sorted(f"stop vm:{100 + k} {i}" for k in range(3) for i in range(N_CMDS))
    for k in range(3):  # each writer's commands keep their order
        mine = [c for c in cmds if c.startswith(f"stop vm:{100 + k} ")]
        assert mine == [f"stop vm:{100 + k} {i}" for i in range(N_CMDS)]


def test_change_seen_even_if_made_before_waiting(store: Store) -> None:
    token = store.change_token()
    store.queue_crm_command("migrate vm:100 node2")
    new = store.wait_for_change(token, 30)  # returns at once: the change is already there
    assert new != token
    assert store.wait_for_change(new, 0.2) == new  # nothing since: times out unchanged


def test_wait_wakes_on_a_write_from_elsewhere(store: Store, spec: str) -> None:
    token = store.change_token()
    other = open_store(spec)
    writer = threading.Timer(0.3, other.write_lrm_status, ("node1", {"state": "active"}))
    writer.start()
    try:
        new = store.wait_for_change(token, 60)
    finally:
        writer.join()
    assert new != token
    assert store.read_lrm_status("node1") == {"state": "active"}


def test_lease_renewals_do_not_wake_waiters(store: Store) -> None:
    token = store.change_token()
    assert store.acquire_lease("ha_manager_lock", "node1", 60)
    assert store.renew_lease("ha_manager_lock", "node1", 60)
    assert store.wait_for_change(token, 0.3) == token


def _die_holding_lock(spec: str) -> None:
    if spec.startswith("etcd://"):
        s: Store = EtcdStore(spec, lock_ttl=120)  # far longer than the test waits
    else:
        s = open_store(spec)  # the kernel drops a dead process's flock
    with s.locked():
        s.write_text("crm_commands", "stop vm:100 0\n")
        os.kill(os.getpid(), signal.SIGKILL)


def test_lock_of_a_killed_process_is_taken_over_at_once(store: Store, spec: str) -> None:
    """kill -9 inside the section: the next writer gets the lock at once (etcd: the dead
    holder's lock is taken over, not waited out for its 120 s life)."""
    proc = CTX.Process(target=_die_holding_lock, args=(spec,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    with store.locked(timeout=60):  # < the 120 s lock life: only a takeover gets here
        # etcd commits a section's writes at its end: a holder killed inside wrote
        # nothing; the embedded store writes each file as it goes
        expected = [] if spec.startswith("etcd://") else ["stop vm:100 0"]
        assert store.read_crm_commands() == expected
