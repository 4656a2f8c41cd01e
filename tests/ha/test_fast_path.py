"""The fast path of fencing (docs/fencing.md), unit by unit: the master's node step takes
the agent lock at once only when the Env says it safely can, a power-fenced node gets no
fence delay, and :mod:`hafence.ha.takeover` judges whether a fenced node fell silent.

The whole path with real daemons, a real BMC and both stores is in
``tests/daemons/test_fast_failover.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hafence.ha.env import FENCE_OK, FENCE_PENDING
from hafence.ha.nodestatus import NodeStatus
from hafence.ha.takeover import LYING, SILENT, TOLERANCE, WAIT, Takeover
from hafence.sim.env import SimEnv
from hafence.sim.hardware import Hardware
from hafence.store import EmbeddedStore

NODES = {"node1": {"online": True}, "node2": {"online": True}}


class FastEnv(SimEnv):
    """The simulator's Env, with a hardware fence whose result the test sets and a fast
    path that says yes or no."""

    def __init__(self, hw: Hardware, fast: bool, power_nodes: set[str] = frozenset()) -> None:
        super().__init__(hw, "node2", "crm")
        self.fast = fast
        self.power_nodes = power_nodes
        self.hw_result = FENCE_PENDING
        self.takeovers: list[str] = []

    def fence_start(self, node: str) -> str:
        return self.hw_result

    def fence_poll(self, node: str) -> str:
        return self.hw_result

    def take_over_agent_lock(self, node: str) -> bool:
        self.takeovers.append(node)
        return self.fast

    def fence_delay_for(self, node: str, default: float) -> float:
        return 0.0 if node in self.power_nodes else default


def make(fast: bool, power_nodes: set[str] = frozenset()) -> tuple[NodeStatus, FastEnv, Hardware]:
    hw = Hardware(status={n: {"power": "on", "network": "on"} for n in NODES})
    env = FastEnv(hw, fast, power_nodes)
    ns = NodeStatus(env, {})
    ns.update(NODES, {})
    # node1's LRM holds its agent lock: only a takeover ends the fence before it expires
    hw.cluster_locks["ha_agent_node1_lock"] = {"node": "node1", "time": 0}
    return ns, env, hw


def test_confirmed_off_and_silent_takes_the_lock_at_once() -> None:
    ns, env, _ = make(fast=True)
    assert not ns.fence_node("node1")  # the fence runs
    assert ns.fencing["node1"]["step"] == "fencing" and env.takeovers == []
    env.hw_result = FENCE_OK
    assert ns.fence_node("node1")  # confirmed: taken over, long before the lock expires
    assert env.takeovers == ["node1"]
    assert ns.get("node1") == "unknown" and "node1" not in ns.fencing


def test_without_the_fast_path_the_lease_must_expire() -> None:
    ns, env, _ = make(fast=False)  # a fabric device, a lying BMC, a node not yet silent
    env.hw_result = FENCE_OK
    assert not ns.fence_node("node1")
    assert ns.fencing["node1"]["step"] == "confirmed off, waiting for agent lock"
    env.cur_time = 121  # the lock expired: the node's watchdog has reset it
    assert ns.fence_node("node1")


def test_a_fence_ack_never_takes_the_fast_path() -> None:
    ns, env, _ = make(fast=True)
    ns.update({"node2": {"online": True}}, {})
    assert ns.acknowledge("node1", "root@node2", 0)
    assert not ns.fence_node("node1")  # a person's word: the lock must still expire
    assert env.takeovers == []
    assert ns.fencing["node1"]["step"] == "confirmed off by hand, waiting for agent lock"


def test_a_node_with_a_power_device_is_fenced_without_delay() -> None:
    ns, env, _ = make(fast=True, power_nodes={"node1"})
    env.cur_time = 10
    ns.update({"node1": {"online": False}, "node2": {"online": False}}, {})
    assert ns.offline_delayed("node1")  # no delay: its power-off recovers at once
    assert not ns.offline_delayed("node2")  # the configured delay (60 s)
    env.cur_time = 60
    assert ns.offline_delayed("node2")


def test_a_node_seen_online_is_never_offline_delayed() -> None:
    ns, _, _ = make(fast=True, power_nodes={"node1"})
    ns.update(NODES, {"node1": "maintenance"})  # online, but not 'online': maintenance
    assert ns.get("node1") == "maintenance"
    assert not ns.offline_delayed("node1")


def test_a_new_master_fences_a_power_node_without_waiting() -> None:
    hw = Hardware(status={n: {"power": "on", "network": "on"} for n in NODES})
    env = FastEnv(hw, True, {"node1"})
    ns = NodeStatus(env, {"node1": "online", "node2": "online"})
    ns.update({"node1": {"online": False}, "node2": {"online": True}}, {})
    assert ns.offline_delayed("node1")  # nothing to count down from
    assert not ns.offline_delayed("node2")


# -- is the node silent? ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


AGENT = "ha_agent_node1_lock"
ALIVE = "ha_node_node1_alive"


@pytest.fixture
def world(tmp_path: Path) -> tuple[EmbeddedStore, Takeover, Clock]:
    clock = Clock()
    store = EmbeddedStore(tmp_path / "ha", clock=clock)
    return store, Takeover(store, lambda n: f"ha_node_{n}_alive", clock), clock


def _node1_dies(store: EmbeddedStore, clock: Clock) -> None:
    """node1 renews its membership (5 s) and agent lock (20 s), then dies; 6 s pass."""
    assert store.acquire_lease(ALIVE, "node1", 5)
    assert store.acquire_lease(AGENT, "node1", 20)
    clock.now += 6


def test_silent_since_the_fence_began(world: Any) -> None:
    store, t, clock = world
    _node1_dies(store, clock)
    t.begin("node1", [AGENT])
    clock.now += 0.5  # the power-off is confirmed
    assert t.judge("node1", [AGENT]) == SILENT


def test_no_baseline_no_early_takeover(world: Any) -> None:
    store, t, clock = world
    _node1_dies(store, clock)
    assert t.judge("node1", [AGENT]) == WAIT  # a fence this process did not watch begin


def test_alive_during_the_fence_then_off_waits_for_its_membership(world: Any) -> None:
    store, t, clock = world
    _node1_dies(store, clock)
    t.begin("node1", [AGENT])
    assert store.acquire_lease(ALIVE, "node1", 5)  # it came back while being fenced
    assert store.acquire_lease(AGENT, "node1", 20)
    t.seen_alive("node1")
    clock.now += 0.5  # then its power went off, confirmed
    assert t.judge("node1", [AGENT]) == WAIT  # alive since the fence began
    clock.now += 3
    assert t.judge("node1", [AGENT]) == WAIT  # its membership has not run out yet
    clock.now += 2  # ... now it has, and nothing was renewed since the confirmation
    assert t.judge("node1", [AGENT]) == SILENT


def test_renewing_after_the_confirmation_is_a_lying_device(world: Any) -> None:
    store, t, clock = world
    _node1_dies(store, clock)
    t.begin("node1", [AGENT])
    assert store.acquire_lease(ALIVE, "node1", 5)  # thawed: renews again
    clock.now += 0.5  # the BMC says off
    assert t.judge("node1", [AGENT]) == WAIT
    clock.now += TOLERANCE + 0.5
    assert store.acquire_lease(ALIVE, "node1", 5)  # still renewing: the BMC lied
    assert t.judge("node1", [AGENT]) == LYING
    clock.now += 30  # everything expired since: a lying device stays distrusted
    assert t.judge("node1", [AGENT]) == LYING
    t.end("node1")  # a new episode starts afresh
    assert not t.watching("node1")


def test_a_fresh_lock_of_another_incarnation_is_a_renewal(world: Any, monkeypatch: Any) -> None:
    store, t, clock = world
    _node1_dies(store, clock)
    t.begin("node1", [AGENT])
    clock.now += 15  # the old agent lock expired; node1 reboots and takes a fresh one
    monkeypatch.setattr("hafence.store.embedded.incarnation", lambda o: f"{o}@reboot:1:1")
    assert store.acquire_lease(AGENT, "node1", 20)
    assert t.judge("node1", [AGENT]) == WAIT  # renewed since the fence began


def test_a_lock_the_master_holds_is_not_the_node_renewing(world: Any) -> None:
    store, t, clock = world
    _node1_dies(store, clock)
    t.begin("node1", [AGENT])
    clock.now += 15  # the agent lock expired; the master takes it (lease expiry rule)
    assert store.acquire_lease(AGENT, "node2", 20)
    assert t.judge("node1", [AGENT]) == SILENT


# -- the LRM acts on a status read after its lock ----------------------------------------


class ChangesWhileLocking(SimEnv):
    """The master changes the manager status between the LRM's first read of a round
    and its lock: ``change`` applied to the status when the lock is taken."""

    change: Any = None

    def get_ha_agent_lock(self, node: str | None = None) -> bool:
        got = super().get_ha_agent_lock(node)
        type(self).change(self.hw.manager_status)
        return got


def _recovered_elsewhere(ms: dict[str, Any]) -> None:
    ms["service_status"]["vm:100"].update(node="n2", uid="u2")
    ms["node_status"]["n1"] = "unknown"


def _node_fenced(ms: dict[str, Any]) -> None:
    ms["node_status"]["n1"] = "fence"


@pytest.mark.parametrize("change", [_recovered_elsewhere, _node_fenced])
def test_an_lrm_acts_only_on_a_status_read_after_its_lock(change: Any) -> None:
    from hafence.ha.lrm import LRM

    hw = Hardware(status={n: {"power": "on", "network": "on", "shutdown": None}
                          for n in ("n1", "n2")},
                  service_config={"vm:100": {"node": "n1", "state": "started"}})  # fmt: skip
    hw.manager_status = {
        "master_node": "n2",
        "node_status": {"n1": "online", "n2": "online"},
        "service_status": {"vm:100": {"state": "started", "node": "n1", "uid": "u1"}},
    }
    env = type("Env", (ChangesWhileLocking,), {"change": staticmethod(change)})(hw, "n1", "lrm")
    lrm = LRM(env)
    env.loop_start(10)
    assert lrm.do_one_iteration()
    assert lrm.status == "active"  # it took the lock on the first read ...
    assert "vm:100" not in hw.running.get("n1", set())  # ... and acted on the second
