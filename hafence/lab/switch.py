"""The lab's switch: an SNMP agent (snmpsim) with one IF-MIB port per node.

Port ``GigabitEthernet1/0/I`` (ifIndex I, ifName ``Gi1/0/I``) is node I's cable. The
fence chain's second level shuts it through the ``snmp_ifmib`` driver (set
ifAdminStatus down) when the BMC level fails; the supervisor watches the agent for
SETs and mirrors every port's ifAdminStatus onto the node's link (see
:mod:`hafence.lab.physics`). Shutting a port isolates a node; it does not stop it.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from hafence.lab.layout import Layout
from hafence.lab.timings import LabTimings
from hafence.plugins import get_registry
from hafence.simdevices.snmp_agent import IF_ADMIN_STATUS, SimPort, SnmpAgent

_PORT_SET = re.compile(re.escape(IF_ADMIN_STATUS) + r"\.(\d+)=")


class Switch:
    def __init__(self, layout: Layout, community: str, port: int | None = None) -> None:
        self.layout = layout
        ports = tuple(
            SimPort(i, f"GigabitEthernet1/0/{i}", f"Gi1/0/{i}", node)
            for i, node in enumerate(layout.nodes, start=1)
        )
        self.agent = SnmpAgent(
            community=community,
            ro_community=secrets.token_hex(8),
            v3_user="lab",
            v3_auth_key=secrets.token_hex(8),
            v3_priv_key=secrets.token_hex(8),
            v3_auth_proto="SHA",
            v3_priv_proto="AES",
            ports=ports,
            workdir=layout.switch_dir,
            host=layout.switch_addr,
        )
        self._fixed_port = port
        self._log_offset = 0
        self._drivers: dict[str, Any] = {}

    def start(self) -> int:
        self.agent.start(self._fixed_port)
        self._log_offset = self.agent.log_path.stat().st_size
        return self.agent.port

    def stop(self) -> None:
        self.agent.stop()

    def port_name(self, node: str) -> str:
        return f"Gi1/0/{self.layout.index(node)}"

    def set_ports(self) -> set[str]:
        """Nodes whose port got a SET since the last call (read from the agent's log)."""
        try:
            with open(self.agent.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                data = fh.read()
        except FileNotFoundError:
            return set()
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        text = data[:end].decode(errors="replace")
        found = set()
        for line in text.splitlines():
            if line.rstrip().endswith("SET"):
                for idx in _PORT_SET.findall(line):
                    if 1 <= int(idx) <= len(self.layout.nodes):
                        found.add(self.layout.nodes[int(idx) - 1])
        return found

    def _driver(self, node: str) -> Any:
        """One snmp_ifmib driver per port, kept: a new one costs ~100 ms of CPU (its SNMP
        engine), a request on a kept one ~1 ms."""
        if node not in self._drivers:
            cls = get_registry().fence_drivers()["snmp_ifmib"]
            opts = self.agent.driver_options(self.port_name(node))
            self._drivers[node] = cls(opts, label="lab-switch")
        return self._drivers[node]

    async def port_up(self, node: str) -> bool | None:
        """The port's ifAdminStatus through the snmp_ifmib driver; None if unreadable."""
        try:
            state = await self._driver(node).status()
        except Exception:  # unreadable now: the next poll asks again
            return None
        return {"on": True, "off": False}.get(str(state))

    async def set_port(self, node: str, up: bool) -> None:
        drv = self._driver(node)
        await (drv.on() if up else drv.off())

    def fence_cfg(self, community_file: str, timings: LabTimings) -> str:
        """fence.cfg lines: level 2 of every node's chain, its switch port."""
        t = f"{timings.fence_timeout:g}"
        out = (
            f"device switch snmp_ifmib ip={self.agent.host} ipport={self.agent.port} "
            f"community_file={community_file} timeout={t} power_timeout={t} "
            "poll_interval=0.2\n"
        )
        for node in self.layout.nodes:
            out += f"connect switch node={node} port={self.port_name(node)}\n"
        return out
