"""The redfish driver against the conformance kit, on sushy-tools' Redfish emulator
(tests.peers.redfish) over TLS with its own CA."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hafence.testing import DriverConformance

redfish = pytest.importorskip("tests.peers.redfish")
pytest.importorskip("sushy", reason="pip install -e '.[redfish]'")

PASSWORD = "Kit-redfish!s3cret"
TIMING = {"timeout": 3.0, "power_timeout": 5.0, "poll_interval": 0.1}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not redfish.available():
        pytest.skip("sushy-tools not installed (pip install -e '.[test]')")
    emu = redfish.RedfishEmulator(
        systems=("node1",), password=PASSWORD, tls=True, workdir=tmp_path_factory.mktemp("rf")
    )
    with emu:
        yield emu


class TestRedfishConformance(DriverConformance):
    driver_name = "redfish"

    @pytest.fixture
    def device_options(self, emulator: Any) -> dict[str, Any]:
        emulator.set_stuck(False)
        return {**emulator.driver_options("node1"), **TIMING}

    @pytest.fixture
    def device_power(self, emulator: Any):
        return lambda: emulator.power("node1")

    @pytest.fixture
    def unreachable_options(
        self, device_options: dict[str, Any], silent_tcp_port: int
    ) -> dict[str, Any]:
        return {**device_options, "ipport": silent_tcp_port}
