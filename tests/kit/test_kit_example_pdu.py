"""The example vendor plugin's driver against the conformance kit, from hafence's own
test suite (its own tests/ run the same class)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hafence.testing import DriverConformance

peer = pytest.importorskip(
    "hafence_example_pdu.peer", reason="pip install -e plugins/hafence-example-pdu"
)


class TestExamplePduConformance(DriverConformance):
    driver_name = "example_pdu"

    @pytest.fixture
    def pdu(self) -> Iterator[Any]:
        with peer.PduServer(password="Kit-pdu!s3cret", outlets=2) as server:
            yield server

    @pytest.fixture
    def device_options(self, pdu: Any) -> dict[str, Any]:
        return pdu.driver_options(outlet=2)

    @pytest.fixture
    def device_power(self, pdu: Any):
        return lambda: pdu.power(2)

    @pytest.fixture
    def unreachable_options(self, pdu: Any, silent_tcp_port: int) -> dict[str, Any]:
        return pdu.driver_options(outlet=2, ipport=silent_tcp_port)
