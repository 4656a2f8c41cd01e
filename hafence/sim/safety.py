"""Randomized fault injection on the simulator, checked against the simulated hardware.

:func:`random_cluster` builds a cluster from a seed: 3-5 nodes, services spread over them,
some nodes with a hardware fence device (working, flaky or broken), sometimes an HA group
and a resource-affinity rule, a random shutdown
policy, and a command list of crashes, network cuts, reboots, shutdowns, LRM restarts,
maintenance, disarming the HA stack, migrations and service state changes.
:class:`SafetyChecker` watches the *hardware truth* (which node really runs what, which
node is really down), never the CRM's own view, and records every violation of:

1. a service never runs on two nodes at once;
2. a fenced node's service is recovered only when that node is really gone: it runs no
   copy; its LRM is not active unless the node lost power (watchdog or fence device) after
   it dropped out of the cluster; and when it has a fence device, that device confirmed
   the power-off after the node's LRM was last active (a failed hardware fence blocks
   recovery).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hafence.sim.hardware import Hardware


@dataclass
class SafetyChecker:
    hw: Hardware
    violations: list[str] = field(default_factory=list)
    starts: int = 0
    recoveries: int = 0

    def __post_init__(self) -> None:
        self.hw.on_service_change.append(self._service_change)
        self.hw.on_recover.append(self._recover)

    def _service_change(self, node: str, sid: str, started: bool) -> None:
        if not started:
            return
        self.starts += 1
        others = [n for n, run in self.hw.running.items() if n != node and sid in run]
        if others:
            self._violation(f"{sid} started on {node} while running on {', '.join(others)}")

    def _recover(self, sid: str, fenced: str, target: str) -> None:
        self.recoveries += 1
        hw = self.hw
        if sid in hw.running[fenced]:
            self._violation(f"{sid} recovered to {target} while still running on {fenced}")
        down = hw.last_down.get(fenced, 0.0)
        lrm = hw.nodes[fenced].lrm
        if lrm is not None and lrm.status == "active" and hw.last_poweroff.get(fenced, -1.0) < down:
            self._violation(
                f"{sid} recovered to {target} while {fenced} never lost power and its LRM is active"
            )
        dev = hw.fence_devices.get(fenced)
        if dev is not None and target != fenced:
            # the device must have confirmed the power-off after the LRM last ran there,
            # or an admin who acknowledged it by hand while the node really was off
            active = hw.last_active.get(fenced, -1.0)
            acked, really_off = hw.fence_acks.get(fenced, (-1.0, False))
            by_device = dev.last_ok is not None and dev.last_ok >= active
            if not by_device and not (really_off and acked >= active):
                self._violation(f"{sid} recovered from {fenced} without a confirmed hardware fence")

    def _violation(self, msg: str) -> None:
        self.violations.append(f"t={int(self.hw.cur_time)}: {msg}")


def random_cluster(seed: int) -> Hardware:
    """A reproducible random cluster and command list for ``seed``."""
    rnd = random.Random(seed)
    nodes = [f"node{i}" for i in range(1, rnd.randint(3, 5) + 1)]
    services: dict[str, dict] = {}
    for i in range(rnd.randint(1, 2 * len(nodes))):
        kind = rnd.choice(("vm", "vm", "ct", "fa"))
        num = 100 + i if kind != "fa" else int(f"1{rnd.choice('0001')}{rnd.choice('001')}{i % 10}")
        services[f"{kind}:{num}"] = {
            "node": rnd.choice(nodes),
            "state": rnd.choice(("started", "started", "started", "stopped")),
            "max_restart": rnd.randint(0, 2),
            "max_relocate": rnd.randint(0, 2),
        }
    # placement rules: an HA group, a node-affinity and a resource-affinity rule, sometimes
    sids = sorted(services)
    groups: dict[str, dict] = {}
    rules: dict[str, dict] = {}
    if rnd.random() < 0.4:
        members = rnd.sample(nodes, rnd.randint(1, len(nodes) - 1))
        groups["g"] = {
            "nodes": {n: rnd.randint(0, 2) for n in members},
            "restricted": rnd.random() < 0.5,
            "nofailback": rnd.random() < 0.5,
        }
        for sid in rnd.sample(sids, rnd.randint(1, len(sids))):
            services[sid]["group"] = "g"
    if len(sids) >= 2 and rnd.random() < 0.4:
        pair = rnd.sample(sids, 2)
        rules["ra"] = {
            "type": "resource-affinity",
            "resources": pair,
            "affinity": rnd.choice(("positive", "negative")),
        }
    policy = rnd.choice(("conditional", "freeze", "failover", "migrate"))
    cmdlist: list[list[str]] = [[f"power {n} on" for n in nodes]]
    for _ in range(rnd.randint(3, 8)):
        cmdlist.append(
            [_random_event(rnd, nodes, sorted(services)) for _ in range(rnd.randint(1, 2))]
        )
    hw = Hardware(
        status={n: {"power": "off", "network": "off", "shutdown": None} for n in nodes},
        service_config=services,
        groups=groups,
        rules=rules,
        datacenter={"ha": {"shutdown_policy": policy}},
        cmdlist=cmdlist,
    )
    for n in nodes:
        kind = rnd.random()
        if kind < 0.4:
            continue  # watchdog self-fencing only
        fails = 0 if kind < 0.7 else (-1 if kind > 0.9 else rnd.randint(1, 3))
        hw.add_fence_device(n, fails)
    return hw


def _random_event(rnd: random.Random, nodes: list[str], sids: list[str]) -> str:
    node = rnd.choice(nodes)
    other = rnd.choice(nodes)
    roll = rnd.random()
    if roll < 0.15:
        return f"power {node} off"
    if roll < 0.30:
        return f"power {node} on"
    if roll < 0.42:
        return f"network {node} off"
    if roll < 0.52:
        return f"network {node} on"
    if roll < 0.57:
        return f"reboot {node}"
    if roll < 0.61:
        return f"shutdown {node}"
    if roll < 0.65:
        return f"restart-lrm {node}"
    if roll < 0.68:
        return f"crm {node} {rnd.choice(('enable', 'disable'))}-node-maintenance"
    if roll < 0.70:
        return rnd.choice(
            (f"crm {node} disarm-ha freeze", f"crm {node} disarm-ha ignore", f"crm {node} arm-ha")
        )
    if roll < 0.75:
        return f"delay {rnd.choice((0, 50, 150))}"
    if not sids:
        return "delay 0"
    sid = rnd.choice(sids)
    if roll < 0.87:
        return f"service {sid} {rnd.choice(('migrate', 'relocate'))} {other}"
    return f"service {sid} {rnd.choice(('started', 'started', 'stopped', 'disabled'))}"


def check_seed(seed: int) -> SafetyChecker:
    """Run one random cluster to its end; the checker holds what went wrong."""
    hw = random_cluster(seed)
    checker = SafetyChecker(hw)
    hw.run()
    return checker
