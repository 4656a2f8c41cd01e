"""The serial driver against the conformance kit, on a power switch played on a
pseudo-terminal (tests.peers.serial_device)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hafence.testing import DriverConformance

serial_device = pytest.importorskip("tests.peers.serial_device")

PASSWORD = "Kit-serial!s3cret"
TIMING = {"timeout": 2.0, "power_timeout": 3.0, "poll_interval": 0.05}


class TestSerialConformance(DriverConformance):
    driver_name = "serial"

    @pytest.fixture
    def switch(self) -> Iterator[Any]:
        with serial_device.SerialDevice(outlets=2, password=PASSWORD) as dev:
            yield dev

    @pytest.fixture
    def device_options(self, switch: Any) -> dict[str, Any]:
        return {**switch.driver_options(outlet=2), **TIMING}

    @pytest.fixture
    def device_power(self, switch: Any):
        return lambda: switch.power(2)

    @pytest.fixture
    def wrong_credentials_options(self, switch: Any) -> dict[str, Any]:
        return {**switch.wrong_password_options(outlet=2), **TIMING}

    @pytest.fixture
    def unreachable_options(self) -> Iterator[dict[str, Any]]:
        # A switch that never answers: only the driver's own time-out ends the wait.
        with serial_device.SerialDevice(outlets=2, password=PASSWORD, mode="silent") as dev:
            yield {**dev.driver_options(outlet=2), **TIMING}
