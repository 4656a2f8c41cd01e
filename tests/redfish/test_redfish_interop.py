"""The Redfish peer is a faithful Redfish service: ClusterLabs' own ``fence_redfish``
agent (a client written independently of sushy) fences through it, via hafence's
fence_agent bridge and the real Fencer, and sees what hafence's driver sees."""

from __future__ import annotations

import shutil
from pathlib import Path

import hafence_fence_agent
import hafence_redfish
import pytest

from hafence.plugins import PluginRegistry
from tests.peers.redfish import RedfishEmulator

from .conftest import cfg_args, make_fencer

pytestmark = pytest.mark.skipif(
    shutil.which("fence_redfish") is None and not Path("/usr/sbin/fence_redfish").exists(),
    reason="ClusterLabs fence-agents (fence_redfish) not installed",
)


@pytest.fixture
def both() -> PluginRegistry:
    reg = PluginRegistry(load_entry_points=False)
    reg.register(hafence_redfish, "redfish")
    reg.register(hafence_fence_agent, "fence_agent")
    return reg


async def test_fence_redfish_and_hafence_agree(
    both: PluginRegistry, tls_bmc: RedfishEmulator, tmp_path: Path
) -> None:
    agent = tls_bmc.agent_options()
    ours = tls_bmc.driver_options()
    text = (
        f"device agent fence_redfish {cfg_args(agent)} power_timeout=5 poll_interval=0.05\n"
        "connect agent node=n1\n"
        f"device ours redfish {cfg_args(ours)} timeout=2 power_timeout=2 poll_interval=0.05\n"
        "connect ours node=n2\n"
    )
    f = make_fencer(both, text, tmp_path)
    res = await f.fence("n1")  # ClusterLabs' agent fences through the peer
    assert res.ok and tls_bmc.power() == "off"
    assert tls_bmc.calls() == ["ForceOff solo"]
    # hafence's driver reads the state the agent left
    rep = await f.check("n2")
    assert rep.ok and rep.devices[0].state == "off"
    res = await f.fence("n2", "on")
    assert res.ok and tls_bmc.power() == "on"
    rep = await f.check("n1")  # and the agent reads ours
    assert rep.ok and rep.devices[0].state == "on"
