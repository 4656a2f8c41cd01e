"""The ipmi driver against the conformance kit, on a real ipmi_sim BMC."""

from __future__ import annotations

from typing import Any

import pytest

from hafence.simdevices.ipmi_sim import IpmiSim
from hafence.testing import DriverConformance


class TestIpmiConformance(DriverConformance):
    driver_name = "ipmi"

    @pytest.fixture
    def device_options(self, bmc: IpmiSim) -> dict[str, Any]:
        bmc.set_stuck(False)
        return bmc.driver_options()

    @pytest.fixture
    def device_power(self, bmc: IpmiSim):
        return lambda: bmc.power

    @pytest.fixture
    def unreachable_options(self, bmc: IpmiSim, closed_udp_port: int) -> dict[str, Any]:
        return bmc.driver_options(ipport=closed_udp_port)
