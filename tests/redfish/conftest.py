"""Fixtures for the Redfish tests: sushy-tools' emulator on loopback (plain HTTP and
TLS), reset between tests, and a registry holding only the redfish plugin."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import hafence_redfish
import pytest

from hafence.plugins import PluginRegistry
from tests.fencing_helpers import cfg_args, make_fencer  # noqa: F401 (re-exported)
from tests.peers import redfish as peer
from tests.peers.redfish import RedfishEmulator

PASSWORD = "Redfish-s3cret!pw"
SYSTEMS = ("node1", "node2")


def _need_emulator() -> None:
    if not peer.available():
        pytest.skip("sushy-tools not installed (pip install -e '.[test]')")


def _reset(bmc: RedfishEmulator) -> RedfishEmulator:
    for name in bmc.systems:
        bmc.set_power(True, name)
    bmc.set_stuck(False)
    bmc.clear_calls()
    return bmc


@pytest.fixture(scope="module")
def _bmc() -> Iterator[RedfishEmulator]:
    _need_emulator()
    with RedfishEmulator(systems=SYSTEMS, password=PASSWORD) as bmc:
        yield bmc


@pytest.fixture
def bmc(_bmc: RedfishEmulator) -> RedfishEmulator:
    """A two-system BMC over plain HTTP, every system on, nothing stuck, no calls yet."""
    return _reset(_bmc)


@pytest.fixture
def fresh_bmc() -> Iterator[RedfishEmulator]:
    """A BMC of its own, for counting sessions: on the shared one, a driver another
    test left unclosed logs out whenever the garbage collector gets to it."""
    _need_emulator()
    with RedfishEmulator(systems=SYSTEMS, password=PASSWORD) as bmc:
        yield bmc


@pytest.fixture(scope="module")
def _tls_bmc() -> Iterator[RedfishEmulator]:
    _need_emulator()
    with RedfishEmulator(systems=("solo",), password=PASSWORD, tls=True) as bmc:
        yield bmc


@pytest.fixture
def tls_bmc(_tls_bmc: RedfishEmulator) -> RedfishEmulator:
    """A one-system BMC over HTTPS with a self-signed certificate (``ca_file``)."""
    return _reset(_tls_bmc)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback TCP port that completes the handshake and then never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as srv:
        yield srv.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry() -> PluginRegistry:
    reg = PluginRegistry(load_entry_points=False)
    reg.register(hafence_redfish, "redfish")
    return reg
