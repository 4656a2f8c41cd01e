"""The LRM on its own: lock discipline, results by uid, restart policy, worker limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from hafence.ha import state as st
from hafence.ha.lrm import LRM
from hafence.sim.env import SimEnv
from hafence.sim.hardware import Hardware


def cluster(services: dict[str, dict[str, Any]], options: dict | None = None) -> Hardware:
    hw = Hardware(
        status={n: {"power": "on", "network": "on", "shutdown": None} for n in ("n1", "n2")},
        service_config=services,
        datacenter={"ha": options or {}},
    )
    return hw


def assign(hw: Hardware, **states: tuple[str, str]) -> None:
    """Write a manager status: ``sid=(state, uid)``, all on n1."""
    hw.manager_status = {
        "master_node": "n2",
        "node_status": {"n1": "online", "n2": "online"},
        "service_status": {
            sid.replace("_", ":"): {"state": s, "node": "n1", "uid": uid}
            for sid, (s, uid) in states.items()
        },
    }


def step(lrm: LRM) -> None:
    lrm.env.loop_start(lrm.env.cur_time + 10)
    assert lrm.do_one_iteration()
    lrm.env.loop_end()


def test_no_lock_without_services_then_active() -> None:
    hw = cluster({"vm:100": {"node": "n1", "state": "started"}})
    lrm = LRM(SimEnv(hw, "n1", "lrm"))
    step(lrm)
    assert lrm.status == "wait_for_agent_lock" and "ha_agent_n1_lock" not in hw.cluster_locks
    assign(hw, vm_100=("started", "u1"))
    step(lrm)
    assert lrm.status == "active" and hw.cluster_locks["ha_agent_n1_lock"]["node"] == "n1"
    assert "vm:100" in hw.running["n1"]
    assert hw.lrm_status["n1"]["results"]["u1"]["exit_code"] == st.SUCCESS


def test_a_node_being_fenced_never_takes_its_lock() -> None:
    hw = cluster({"vm:100": {"node": "n1", "state": "started"}})
    lrm = LRM(SimEnv(hw, "n1", "lrm"))
    assign(hw, vm_100=("started", "u1"))
    hw.manager_status["node_status"]["n1"] = "fence"
    step(lrm)
    assert lrm.status == "wait_for_agent_lock" and not hw.running["n1"]


def test_same_uid_never_runs_twice_and_stale_results_are_dropped() -> None:
    # fa:1100: the first start fails; with max_restart 0 that is an ERROR result
    hw = cluster({"fa:1100": {"node": "n1", "state": "started", "max_restart": 0}})
    lrm = LRM(SimEnv(hw, "n1", "lrm"))
    assign(hw, fa_1100=("started", "u1"))
    step(lrm)
    assert lrm.results["u1"]["exit_code"] == st.ERROR
    tries = hw.fail_tries["start"].get("1100")
    step(lrm)  # the master has not handed out a new uid: no second attempt behind its back
    assert hw.fail_tries["start"].get("1100") == tries and not hw.running["n1"]
    assign(hw, fa_1100=("started", "u2"))  # the master decided: try again
    step(lrm)
    assert "fa:1100" in hw.running["n1"]
    assert set(lrm.results) == {"u2"}  # u1's result is no longer of use to anyone


def test_restart_policy_retries_quietly_then_reports() -> None:
    hw = cluster({"fa:1200": {"node": "n1", "state": "started", "max_restart": 1}})
    lrm = LRM(SimEnv(hw, "n1", "lrm"))
    assign(hw, fa_1200=("started", "u1"))
    step(lrm)
    assert "u1" not in lrm.results  # first failure: retried, nothing reported yet
    step(lrm)
    assert lrm.results["u1"]["exit_code"] == st.ERROR
    text = hw.log_text()
    assert "restart policy: retry number 1 for service 'fa:1200'" in text
    assert "unable to start service fa:1200 on local node after 1 retries" in text


class ThreadedEnv(SimEnv):
    """Workers in real threads, as RealEnv runs them; counts the peak concurrency."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.threads: dict[str, tuple[threading.Thread, list]] = {}
        self.active = 0
        self.peak = 0
        self.mutex = threading.Lock()

    def submit_worker(self, uid: str, fn: Callable[[], Any]) -> None:
        box: list = []

        def run() -> None:
            with self.mutex:
                self.active += 1
                self.peak = max(self.peak, self.active)
            time.sleep(0.05)
            with self.mutex:
                box.append(fn())
                self.active -= 1

        t = threading.Thread(target=run)
        self.threads[uid] = (t, box)
        t.start()

    def collect_workers(self) -> dict[str, Any]:
        done = {u: box[0] for u, (t, box) in self.threads.items() if not t.is_alive() and box}
        for u in done:
            del self.threads[u]
        return done

    def running_workers(self) -> int:
        return sum(1 for t, _ in self.threads.values() if t.is_alive())


def test_at_most_max_worker_commands_run_at_once() -> None:
    services = {f"vm:{100 + i}": {"node": "n1", "state": "started"} for i in range(7)}
    hw = cluster(services, {"max_worker": 2})
    env = ThreadedEnv(hw, "n1", "lrm")
    lrm = LRM(env)
    assign(hw, **{f"vm_{100 + i}": ("started", f"u{i}") for i in range(7)})
    for _ in range(200):
        step(lrm)
        if len(hw.running["n1"]) == 7 and not env.threads:
            break
        time.sleep(0.01)
    assert len(hw.running["n1"]) == 7
    assert env.peak == 2


def test_shutdown_stop_queued_during_a_running_start_is_not_lost() -> None:
    hw = cluster({"vm:100": {"node": "n1", "state": "started"}})
    env = ThreadedEnv(hw, "n1", "lrm")
    lrm = LRM(env)
    assign(hw, vm_100=("started", "u1"))
    step(lrm)  # the start is now running in its worker thread
    assert lrm.workers["vm:100"].get("running")
    hw.status["n1"]["shutdown"] = "shutdown"
    lrm.shutdown_request()  # queues a stop while the start still runs
    for _ in range(200):
        lrm.env.loop_start(lrm.env.cur_time + 10)
        alive = lrm.do_one_iteration()
        lrm.env.loop_end()
        if not alive:
            break
        time.sleep(0.01)
    assert not alive
    assert "vm:100" not in hw.running["n1"], "the LRM exited leaving its service running"


class NoWatchdogEnv(SimEnv):
    """The watchdog-mux is not there: opening a watchdog fails."""

    def watchdog_open(self) -> Any:
        raise ConnectionRefusedError("watchdog-mux socket: connection refused")


def test_no_watchdog_means_no_lock_and_nothing_runs() -> None:
    hw = cluster({"vm:100": {"node": "n1", "state": "started"}})
    lrm = LRM(NoWatchdogEnv(hw, "n1", "lrm"))
    assign(hw, vm_100=("started", "u1"))
    for _ in range(3):
        step(lrm)
    assert lrm.status == "wait_for_agent_lock"
    assert "ha_agent_n1_lock" not in hw.cluster_locks  # given back each time
    assert not hw.running["n1"]
    assert "cannot arm the watchdog, giving the agent lock back" in hw.log_text()
