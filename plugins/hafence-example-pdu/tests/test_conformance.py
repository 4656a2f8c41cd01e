"""The example_pdu driver against hafence's conformance kit."""

from typing import Any

import pytest
from hafence_example_pdu.peer import PduServer

from hafence.testing import DriverConformance


class TestExamplePdu(DriverConformance):
    driver_name = "example_pdu"  # found through the entry point, as hafence finds it

    @pytest.fixture
    def device_options(self, pdu: PduServer) -> dict[str, Any]:
        return pdu.driver_options(outlet=3)

    @pytest.fixture
    def device_power(self, pdu: PduServer):
        return lambda: pdu.power(3)

    @pytest.fixture
    def unreachable_options(self, pdu: PduServer, silent_tcp_port: int) -> dict[str, Any]:
        return pdu.driver_options(outlet=3, ipport=silent_tcp_port)
