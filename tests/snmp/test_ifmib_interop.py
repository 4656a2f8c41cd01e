"""snmp_ifmib and ClusterLabs' fence_ifmib (Debian fence-agents) agree on one switch:
what one switches off, the other reads as off. Checks the simulated agent as much as
the driver: a reference client sees the same IF-MIB."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hafence_snmp.ifmib import IfMibDriver

from hafence.fence.driver import PowerState
from hafence.simdevices.snmp_agent import SnmpAgent

pytestmark = pytest.mark.skipif(
    not shutil.which("fence_ifmib"), reason="fence-agents (fence_ifmib) not installed"
)


def fence_ifmib(agent: SnmpAgent, action: str, plug: str, version: str = "2c") -> tuple[int, str]:
    """Run fence_ifmib with options on stdin (no secrets in argv)."""
    opts = {"ip": agent.host, "ipport": agent.port, "action": action, "plug": plug}
    if version == "3":
        opts |= {
            "snmp_version": "3",
            "username": agent.v3_user,
            "password": agent.v3_auth_key,
            "snmp_auth_prot": agent.v3_auth_proto,
            "snmp_sec_level": "authPriv",
            "snmp_priv_prot": agent.v3_priv_proto,
            "snmp_priv_passwd": agent.v3_priv_key,
        }
    else:
        opts |= {"snmp_version": version, "community": agent.community}
    stdin = "".join(f"{k}={v}\n" for k, v in opts.items())
    res = subprocess.run(
        ["fence_ifmib"], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    return res.returncode, res.stdout + res.stderr


@pytest.mark.parametrize("version", ["2c", "3"])
async def test_fence_ifmib_and_snmp_ifmib_agree(agent: SnmpAgent, version: str) -> None:
    rc, out = fence_ifmib(agent, "off", "GigabitEthernet1/0/2", version)
    assert rc == 0, out
    async with IfMibDriver(agent.driver_options("GigabitEthernet1/0/2", version=version)) as d:
        assert await d.status() == PowerState.OFF
        await d.on()
    rc, out = fence_ifmib(agent, "status", "GigabitEthernet1/0/2", version)
    assert rc == 0 and "Status: ON" in out, out
    async with IfMibDriver(agent.driver_options("2", version=version)) as d:
        await d.off()
    rc, out = fence_ifmib(agent, "status", "2", version)
    assert rc == 2 and "Status: OFF" in out, out  # fence-agents: exit 2 means off


async def test_port_lists_agree(switch: SnmpAgent) -> None:
    rc, out = fence_ifmib(switch, "list", "")
    assert rc == 0, out
    theirs = [line.split(",")[0] for line in out.splitlines() if line.strip()]
    async with IfMibDriver(switch.driver_options("1")) as d:
        ours = await d.list()
    # fence_ifmib lists ports by ifDescr (its only naming); same ports, same order
    by_index = {p.index: p.descr for p in switch.ports}
    assert theirs == [by_index[int(p.id)] for p in ours]
