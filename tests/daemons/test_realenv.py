"""RealEnv against real stores (embedded dir and a real etcd), real processes (dummy
resources), a real ipmi_sim BMC (fencing) and a real watchdog-mux on a fake device."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hafence_resources import DummyType

from hafence.ha import state as st
from hafence.ha.agent import exec_resource_agent
from hafence.ha.env import (
    FENCE_FAILED,
    FENCE_IDLE,
    FENCE_NONE,
    FENCE_OK,
    FENCE_PENDING,
    ServiceLocationConflict,
)
from hafence.ha.nodestatus import NodeStatus
from hafence.ha.realenv import RealEnv, Timings, node_alive_lease
from hafence.store import EmbeddedStore, Store, open_store
from tests.daemons.holdproxy import HoldProxy

T = Timings(interval=1, lease_ttl=10, watchdog_timeout=5, fence_delay=2, node_timeout=5)


def env(store: Store, node: str, role: str = "crm", **kw: Any) -> RealEnv:
    return RealEnv(node, store, role=role, timings=T, **kw)


def until(pred: Any, what: str, limit: float = 30.0) -> None:
    """Wait for a condition (a bound against hangs, not a speed assertion)."""
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- locks and membership ----------------------------------------------------------------


def test_manager_lock_is_exclusive(store: Store) -> None:
    a, b = env(store, "node1"), env(store, "node2")
    assert a.get_ha_manager_lock()
    assert a.get_ha_manager_lock()  # renew
    assert not b.get_ha_manager_lock()
    assert store.lease_owner(st.MANAGER_LOCK) == "node1"
    a.release_ha_manager_lock()
    assert b.get_ha_manager_lock()
    assert not a.get_ha_manager_lock()


def test_agent_lock_owned_by_lrm_then_crm_after_expiry(store: Store, clock: Any) -> None:
    lrm1, crm2 = env(store, "node1", "lrm"), env(store, "node2")
    assert lrm1.get_ha_agent_lock()
    assert not crm2.get_ha_agent_lock("node1")  # the node's LRM still holds it
    lrm1.release_ha_agent_lock()
    assert crm2.get_ha_agent_lock("node1")  # the CRM proves node1's LRM is gone
    assert store.lease_owner(st.agent_lock_name("node1")) == "node2"
    assert not lrm1.get_ha_agent_lock()  # and node1 cannot take it back meanwhile


def test_agent_lock_expires_embedded(tmp_path: Path, clock: Any) -> None:
    store = EmbeddedStore(tmp_path / "ha", clock=clock)
    lrm1, crm2 = env(store, "node1", "lrm"), env(store, "node2")
    assert lrm1.get_ha_agent_lock()
    clock.now += T.lease_ttl - 0.1
    assert not crm2.get_ha_agent_lock("node1")
    clock.now += 0.2
    assert crm2.get_ha_agent_lock("node1")


def test_membership_from_lrm_heartbeat(tmp_path: Path, clock: Any) -> None:
    store = EmbeddedStore(tmp_path / "ha", clock=clock)
    lrm1, lrm2, crm = env(store, "node1", "lrm"), env(store, "node2", "lrm"), env(store, "node3")
    for e in (lrm1, lrm2):
        e.write_lrm_status({"state": "wait_for_agent_lock", "mode": "active"})
        assert e.heartbeat()
    assert crm.get_node_info() == {"node1": {"online": True}, "node2": {"online": True}}
    clock.now += T.node_timeout / 2
    lrm2.heartbeat()
    clock.now += T.node_timeout / 2 + 0.1  # node1 silent for a whole node_timeout
    assert crm.get_node_info() == {"node1": {"online": False}, "node2": {"online": True}}


def test_membership_etcd_and_nodes_from_manager_status(store: Store) -> None:
    crm = env(store, "node1")
    assert crm.get_ha_manager_lock()  # only the master writes the manager status
    crm.write_manager_status({"node_status": {"node3": "online"}, "service_status": {}})
    lrm = env(store, "node2", "lrm")
    lrm.write_lrm_status({"state": "active"})
    lrm.heartbeat()
    assert crm.get_node_info() == {"node2": {"online": True}, "node3": {"online": False}}
    assert store.lease_owner(node_alive_lease("node2")) == "node2"


def test_quorum_follows_the_store(store: Store) -> None:
    assert env(store, "node1").quorate()


@pytest.mark.peer("etcd")
def test_losing_and_regaining_quorum_is_said_once_each(
    etcd_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # a daemon without quorum takes and writes nothing: without these two lines its log
    # would show nothing at all while it waits
    host, port = etcd_url.removeprefix("http://").split(":")
    proxy = HoldProxy((host, int(port)), "/no-such-key")
    s = open_store(proxy.url("quorum"))
    try:
        lrm = env(s, "node1", "lrm")
        caplog.set_level(logging.INFO)
        assert lrm.quorate()
        proxy.partitioned = True  # the store stops answering
        for _ in range(3):
            s.set_deadline(time.monotonic() + 0.3)
            assert not lrm.quorate()
        s.set_deadline(None)
        proxy.partitioned = False
        assert lrm.quorate() and lrm.quorate()
    finally:
        s.close()
        proxy.close()
    said = [r.getMessage() for r in caplog.records if "quorum" in r.getMessage()]
    assert said == [
        "node1/lrm: no quorum: the store answers no quorate read",
        "node1/lrm: quorum regained",
    ]


# -- config, status, commands ------------------------------------------------------------


def _add(store: Store, sid: str, node: str, **kw: Any) -> None:
    from hafence.ha.config import default_resource

    res = store.read_resources()
    conf = default_resource()
    conf.update(node=node, **kw)
    res[sid] = conf
    store.write_resources(res)


def test_config_status_commands_round_trip(store: Store) -> None:
    e = env(store, "node1")
    _add(store, "dummy:a", "node1")
    assert e.read_service_config()["dummy:a"]["node"] == "node1"
    assert e.read_groups() == {}
    assert e.ha_options()["max_worker"] == 4
    ms = {"master_node": "node1", "node_status": {"node1": "online"}, "service_status": {}}
    assert e.get_ha_manager_lock()  # only the master writes the manager status
    e.write_manager_status(ms)
    assert e.read_manager_status() == ms
    lrm = env(store, "node1", "lrm")
    lrm.write_lrm_status({"state": "active", "results": {}})
    assert e.read_lrm_status("node1")["state"] == "active"
    store.queue_crm_command("migrate dummy:a node2")
    assert e.take_crm_commands() == ["migrate dummy:a node2"]
    assert e.take_crm_commands() == []


def test_bad_config_keeps_last_good(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    e = env(store, "node1")
    _add(store, "dummy:a", "node1")
    good = e.read_service_config()
    store.write_text("resources.cfg", "dummy: a\n\tstate bogus\n")
    with caplog.at_level(logging.ERROR, "hafence.ha"):
        assert e.read_service_config() == good
    assert "node1/crm: service config unreadable" in caplog.text and "state" in caplog.text
    assert "the last good version of dummy:a" in caplog.text


def test_change_service_location(store: Store) -> None:
    e = env(store, "node2")
    _add(store, "dummy:a", "node1")
    e.change_service_location("dummy:a", "node1", "node2")
    assert store.read_resources()["dummy:a"]["node"] == "node2"
    e.change_service_location("dummy:a", "node1", "node2")  # already there: idempotent
    with pytest.raises(ServiceLocationConflict, match="not on 'node1'") as ei:
        e.change_service_location("dummy:a", "node1", "node3")
    assert ei.value.actual == "node2"
    assert store.read_resources()["dummy:a"]["node"] == "node2"


# -- resource commands with real dummy processes -------------------------------------------


@pytest.fixture
def lrm_env(tmp_path: Path):
    store = EmbeddedStore(tmp_path / "ha")
    envs: list[RealEnv] = []

    def make(node: str) -> RealEnv:
        e = RealEnv(node, store, role="lrm", timings=T, state_dir=tmp_path / "state" / node)
        envs.append(e)
        return e

    yield make
    for e in envs:
        d = e.resource_types()["dummy"]
        assert isinstance(d, DummyType)
        if d._dir().exists():
            for p in d._dir().glob("*.pid"):
                d.stop(p.stem, 1)
        e.close()


def test_exec_start_stop_dummy(lrm_env: Any) -> None:
    e = lrm_env("node1")
    _add(e.store, "dummy:web", "node1")
    conf = e.read_service_config()["dummy:web"]
    dummy = e.resource_types()["dummy"]
    assert exec_resource_agent(e, "dummy:web", conf, "started", {}) == st.SUCCESS
    assert dummy.status("web") == "running"
    pid = dummy.pid("web")
    assert exec_resource_agent(e, "dummy:web", conf, "started", {}) == st.SUCCESS
    assert dummy.pid("web") == pid  # already running: not started twice
    assert exec_resource_agent(e, "dummy:web", conf, "request_stop", {"timeout": 5}) == 0
    assert dummy.status("web") == "stopped"


def test_exec_wrong_node_and_unknown_type(lrm_env: Any, caplog: Any) -> None:
    e = lrm_env("node1")
    _add(e.store, "dummy:web", "node2")
    conf = e.read_service_config()["dummy:web"]
    here = {"node": "node1"}
    with caplog.at_level(logging.INFO, "hafence.ha"):
        assert exec_resource_agent(e, "dummy:web", conf, "started", {}) == st.EWRONG_NODE
        assert e.resource_types()["dummy"].status("web") == "stopped"
        assert exec_resource_agent(e, "nope:x", here, "started", {}) == st.EUNKNOWN_SERVICE_TYPE
        assert exec_resource_agent(e, "vm:100", here, "started", {}) == st.ERROR
    assert "service type 'nope' not implemented" in caplog.text
    assert "vm:100: started failed (unavailable)" in caplog.text


def test_exec_relocate_moves_by_stop_and_config(lrm_env: Any) -> None:
    e1, e2 = lrm_env("node1"), lrm_env("node2")
    _add(e1.store, "dummy:web", "node1")
    conf = e1.read_service_config()["dummy:web"]
    assert exec_resource_agent(e1, "dummy:web", conf, "started", {}) == st.SUCCESS
    move = {"target": "node2"}
    assert exec_resource_agent(e1, "dummy:web", conf, "relocate", move) == st.SUCCESS
    assert e1.resource_types()["dummy"].status("web") == "stopped"
    conf = e2.read_service_config()["dummy:web"]
    assert conf["node"] == "node2"
    assert exec_resource_agent(e2, "dummy:web", conf, "started", {}) == st.SUCCESS
    assert e2.resource_types()["dummy"].status("web") == "running"


def test_workers_bounded_by_max_worker(lrm_env: Any) -> None:
    e = lrm_env("node1")
    e.store.write_datacenter({"ha": {"max_worker": 2}})
    e.ha_options()
    gate = threading.Event()
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def work(n: int) -> Any:
        def fn() -> int:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            gate.wait(30)
            with lock:
                running[0] -= 1
            if n == 3:
                raise RuntimeError("worker bug")
            return n

        return fn

    for n in range(4):
        e.submit_worker(f"uid{n}", work(n))
    until(lambda: running[0] == 2, "two workers running")
    assert e.running_workers() == 4 and e.collect_workers() == {}
    gate.set()
    until(lambda: e.running_workers() == 0, "workers done")
    assert e.collect_workers() == {"uid0": 0, "uid1": 1, "uid2": 2, "uid3": st.ERROR}
    assert peak[0] == 2


# -- fencing through a real ipmi_sim ---------------------------------------------------------


def _fence_env(tmp_path: Path, cfg_text: str | None) -> RealEnv:
    cfg = None
    if cfg_text is not None:
        cfg = tmp_path / "fence.cfg"
        cfg.write_text(cfg_text)
    env = RealEnv(
        "node2",
        EmbeddedStore(tmp_path / "ha"),
        timings=T,
        fence_config=cfg,
        fence_history=tmp_path / "history.jsonl",
    )
    # the master powers node1 off only once the status it wrote says node1 is fenced
    assert env.get_ha_manager_lock()
    env.write_manager_status({"node_status": {"node1": "fence"}, "service_status": {}})
    return env


def _poll_done(e: RealEnv, node: str) -> str:
    until(lambda: e.fence_poll(node) != FENCE_PENDING, f"fence of {node} to finish")
    return e.fence_poll(node)


@pytest.mark.peer("ipmi_sim")
def test_fence_through_ipmi_sim(tmp_path: Path, ipmi_sims: Any, caplog: Any) -> None:
    bmc = ipmi_sims()
    e = _fence_env(tmp_path, f"device bmc1 ipmi {bmc.fence_cfg_args()}\nconnect bmc1 node=node1\n")
    try:
        assert e.fence_poll("node1") == FENCE_IDLE
        assert e.fence_poll("node3") == FENCE_NONE  # no chain for node3
        with caplog.at_level(logging.INFO, "hafence.ha"):
            assert e.fence_start("node1") == FENCE_PENDING
            assert e.fence_start("node1") == FENCE_PENDING  # one attempt at a time
            assert _poll_done(e, "node1") == FENCE_OK
        assert bmc.power == "off"
        assert e.fence_poll("node1") == FENCE_OK  # stays until reset
        e.fence_reset("node1")
        assert e.fence_poll("node1") == FENCE_IDLE
        assert "node2/crm: fencing: node 'node1' confirmed off by level 1" in caplog.text
        hist = (tmp_path / "history.jsonl").read_text()
        assert '"node1"' in hist and bmc.password not in hist
        assert bmc.password not in caplog.text
    finally:
        e.close()


@pytest.mark.peer("ipmi_sim")
def test_fence_failure_is_logged_and_retried(tmp_path: Path, ipmi_sims: Any, caplog: Any) -> None:
    bmc = ipmi_sims(stuck=True)
    e = _fence_env(tmp_path, f"device bmc1 ipmi {bmc.fence_cfg_args()}\nconnect bmc1 node=node1\n")
    e.fencer.retries = 0
    try:
        with caplog.at_level(logging.INFO, "hafence.ha"):
            e.fence_start("node1")
            assert _poll_done(e, "node1") == FENCE_FAILED
            assert bmc.power == "on"
            # the BMC is repaired, then the master tries again (repaired after the new
            # attempt began, its off could reach the still stuck BMC first: a busy
            # machine only has to delay this thread by the login's milliseconds)
            bmc.set_stuck(False)
            assert e.fence_start("node1") == FENCE_PENDING  # a new attempt
            assert _poll_done(e, "node1") == FENCE_OK
        assert "fencing: fence of node 'node1' failed (still_on)" in caplog.text
        assert bmc.power == "off"
    finally:
        e.close()


@pytest.mark.peer("ipmi_sim")
def test_a_node_back_online_is_fenced_anew_next_time(tmp_path: Path, ipmi_sims: Any) -> None:
    # chaos seed 8180: node1 fenced the dead master node2 (confirmed off by its BMC), node2
    # was back 4 s later, and when it crashed again half a minute after, its old
    # confirmation stood in for a new fence: no device was tried, and the fast path judged
    # it against the old episode ("the device does not tell the truth")
    bmc = ipmi_sims()
    e = _fence_env(tmp_path, f"device bmc1 ipmi {bmc.fence_cfg_args()}\nconnect bmc1 node=node1\n")
    try:
        e.fence_start("node1")
        assert _poll_done(e, "node1") == FENCE_OK and bmc.power == "off"
        bmc.set_power(True)  # powered on again: node1 boots and rejoins
        nodes = NodeStatus(e, {"node1": "unknown", "node2": "online"})
        nodes.update({"node1": {"online": True}, "node2": {"online": True}}, {})
        assert nodes.get("node1") == "online"
        assert e.fence_poll("node1") == FENCE_IDLE  # the next failure needs a new fence
        assert e.fencer.confirmed("node1") is None
    finally:
        e.close()


def test_fence_without_config_is_none(tmp_path: Path) -> None:
    e = _fence_env(tmp_path, None)
    assert e.fence_start("node1") == FENCE_NONE and e.fence_poll("node1") == FENCE_NONE


def test_broken_fence_cfg_fails_never_none(tmp_path: Path, caplog: Any) -> None:
    e = _fence_env(tmp_path, "device bmc1 ipmi ip=127.0.0.1 bogus=1\nconnect bmc1 node=node1\n")
    with caplog.at_level(logging.ERROR, "hafence.ha"):
        assert e.fence_start("node1") == FENCE_FAILED
    assert e.fence_poll("node1") == FENCE_FAILED
    assert "cannot use fence config" in caplog.text
    (tmp_path / "fence.cfg").unlink()
    assert e.fence_start("node1") == FENCE_FAILED


# -- watchdog through a real mux on a fake device ---------------------------------------------


def test_no_watchdog_warns(tmp_path: Path, caplog: Any) -> None:
    e = _fence_env(tmp_path, None)
    with caplog.at_level(logging.WARNING, "hafence.ha"):
        h = e.watchdog_open()
        e.watchdog_update(h)
        e.watchdog_close(h)
    assert h is None and "watchdog disabled (--no-watchdog)" in caplog.text


def test_watchdog_through_real_mux(tmp_path: Path) -> None:
    from hafence.watchdog.client import mux_status
    from hafence.watchdog.muxproc import MuxProcess

    with MuxProcess(tmp_path / "mux", timeout=10) as mux:
        e = RealEnv("node1", EmbeddedStore(tmp_path / "ha"), role="lrm", timings=T,
                    watchdog_socket=mux.socket)  # fmt: skip
        h = e.watchdog_open()
        e.watchdog_update(h)
        names = [c["name"] for c in mux_status(mux.socket)["clients"]]
        assert names == ["node1-lrm"]
        e.watchdog_close(h)
        status = mux_status(mux.socket)
        assert status["clients"] == [] and status["feeding"] and not status["tripped"]
