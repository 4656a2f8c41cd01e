"""Randomized fault injection on the simulator, checked against the simulated hardware.

:func:`random_cluster` builds a cluster from a seed: 3-5 nodes, services spread over them,
for some nodes a fence chain of one to three levels (a BMC, a pair of PDU outlets that
must both switch off, a second BMC) whose devices work, fail a few times, never answer,
flake, stick (accept off, stay on), lie (report off, stay on) or answer slowly, fenced by
the real fencer with 0-2 retries and back-off; watchdogs that reset up to 10 s after
their timeout; sometimes an HA group and a resource-affinity rule, a random shutdown
policy, and a command list of crashes, network cuts, reboots, shutdowns, LRM restarts,
maintenance, disarming the HA stack, migrations and service state changes.

:class:`SafetyChecker` judges only the *hardware truth* (which node really runs what,
really has power, really has an armed watchdog, was really switched off by a fence
device, and when), never the CRM's or LRM's bookkeeping or what a fence device answered,
and records every violation of:

1. a service never runs on two nodes at once;
2. a fenced node's service is recovered only when that node really cannot run it: it is
   not *live* (powered and running services or holding an armed watchdog, i.e. an LRM
   or CRM that holds or held its lock and has not been reset);
3. a node with a fence chain is recovered only after every device of one of its levels
   really switched its supply off (or found it off) on an off request since the node was
   last live, or an admin acknowledged it by hand while it really was off: a failed
   hardware fence blocks recovery. A chain with a device declared ``fault=lying`` in
   fence.cfg is exempt, since no fencer can tell a liar (rule 2 still holds: the node's
   watchdog must have reset it);
4. a fence device cuts a node only after that node has been out of the cluster for the
   fence delay (less one simulator round, by which the master's view may lag).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hafence.fence import Level, parse_fence_config
from hafence.ha.nodestatus import FENCE_DELAY
from hafence.sim.hardware import Hardware
from hafence.sim.power import DeviceState


@dataclass
class SafetyChecker:
    """Watches one simulated cluster; ``fence_delay`` is the delay the cluster runs with
    (a setting of the cluster, so a broken product cannot change the checker's view)."""

    hw: Hardware
    fence_delay: float = FENCE_DELAY
    violations: list[str] = field(default_factory=list)
    starts: int = 0
    recoveries: int = 0
    fence_cuts: int = 0

    def __post_init__(self) -> None:
        self.hw.on_service_change.append(self._service_change)
        self.hw.on_recover.append(self._recover)
        self.hw.fencing.on_cut.append(self._cut)

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
        if target == fenced:
            return  # back to the node itself, once it is up again: no second copy
        if sid in hw.running[fenced]:
            self._violation(f"{sid} recovered to {target} while still running on {fenced}")
        elif hw.is_live(fenced):
            armed = any(wd["node"] == fenced for wd in hw.watchdogs.values())
            what = "an armed watchdog" if armed else f"services {sorted(hw.running[fenced])}"
            self._violation(f"{sid} recovered to {target} while {fenced} had power and {what}")
        chain = self._chain(fenced)
        if not chain or self._lying(chain):
            return
        live = hw.last_live.get(fenced, 0.0)
        acked, really_off = hw.fence_acks.get(fenced, (-1.0, False))
        if not self._fenced(fenced, chain, live) and not (really_off and acked >= live):
            self._violation(
                f"{sid} recovered from {fenced} without a confirmed hardware fence: no level "
                f"of its chain switched it off since it last could run services (t={int(live)})"
            )

    def _cut(self, node: str, when: float) -> None:
        self.fence_cuts += 1
        hw = self.hw
        info, _ = hw.node_info()
        if info[node]["online"]:
            return  # back already: an attempt started while it was out may still finish
        out_for = when - hw.out_since.get(node, 0.0)
        lag = max(20.0, 2 * len(hw.nodes) * hw.iteration_seconds) + 2 * hw.iteration_seconds
        if out_for < self.fence_delay - lag:
            self._violation(
                f"a fence device cut {node} {out_for:g}s after it dropped out, before the "
                f"fence delay ({self.fence_delay:g}s)"
            )

    def _chain(self, node: str) -> list[Level]:
        if not self.hw.fencing.config:
            return []
        return parse_fence_config(self.hw.fencing.config).chain(node)

    def _fenced(self, node: str, chain: list[Level], since: float) -> bool:
        """Whether at some time from ``since`` on every device of one level had its supply
        of ``node`` really off through its own off request: the hardware's side of a
        confirmed fence."""
        devices = self.hw.fencing.devices
        for level in chain:
            states = [devices.get((d.label, node), DeviceState()) for d in level.devices]
            moments = {since} | {start for st in states for start, _ in st.offs if start > since}
            if any(all(st.off_at(t) for st in states) for t in moments):
                return True
        return False

    @staticmethod
    def _lying(chain: list[Level]) -> bool:
        devices = (d for level in chain for d in level.devices)
        return any(d.options().get("fault") == "lying" for d in devices)

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
        watchdog_slack=10.0,
    )
    hw.fencing.rng.seed(seed)
    hw.fencing.retries = rnd.choice((0, 0, 1, 2))
    hw.fencing.backoff = rnd.choice((0.5, 2.0, 8.0))
    hw.fencing.set_config(random_fence_config(rnd, nodes))
    return hw


# fault= of a random device, with weights: mostly working, every fault kind now and then
_FAULTS = {"none": 40, "fails": 10, "always": 8, "flaky": 10, "stuck": 14, "lying": 6,
           "unreachable": 8}  # fmt: skip


def _device_args(rnd: random.Random) -> str:
    fault = rnd.choices(list(_FAULTS), weights=list(_FAULTS.values()))[0]
    args = [f"fault={fault}"]
    if fault == "fails":
        args.append(f"fault_count={rnd.randint(1, 3)}")
    if rnd.random() < 0.3:  # slow; beyond timeout= it runs into the fencer's bound
        args.append(f"latency={rnd.choice((0.5, 3, 12))}")
    if rnd.random() < 0.3:
        args.append(f"power_timeout={rnd.choice((5, 20))} poll_interval={rnd.choice((0.5, 2))}")
    if rnd.random() < 0.2:
        args.append(f"power_wait={rnd.choice((1, 4))}")
    if rnd.random() < 0.2:
        args.append(f"delay={rnd.choice((0, 5))} delay_max={rnd.choice((0, 10))}")
    return " ".join(args)


def random_fence_config(rnd: random.Random, nodes: list[str]) -> str:
    """fence.cfg for some of ``nodes``: chains of up to three levels in this order, each
    present or not per node: its own BMC, a shared PDU whose two outlets feed the node's
    two supplies (both must switch off), a second BMC of its own."""
    fenced = [n for n in nodes if rnd.random() < 0.6]  # the others: watchdog only
    chains = {n: rnd.choice(((1,), (1,), (2,), (1, 2), (1, 3), (1, 2, 3))) for n in fenced}
    lines: list[str] = []
    for n in fenced:
        if 1 in chains[n]:
            lines += [f"device bmc-{n} sim_power {_device_args(rnd)}",
                      f"connect bmc-{n} node={n} plug={n}"]  # fmt: skip
    pdu = [n for n in fenced if 2 in chains[n]]
    for outlet in (1, 2) if pdu else ():
        lines.append(f"device pdu:{outlet} sim_power {_device_args(rnd)}")
        lines += [f"connect pdu:{outlet} node={n} plug={n} supply=psu{outlet}" for n in pdu]
    for n in fenced:
        if 3 in chains[n]:
            lines += [f"device ipmi-{n} sim_power {_device_args(rnd)}",
                      f"connect ipmi-{n} node={n} plug={n}"]  # fmt: skip
    return "".join(f"{line}\n" for line in lines)


def _random_event(rnd: random.Random, nodes: list[str], sids: list[str]) -> str:
    node = rnd.choice(nodes)
    other = rnd.choice(nodes)
    roll = rnd.random()
    if roll < 0.15:
        return f"power {node} off"
    if roll < 0.27:
        return f"power {node} on"
    if roll < 0.44:
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
