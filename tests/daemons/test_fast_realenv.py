"""The fast path's premises on the real Env (hafence.ha.realenv), both stores, real peers.

Each node other than the one under test is a process of its own (``node_leases``): its
leases name its own incarnation, and when it exits its leases run out as a dead node's
do. Fences go to a real ipmi_sim BMC (power) or a real snmpsim switch (fabric).
docs/fencing.md lists which premise each test breaks.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hafence.ha import state as st
from hafence.ha.env import FENCE_IDLE, FENCE_OK, FENCE_PENDING
from hafence.ha.nodestatus import NodeStatus
from hafence.ha.realenv import RealEnv, StatusWriteRefused, Timings, node_alive_lease
from hafence.simdevices.ipmi_sim import IpmiSim
from hafence.simdevices.ipmi_sim import available as ipmi_sim_available
from hafence.store import Store, open_store
from tests.daemons.test_realenv import until

ROOT = Path(__file__).resolve().parents[2]
# locks long enough that nothing in a test can be their expiry: what happens early is
# the fast path or nothing
T = Timings(interval=0.5, lease_ttl=60, watchdog_timeout=5, fence_delay=30, node_timeout=2)
AGENT1 = st.agent_lock_name("node1")


@pytest.fixture
def store(spec: str) -> Iterator[Store]:
    s = open_store(spec)
    yield s
    s.close()


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[IpmiSim]:
    if not ipmi_sim_available():
        pytest.skip("OpenIPMI ipmi_sim not installed (scripts/install.sh installs it)")
    with IpmiSim(workdir=tmp_path / "bmc") as sim:
        yield sim


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def node_leases(procs: list[Any], spec: str, node: str, *args: str) -> subprocess.Popen[str]:
    """``node``'s leases taken by a process of its own; returns once it holds them."""
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.daemons.node_leases", spec, node, *args],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    procs.append(p)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def master(tmp_path: Path, store: Store, fence_cfg: str, node: str = "node2") -> RealEnv:
    cfg = tmp_path / "fence.cfg"
    cfg.write_text(fence_cfg)
    cfg.chmod(0o600)
    env = RealEnv(node, store, timings=T, fence_config=cfg)
    assert env.heartbeat()  # alive, and says which fence.cfg it uses
    return env


def bmc_cfg(bmc: IpmiSim, **extra: Any) -> str:
    return f"device bmc1 ipmi {bmc.fence_cfg_args(**extra)}\nconnect bmc1 node=node1\n"


def dead_node1(procs: list[Any], spec: str, env: RealEnv) -> None:
    """node1 held its membership and agent lock, and died: its membership ran out."""
    node_leases(procs, spec, "node1", "--alive", "1", "--agent", str(T.lease_ttl))
    procs[-1].wait()
    until(lambda: not env.node_alive("node1"), "node1's membership to run out")


@contextlib.contextmanager
def fencing(tmp_path: Path, spec: str, store: Store, procs: Any, cfg: str) -> Iterator[Any]:
    """node2 as master with fence.cfg ``cfg``, node1 dead: ``(node2's env, its NodeStatus)``."""
    env = master(tmp_path, store, cfg)
    try:
        assert env.get_ha_manager_lock()
        dead_node1(procs, spec, env)
        yield env, NodeStatus(env, {"node1": "unknown", "node2": "online"})
    finally:
        env.close()


def fence_rounds(env: RealEnv, ns: NodeStatus, stop: Any = None, limit: float = 30.0) -> bool:
    """The master's fence step, a round at a time, until it is done (True) or ``stop()``
    holds after a round (False); the status is written each round, as the master's flush
    does. ``limit`` bounds a hang."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done = ns.fence_node("node1")
        env.write_manager_status({"node_status": dict(ns.status), "service_status": {}})
        if done:
            return True
        if stop is not None and stop():
            return False
        time.sleep(0.1)
    raise AssertionError("the fence step neither finished nor reached its stop condition")


def rounds_after_confirmation(env: RealEnv, n: int = 3) -> Any:
    """A stop condition: ``n`` rounds after the fence confirmed the off."""
    seen = []

    def stop() -> bool:
        if env.fence_poll("node1") == FENCE_OK:
            seen.append(1)
        return len(seen) > n

    return stop


def test_a_power_off_confirmed_and_a_silent_node_free_its_lock_at_once(
    tmp_path: Path, spec: str, store: Store, bmc: IpmiSim, procs: Any, caplog: Any
) -> None:
    with fencing(tmp_path, spec, store, procs, bmc_cfg(bmc)) as (env, ns):
        assert env.fence_delay_for("node1", T.fence_delay) == 0  # a power device: no delay
        with caplog.at_level(logging.INFO, "hafence.ha"):
            assert fence_rounds(env, ns)  # long before the 60 s lock could expire
        assert bmc.power == "off"
        assert store.lease_owner(AGENT1) == "node2"
        assert "confirmed off by power device(s) bmc1 and silent since: took over its agent " \
            "lock" in caplog.text  # fmt: skip


def test_no_power_off_before_the_status_says_fence(
    tmp_path: Path, spec: str, store: Store, bmc: IpmiSim, procs: Any
) -> None:
    """A node powered on again must find its services in 'fence' (and start none): the
    master powers it off only once the status it wrote says so."""
    with fencing(tmp_path, spec, store, procs, bmc_cfg(bmc)) as (env, ns):
        assert not ns.fence_node("node1") and ns.get("node1") == "fence"
        assert env.fence_start("node1") == FENCE_PENDING
        time.sleep(1)  # an ipmi_sim power-off takes well under a second
        assert bmc.power == "on" and bmc.power_calls() == []
        env.write_manager_status({"node_status": dict(ns.status), "service_status": {}})
        assert fence_rounds(env, ns)
        assert bmc.power == "off"


def test_a_fabric_device_keeps_the_lease_expiry_rule(
    tmp_path: Path, spec: str, store: Store, procs: Any, caplog: Any
) -> None:
    from hafence.simdevices.snmp_agent import snmp_agent

    pytest.importorskip("pysnmp")
    with snmp_agent(workdir=tmp_path / "snmp") as sw:
        cfg = (f"device sw snmp_ifmib {sw.cfg_args()} timeout=3 power_timeout=4\n"
               "connect sw node=node1 plug=Gi1/0/1\n")  # fmt: skip
        with fencing(tmp_path, spec, store, procs, cfg) as (env, ns):
            assert env.fence_delay_for("node1", T.fence_delay) == T.fence_delay
            # its port is shut, nothing more: rounds after that still wait for the lock
            assert not fence_rounds(env, ns, rounds_after_confirmation(env))
            assert sw.get_admin_status(1) == 2
            assert env.fencer.confirmed("node1") == {**env.fencer.confirmed("node1"),
                                                     "power": False}  # fmt: skip
            assert store.lease_owner(AGENT1) == "node1"  # its lock still runs out
            assert "took over" not in caplog.text
            assert ns.fencing["node1"]["lock"] == "lease expiry (not a power device)"


def test_a_node_renewing_after_its_power_off_is_a_lying_device(
    tmp_path: Path, spec: str, store: Store, bmc: IpmiSim, procs: Any, caplog: Any
) -> None:
    with fencing(tmp_path, spec, store, procs, bmc_cfg(bmc)) as (env, ns):
        with caplog.at_level(logging.INFO, "hafence.ha"):
            fence_rounds(env, ns, lambda: env.fence_poll("node1") != FENCE_IDLE)
            # the fence began (the master noted node1's leases); now node1 thaws (a frozen
            # node): it renews again, and its BMC says off anyway
            node_leases(procs, spec, "node1", "--alive", "2", "--agent", "60", "--renew", "0.3")
            until(lambda: env.fence_poll("node1") == FENCE_OK, "the BMC to report off")
            assert bmc.power == "off"
            # never taken over: first it waits (node1 renewed during the fence), then it
            # sees node1 renew after the BMC said off
            assert not fence_rounds(env, ns, lambda: "does not tell the truth" in caplog.text)
        lying = [r for r in caplog.records if "does not tell the truth" in r.getMessage()]
        assert len(lying) == 1 and lying[0].hafence_level == "email"  # alerted, once
        assert store.lease_owner(AGENT1) == "node1"
        procs[-1].kill()  # it dies after all: the lock must still expire first
        procs[-1].wait()
        until(lambda: not env.node_alive("node1"), "node1's membership to run out")
        assert not fence_rounds(env, ns, rounds_after_confirmation(env))
        assert ns.fencing["node1"]["lock"].startswith("lease expiry: the node renews")


def test_a_crm_fences_a_dead_masters_node_and_takes_the_manager_lock(
    tmp_path: Path, spec: str, store: Store, bmc: IpmiSim, procs: Any, caplog: Any
) -> None:
    # the master's node: its daemons renew its membership, the manager lock stays its own
    node1 = node_leases(procs, spec, "node1", "--alive", "1", "--agent", "60",
                        "--manager", "60", "--renew", "0.2")  # fmt: skip
    for n in ("node2", "node3"):  # nodes whose LRMs run
        store.write_lrm_status(n, {"state": "wait_for_agent_lock"})
    node2 = master(tmp_path, store, bmc_cfg(bmc))
    node3 = master(tmp_path, store, bmc_cfg(bmc), node="node3")
    try:
        for _ in range(3):  # a live master's node is never fenced for its lock
            assert not node2.get_ha_manager_lock()
            time.sleep(0.3)
        assert node2.fencer.progress("node1") is None and bmc.power == "on"
        node1.kill()  # now it dies holding the manager lock
        node1.wait()
        until(lambda: not node2.node_alive("node1"), "node1's membership to run out")

        def rounds() -> bool:  # both CRMs' rounds: heartbeat, then try for the lock
            assert node2.heartbeat() and node3.heartbeat()
            assert not node3.get_ha_manager_lock()  # node2, first by name, does it alone
            return node2.get_ha_manager_lock()

        with caplog.at_level(logging.INFO, "hafence.ha"):
            until(rounds, "node2 to take over the manager lock")
        assert store.lease_owner(st.MANAGER_LOCK) == "node2"  # not in 60 s: at once
        assert bmc.power == "off"
        assert "took over the manager lock of fenced master node 'node1'" in caplog.text
        assert node3.fencer.progress("node1") is None
    finally:
        node2.close()
        node3.close()


# -- incarnations ------------------------------------------------------------------------


def test_an_lrm_drops_the_lock_its_dead_earlier_incarnation_left(
    spec: str, store: Store, procs: Any, caplog: Any
) -> None:
    lrm = RealEnv("node1", store, role="lrm", timings=T)
    before = node_leases(procs, spec, "node1", "--agent", "60", "--renew", "0.3")
    old = store.lease_holder(AGENT1)["incarnation"]
    assert old != lrm.incarnation
    with caplog.at_level(logging.INFO, "hafence.ha"):
        assert not lrm.get_ha_agent_lock()  # the other process runs: never inherited
        before.kill()
        before.wait()
        assert lrm.get_ha_agent_lock()  # gone: a fresh lock, not the one it left
    assert store.lease_holder(AGENT1)["incarnation"] == lrm.incarnation
    assert f"of an earlier incarnation ({old}) dropped" in caplog.text
    assert lrm.get_ha_agent_lock()  # and from now on renewed as its own


def test_a_deposed_masters_late_status_write_is_refused(spec: str, store: Store) -> None:
    a = RealEnv("node1", store, timings=T)
    b = RealEnv("node2", open_store(spec), timings=T)
    try:
        assert a.get_ha_manager_lock()
        a.write_manager_status({"master_node": "node1", "node_status": {}, "timestamp": 1})
        store.release_lease(st.MANAGER_LOCK, "node1")  # node1 lost it (expired in life)
        assert b.get_ha_manager_lock()
        new = {"master_node": "node2", "node_status": {"node2": "online"}, "timestamp": 2}
        b.write_manager_status(new)
        late = {"master_node": "node1", "node_status": {"node1": "online"}, "timestamp": 3}
        with pytest.raises(StatusWriteRefused, match="no longer holds the manager lock"):
            a.write_manager_status(late)
        assert store.read_manager_status() == new
    finally:
        b.close()
        b.store.close()


def test_membership_is_the_node_not_the_process(store: Store, spec: str, procs: Any) -> None:
    """Both daemons of a node renew one membership lease: one of them is enough."""
    crm = RealEnv("node1", store, timings=T)
    assert crm.heartbeat()
    node_leases(procs, spec, "node1", "--alive", "2")  # the node's LRM renews it too
    assert store.lease_owner(node_alive_lease("node1")) == "node1"
    assert crm.heartbeat()
