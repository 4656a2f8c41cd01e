"""The faults a lab can inflict on a node, and how each is undone (``heal``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from hafence.lab.layout import LabError
from hafence.lab.node import DAEMONS, RESTARTED
from hafence.lab.physics import Machines, Physics

KINDS: dict[str, str] = {
    "kill": "crash the node: all its processes die at once; it stays down until healed",
    "freeze": "SIGSTOP the whole node (a hung kernel) or --daemon D (a GC pause)",
    "thaw": "SIGCONT what freeze stopped",
    "partition": "drop traffic between the node and --peers (default: every other node); "
    "--direction in|out|both (in: the node hears nothing from them)",
    "slow-net": "delay the node's link (--delay ms, needs sch_netem) and lose --loss %",
    "link-down": "shut the node's switch port over SNMP (what the fence's level 2 does)",
    "bmc-dead": "the node's BMC hangs: every request times out",
    "bmc-stuck": "the node's BMC accepts power-off but the power stays on",
    "bmc-flaky": "the node's BMC hangs and answers by turns",
    "etcd-stop": "stop the node's etcd member and keep it stopped",
    "kill-daemon": "SIGKILL --daemon etcd|mux|lrm|crm|web (systemd restarts all but the mux)",
    "restart": "systemctl restart --daemon etcd|lrm|crm|web (SIGTERM, then start)",
    "power-off": "hold the node's power button (as a fence through its BMC does)",
    "power-on": "press the node's power button",
    "heal": "undo every fault of the node and power it on",
}


class Faults:
    def __init__(self, machines: Machines, physics: Physics) -> None:
        self.m = machines
        self.physics = physics
        nodes = machines.layout.nodes
        self.blocked: dict[str, set[str]] = {n: set() for n in nodes}  # node <- peers
        self.loss: dict[str, int] = dict.fromkeys(nodes, 0)
        self.delay: dict[str, int] = dict.fromkeys(nodes, 0)

    def active(self, node: str) -> list[str]:
        """What is wrong with the node right now (for status)."""
        n = self.m.nodes[node]
        out = []
        if n.state == "halted":
            out.append("crashed")
        out += [f"frozen:{f}" for f in sorted(n.frozen)]
        if self.blocked[node]:
            out.append(f"deaf-to:{','.join(sorted(self.blocked[node]))}")
        if self.loss[node] or self.delay[node]:
            out.append(f"slow-net:{self.delay[node]}ms/{self.loss[node]}%")
        if node in self.m.bmcs.dead and node not in self.physics.flaky:
            out.append("bmc-dead")
        if node in self.physics.flaky:
            out.append("bmc-flaky")
        if self.m.bmcs.stuck(node):
            out.append("bmc-stuck")
        out += [f"held:{d}" for d in sorted(n.held)]
        return out

    def _render_net(self, node: str) -> None:
        addrs = [self.m.layout.node_addr(p) for p in self.blocked[node]]
        self.m.net.filter(node, addrs, self.loss[node])

    def _daemon(self, opts: Mapping[str, Any], allowed: tuple[str, ...] = DAEMONS) -> str:
        d = opts.get("daemon")
        if d not in allowed:
            raise LabError(f"--daemon must be one of {', '.join(allowed)}")
        return str(d)

    async def apply(self, node: str, kind: str, opts: Mapping[str, Any]) -> dict[str, Any]:
        self.m.layout.index(node)  # a clear error for an unknown node
        n = self.m.nodes[node]
        now = time.monotonic()
        info: dict[str, Any] = {}
        if kind == "kill":
            n.die("crash")
            n.state = "halted"
        elif kind == "freeze":
            d = opts.get("daemon")
            n.freeze(self._daemon(opts) if d else None)
        elif kind == "thaw":
            n.thaw()
        elif kind == "partition":
            peers = opts.get("peers") or [p for p in self.m.layout.nodes if p != node]
            for p in peers:
                self.m.layout.index(p)
            direction = opts.get("direction", "both")
            if direction not in ("in", "out", "both"):
                raise LabError("--direction must be in, out or both")
            if direction in ("in", "both"):
                self.blocked[node] |= set(peers) - {node}
                self._render_net(node)
            if direction in ("out", "both"):
                for p in peers:
                    if p != node:
                        self.blocked[p].add(node)
                        self._render_net(p)
        elif kind == "slow-net":
            self.loss[node] = int(opts.get("loss", 10))
            self.delay[node] = int(opts.get("delay", 200))
            info["netem"] = self.m.net.delay(node, self.delay[node], self.delay[node] // 4)
            if not info["netem"]:
                self.delay[node] = 0
                info["note"] = "this kernel has no sch_netem: loss only, no delay"
            self._render_net(node)
        elif kind == "link-down":
            await self.m.switch.set_port(node, False)
            await self.physics.cable(node)
        elif kind == "bmc-dead":
            self.physics.flaky.pop(node, None)
            self.m.bmcs.set_dead(node, True)
        elif kind == "bmc-stuck":
            self.m.bmcs.set_stuck(node, True)
        elif kind == "bmc-flaky":
            self.physics.flaky[node] = now
        elif kind == "etcd-stop":
            n.hold("etcd")
        elif kind == "kill-daemon":
            n.kill_daemon(self._daemon(opts))
        elif kind == "restart":
            n.restart_daemon(self._daemon(opts, RESTARTED))
        elif kind == "power-off":
            self.m.bmcs.press_power(node, False)
        elif kind == "power-on":
            self.m.bmcs.press_power(node, True)
        elif kind == "heal":
            await self.heal(node)
        else:
            raise LabError(f"unknown fault '{kind}' (known: {', '.join(KINDS)})")
        return info

    async def heal(self, node: str) -> None:
        n = self.m.nodes[node]
        now = time.monotonic()
        n.thaw()
        self.physics.flaky.pop(node, None)
        self.m.bmcs.set_dead(node, False)
        self.m.bmcs.set_stuck(node, False)
        touched = {node} if self.blocked[node] or self.loss[node] else set()
        self.blocked[node].clear()
        for p, srcs in self.blocked.items():
            if node in srcs:
                srcs.discard(node)
                touched.add(p)
        self.loss[node] = 0
        if self.delay[node]:
            self.delay[node] = 0
            self.m.net.delay(node, 0)
        for p in touched:
            self._render_net(p)
        await self.m.switch.set_port(node, True)  # the port, not the link: a SET may be
        await self.physics.cable(node)  # on its way that physics has not applied yet
        for d in list(n.held):
            n.release(d, now)
        if n.state == "halted":
            n.power_on(now)
        self.m.bmcs.press_power(node, True)
