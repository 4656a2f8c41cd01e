"""What the machine cannot do by itself, played every tick by the supervisor.

* **Power.** A node's power is its BMC's power state. Off (a fence through IPMI, or the
  button): every process of the node dies at once. On again: the node boots.
* **Watchdog.** Each node's ``hafence-watchdog-mux`` drives a fake watchdog device
  (:mod:`hafence.watchdog.fake`), whose state is a file. Once the device expires - the
  mux stopped feeding it, or the whole node hangs - the node resets: it dies and boots.
  The file is read without its lock: a frozen mux may hold that lock forever, while
  the hardware it stands for keeps counting.
* **Cables.** A switch port whose ifAdminStatus is set down (``snmp_ifmib``) takes the
  node's link down; up brings it back. SETs are seen in the agent's log at once; every
  port is also read every few seconds, in case one was missed.
* **Flaky BMCs** answer for a while, then hang for a while.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from hafence.lab.bmc import Bmcs
from hafence.lab.events import EventLog
from hafence.lab.layout import Layout
from hafence.lab.network import Network
from hafence.lab.node import Node
from hafence.lab.switch import Switch

PORT_POLL = 3.0  # seconds between two reads of every switch port


def watchdog_expired(layout: Layout, node: str) -> bool:
    """Whether the node's (fake) watchdog hardware has fired since the node booted."""
    try:
        st = json.loads(layout.watchdog_state(node).read_text())
    except (OSError, ValueError):
        return False  # no device yet (mux not started), or mid-replace: next tick
    if any(e.get("type") == "reset" for e in st.get("events", [])):
        return True
    now = time.monotonic()  # the fake's deadlines are CLOCK_MONOTONIC, system-wide
    return any(
        d.get("active")
        and d.get("deadline") is not None
        and now >= d["deadline"]
        and not d.get("noboot")
        for d in st.get("devices", {}).values()
    )


@dataclass
class Machines:
    """The lab's hardware, as the supervisor holds it: what physics and faults act on."""

    layout: Layout
    nodes: Mapping[str, Node]
    bmcs: Bmcs
    switch: Switch
    net: Network
    events: EventLog


class Physics:
    def __init__(self, machines: Machines, rng: random.Random) -> None:
        self.m = machines
        self.rng = rng
        self.flaky: dict[str, float] = {}  # node -> next toggle (monotonic)
        self.next_poll = 0.0

    async def cable(self, node: str) -> None:
        """Mirror the node's switch port (its ifAdminStatus) onto its link."""
        up = await self.m.switch.port_up(node)
        if up is not None and up != self.m.net.link_up(node):
            self.m.net.set_link(node, up)
            self.m.events.add("link_up" if up else "link_down", node)

    async def step(self) -> None:
        now = time.monotonic()
        # first: a flaky BMC coming back is a restart that blocks a moment, and a power-off
        # it takes at once must kill the node in this step, as cut power does
        for name, at in list(self.flaky.items()):
            if now >= at:
                self.m.bmcs.set_dead(name, name not in self.m.bmcs.dead)
                self.flaky[name] = now + self.rng.uniform(0.5, 3.0)
        for name, node in self.m.nodes.items():
            powered = self.m.bmcs.powered(name)
            if not powered and node.state != "off":
                node.die("power off")
                self.m.events.add("power_off", name)
            elif powered and node.state == "off":
                node.power_on(now)
                self.m.events.add("power_on", name)
            elif node.alive and watchdog_expired(self.m.layout, name):
                node.die("watchdog reset")
                self.m.events.add("watchdog_reset", name)
                node.power_on(now)  # a reset is a reboot: the power stays on
            node.step(now)
        ports = self.m.switch.set_ports()
        if now >= self.next_poll:  # the agent's log is the fast path; this the backstop
            ports = set(self.m.nodes)
            self.next_poll = now + PORT_POLL
        for name in sorted(ports):
            await self.cable(name)
