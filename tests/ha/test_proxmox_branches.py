"""Safety branches of Proxmox's LRM.pm/Manager.pm that hafence must keep.

- disarming waits while services are in fence, recovery, migrate or relocate, and lets
  exactly those finish their transition first;
- an LRM keeps its agent lock and watchdog while any worker still runs (disarm, a
  shutdown that lost its lock);
- a node whose LRM shuts down is still online and may receive a service (Proxmox does
  not look at the LRM's mode there); one whose LRM restarts freezes its own;
- maintenance cannot be enabled while the HA stack is disarmed.
"""

from __future__ import annotations

import threading
from typing import Any

from hafence.ha import state as st
from hafence.ha.lrm import LRM
from hafence.ha.manager import Manager
from hafence.sim.env import SimEnv
from hafence.sim.hardware import Hardware
from tests.ha.test_lrm import ThreadedEnv

NODES = ("node1", "node2", "node3")


def _hw(services: dict[str, dict[str, Any]], ss: dict[str, dict[str, Any]], **kw: Any) -> Hardware:
    """Every node up; the manager status holds ``ss``; every LRM active."""
    hw = Hardware(
        status={n: {"power": "on", "network": "on", "shutdown": None} for n in NODES},
        service_config=services,
        manager_status={
            "master_node": "node3",
            "node_status": {n: "online" for n in NODES},
            "service_status": ss,
        },
        **kw,
    )
    for n in NODES:
        hw.lrm_status[n] = {"state": "active", "mode": "active", "results": {}}
    return hw


def _master(hw: Hardware) -> Manager:
    env = SimEnv(hw, "node3", "crm")
    env.loop_start(100)
    return Manager(env)


def test_disarm_waits_for_a_migration_and_lets_it_finish() -> None:
    hw = _hw(
        {"vm:100": {"node": "node1", "state": "started"}},
        {"vm:100": {"state": "migrate", "node": "node1", "target": "node2", "uid": "m1"}},
    )
    hw.crm_commands.append("disarm-ha freeze")
    m = _master(hw)
    m.manage()
    assert "deferring disarm - service 'vm:100' is in 'migrate' state" in hw.log_text()
    assert m.ss["vm:100"]["state"] == "migrate"
    # the source LRM reports the migration done: the master must still take it in
    hw.service_config["vm:100"]["node"] = "node2"
    hw.lrm_status["node1"]["results"] = {"m1": {"sid": "vm:100", "state": "migrate",
                                                "exit_code": st.SUCCESS}}  # fmt: skip
    m.manage()
    assert m.ss["vm:100"]["node"] == "node2"
    m.manage()
    assert m.ss["vm:100"]["state"] == "freeze" and m.ss["vm:100"]["node"] == "node2"


def test_disarm_waits_for_recovery() -> None:
    hw = _hw(
        {"vm:100": {"node": "node1", "state": "started"}},
        {"vm:100": {"state": "recovery", "node": "node1", "uid": "r1"}},
    )
    hw.status["node1"].update(power="off", network="off")
    hw.manager_status["node_status"]["node1"] = "unknown"
    hw.crm_commands.append("disarm-ha freeze")
    m = _master(hw)
    m.manage()
    log = hw.log_text()
    assert "deferring disarm - service 'vm:100' is in 'recovery' state" in log
    assert "recover service 'vm:100' from fenced node 'node1'" in log
    m.manage()
    assert m.ss["vm:100"]["state"] == "freeze"


def test_no_maintenance_while_disarmed() -> None:
    hw = _hw({}, {})
    hw.manager_status["disarm"] = {"mode": "freeze", "state": "disarmed", "applied": True}
    hw.crm_commands.append("enable-node-maintenance node1")
    m = _master(hw)
    m.manage()
    assert "node_request" not in m.ms
    assert "ignoring maintenance command for node node1 - HA stack is disarmed" in hw.log_text()


def test_a_node_shutting_down_still_receives_a_migration() -> None:
    # vm:100 prefers node1 (failback); node1's LRM shuts down, but the node is online
    rules = {"r": {"type": "node-affinity", "resources": ["vm:100"],
                   "nodes": {"node1": 2, "node2": 1}}}  # fmt: skip
    hw = _hw(
        {"vm:100": {"node": "node2", "state": "started"}},
        {"vm:100": {"state": "started", "node": "node2", "uid": "s1", "running": 1}},
        rules=rules,
    )
    hw.lrm_status["node1"]["mode"] = "shutdown"
    hw.lrm_status["node2"]["results"] = {"s1": {"sid": "vm:100", "state": "started",
                                                "exit_code": st.SUCCESS}}  # fmt: skip
    m = _master(hw)
    m.manage()
    assert m.ss["vm:100"]["state"] == "migrate" and m.ss["vm:100"]["target"] == "node1"


def test_a_restarting_lrm_freezes_its_services() -> None:
    hw = _hw(
        {"vm:100": {"node": "node1", "state": "started"}},
        {"vm:100": {"state": "started", "node": "node1", "uid": "s1", "running": 1}},
    )
    hw.lrm_status["node1"]["mode"] = "restart"
    m = _master(hw)
    m.manage()
    assert m.ss["vm:100"]["state"] == "freeze"
    hw.lrm_status["node1"]["mode"] = "active"
    m.manage()
    assert m.ss["vm:100"]["state"] == "started"


class GatedEnv(ThreadedEnv):
    """Workers that wait for a gate: a command still running on the node."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.gate = threading.Event()

    def submit_worker(self, uid: str, fn: Any) -> None:
        def gated() -> Any:
            self.gate.wait(30)
            return fn()

        super().submit_worker(uid, gated)


def _lrm_with_running_worker() -> tuple[Hardware, LRM, GatedEnv]:
    hw = Hardware(
        status={n: {"power": "on", "network": "on", "shutdown": None} for n in ("n1", "n2")},
        service_config={"vm:100": {"node": "n1", "state": "started"}},
    )
    hw.manager_status = {
        "master_node": "n2",
        "node_status": {"n1": "online", "n2": "online"},
        "service_status": {"vm:100": {"state": "started", "node": "n1", "uid": "u1"}},
    }
    env = GatedEnv(hw, "n1", "lrm")
    lrm = LRM(env)
    _round(lrm)
    assert lrm.status == "active" and lrm.workers["vm:100"].get("running")
    return hw, lrm, env


def _round(lrm: LRM) -> bool:
    lrm.env.loop_start(lrm.env.cur_time + 10)
    alive = lrm.do_one_iteration()
    lrm.env.loop_end()
    return alive


def test_disarm_keeps_lock_and_watchdog_while_a_worker_runs() -> None:
    hw, lrm, env = _lrm_with_running_worker()
    hw.manager_status["disarm"] = {"mode": "freeze", "state": "disarming"}
    _round(lrm)
    assert lrm.status == "active" and lrm.watchdog.armed
    assert hw.cluster_locks["ha_agent_n1_lock"]["node"] == "n1"
    env.gate.set()
    for _ in range(200):
        _round(lrm)
        if lrm.status == "wait_for_agent_lock":
            break
        threading.Event().wait(0.01)
    assert lrm.status == "wait_for_agent_lock" and not lrm.watchdog.armed
    assert "vm:100" in hw.running["n1"]  # the start finished under the watchdog


def test_shutdown_without_lock_keeps_the_watchdog_while_a_worker_runs() -> None:
    hw, lrm, env = _lrm_with_running_worker()
    hw.status["n2"]["network"] = "off"  # quorum gone while the start still runs
    _round(lrm)
    assert lrm.status == "lost_agent_lock"
    hw.manager_status["service_status"] = {}  # nothing active any more (as it reads)
    lrm.shutdown_request()
    assert _round(lrm) and lrm.watchdog.armed  # does not exit, keeps the watchdog
    env.gate.set()
    for _ in range(200):
        if not _round(lrm):
            break
        threading.Event().wait(0.01)
    assert not lrm.watchdog.armed
