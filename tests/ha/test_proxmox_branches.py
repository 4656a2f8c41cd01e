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

import pytest

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


# -- more branches of Manager.pm / CRM.pm / LRM.pm, on whole simulated clusters ------------
def _cluster(services: dict[str, dict[str, Any]], cmds: list[list[str]], **kw: Any) -> Hardware:
    hw = Hardware(
        status={n: {"power": "off", "network": "off", "shutdown": None} for n in NODES},
        service_config=services,
        cmdlist=[[f"power {n} on" for n in NODES], *cmds],
        **kw,
    )
    hw.run()
    return hw


def test_recovery_honours_the_saved_maintenance_node() -> None:
    hw = _hw(
        {"vm:100": {"node": "node1", "state": "started"},
         "vm:101": {"node": "node3", "state": "started"}},
        {"vm:100": {"state": "recovery", "node": "node1", "uid": "r1",
                    "maintenance_node": "node3"},
         "vm:101": {"state": "started", "node": "node3", "uid": "s1", "running": 1}},
    )  # fmt: skip
    hw.status["node1"].update(power="off", network="off")
    hw.manager_status["node_status"]["node1"] = "unknown"
    m = _master(hw)
    m.manage()
    # node2 carries nothing, node3 one service: the fallback still wins
    assert "recover service 'vm:100' from fenced node 'node1' to node 'node3'" in hw.log_text()
    assert m.ss["vm:100"]["node"] == "node3"


def test_leftover_locks_are_dropped_on_recovery_others_block_the_start() -> None:
    hw = _cluster(
        {"vm:100": {"node": "node1", "state": "started"},
         "vm:101": {"node": "node1", "state": "started"}},
        [["service vm:100 lock backup", "service vm:101 lock create"], ["network node1 off"]],
    )  # fmt: skip
    log = hw.log_text()
    assert (
        "removed leftover lock 'backup' from recovered service 'vm:100' to allow its start." in log
    )
    assert "service 'vm:101' locked (create), unable to start!" in log
    assert any("vm:100" in run for n, run in hw.running.items() if n != "node1")
    assert not any("vm:101" in run for run in hw.running.values())


def test_a_crm_becomes_master_for_a_maintenance_nobody_asked_for() -> None:
    ms = {"master_node": "node1", "node_status": {"node1": "maintenance", "node2": "online",
                                                   "node3": "online"}}  # fmt: skip
    hw = _cluster({}, [], manager_status=dict(ms))
    assert "status change wait_for_quorum => master" in hw.log_text()
    # asked for by an admin (node_request): an idle cluster needs no master for that
    hw = _cluster({}, [], manager_status={**ms, "node_request": {"node1": {"maintenance": 1}}})
    assert "=> master" not in hw.log_text()


def test_a_crm_becomes_master_to_clean_up_a_stale_service_status() -> None:
    stale = {"vm:100": {"state": "started", "node": "node1", "uid": "x"}}
    ms = {"master_node": "node3", "node_status": {n: "online" for n in NODES},
          "service_status": stale}  # fmt: skip
    hw = _cluster({}, [], manager_status=ms)
    log = hw.log_text()
    assert "=> master" in log and "removing stale service 'vm:100' (no config)" in log


@pytest.mark.parametrize("what,mode", [("reboot", "restart"), ("shutdown", "shutdown")])
def test_reboot_freezes_and_shutdown_stops_with_the_conditional_policy(
    what: str, mode: str
) -> None:
    hw = _cluster({"vm:100": {"node": "node1", "state": "started"}}, [[f"{what} node1"]])
    log = hw.log_text()
    if mode == "restart":
        assert "reboot LRM, stop and freeze all services" in log
        assert "service 'vm:100': state changed from 'started' to 'freeze'" in log
        assert "vm:100" in hw.running["node1"]  # back on its node after the reboot
    else:
        assert "shutdown LRM, stop all services" in log
        assert "recover service 'vm:100' from fenced node 'node1'" in log
        assert hw.status["node1"]["power"] == "off"


def test_an_lrm_whose_cluster_fs_fails_keeps_its_services() -> None:
    cmds = [["cfs node2 rw fail"], ["service vm:100 stopped"], ["cfs node2 rw work"]]
    hw = _cluster({"vm:100": {"node": "node2", "state": "started"}}, cmds)
    log = hw.log_text()
    assert "node2/lrm: updating service status from manager failed: cfs connection refused" in log
    assert "node2/lrm: unable to write lrm status file - cfs connection refused" in log
    lines = log.splitlines()
    back = next(i for i, ln in enumerate(lines) if "execute cfs node2 rw work" in ln)
    stop = next(i for i, ln in enumerate(lines) if "node2/lrm: stopping service vm:100" in ln)
    assert stop > back  # the stop waited for the cluster filesystem
    assert "watchdog" not in log
