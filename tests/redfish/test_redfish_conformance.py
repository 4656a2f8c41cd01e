"""The redfish driver passes the conformance kit against sushy-tools' emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hafence.testing import DriverConformance
from tests.peers.redfish import RedfishEmulator

from .conftest import PASSWORD, _need_emulator

TIMING = {"timeout": 2.0, "power_timeout": 3.0, "poll_interval": 0.05}


class TestRedfishConformance(DriverConformance):
    driver_name = "redfish"

    @pytest.fixture
    def emulator(self) -> Iterator[RedfishEmulator]:
        _need_emulator()
        with RedfishEmulator(systems=("node1", "node2"), password=PASSWORD) as bmc:
            yield bmc

    @pytest.fixture
    def device_options(self, emulator: RedfishEmulator) -> dict[str, Any]:
        return {**emulator.driver_options("node2"), **TIMING}

    @pytest.fixture
    def device_power(self, emulator: RedfishEmulator) -> Callable[[], str]:
        return lambda: emulator.power("node2")

    @pytest.fixture
    def wrong_credentials_options(self, emulator: RedfishEmulator) -> dict[str, Any]:
        return {**emulator.wrong_password_options("node2"), **TIMING}

    @pytest.fixture
    def unreachable_options(self, emulator: RedfishEmulator, silent_tcp_port: int) -> dict:
        return {**emulator.driver_options("node2"), "ipport": silent_tcp_port, **TIMING}
