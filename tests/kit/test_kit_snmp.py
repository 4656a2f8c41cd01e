"""The snmp_ifmib driver against the conformance kit, on a real snmpsim switch (SNMPv3
authPriv: v1/v2c agents drop a wrong community silently, v3 reports a wrong key)."""

from __future__ import annotations

from typing import Any

import pytest

from hafence.simdevices.snmp_agent import SnmpAgent
from hafence.testing import DriverConformance

PORT = 1  # Gi1/0/1, up at start
ADMIN = {1: "on", 2: "off"}  # ifAdminStatus up / down


class TestSnmpIfmibConformance(DriverConformance):
    driver_name = "snmp_ifmib"

    @pytest.fixture
    def device_options(self, switch: SnmpAgent) -> dict[str, Any]:
        return {
            **switch.driver_options(PORT, version="3"),
            "timeout": 3.0,
            "power_timeout": 5.0,
            "poll_interval": 0.1,
        }

    @pytest.fixture
    def device_power(self, switch: SnmpAgent):
        return lambda: ADMIN.get(switch.get_admin_status(PORT) or 0, "unknown")

    @pytest.fixture
    def unreachable_options(
        self, device_options: dict[str, Any], closed_udp_port: int
    ) -> dict[str, Any]:
        return {**device_options, "ipport": closed_udp_port}


class TestSnmpIfmibV2cConformance(TestSnmpIfmibConformance):
    """The same over SNMPv2c: the community is the secret."""

    skip_checks = {
        "credentials": "a v1/v2c agent drops a wrong community without a word: it looks "
        "unreachable, by design of the protocol (the v3 class checks AuthError)"
    }

    @pytest.fixture
    def device_options(self, switch: SnmpAgent) -> dict[str, Any]:
        return {
            **switch.driver_options(PORT, version="2c"),
            "timeout": 3.0,
            "power_timeout": 5.0,
            "poll_interval": 0.1,
        }
