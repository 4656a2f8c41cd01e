"""The fence_agent bridge (ClusterLabs fence_ipmilan) against the conformance kit, on a
real ipmi_sim BMC."""

from __future__ import annotations

from typing import Any

import pytest

from hafence.simdevices.ipmi_sim import IpmiSim
from hafence.testing import DriverConformance

from .conftest import fence_agent_installed

pytestmark = pytest.mark.skipif(
    not fence_agent_installed("fence_ipmilan"),
    reason="Debian fence-agents not installed (scripts/install.sh installs it)",
)


class TestFenceIpmilanConformance(DriverConformance):
    driver_name = "fence_ipmilan"  # resolved through the fence_agent bridge plugin
    unreachable_timeout = 3.0  # the agent is a Python program: its start-up counts too

    @pytest.fixture
    def device_options(self, bmc: IpmiSim) -> dict[str, Any]:
        bmc.set_stuck(False)
        return bmc.agent_options()

    @pytest.fixture
    def device_power(self, bmc: IpmiSim):
        return lambda: bmc.power

    @pytest.fixture
    def unreachable_options(self, bmc: IpmiSim, closed_udp_port: int) -> dict[str, Any]:
        return bmc.agent_options(ipport=closed_udp_port)
