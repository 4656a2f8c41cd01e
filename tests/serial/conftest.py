"""Fixtures for the serial driver tests: a power switch played on a pty (or behind an
RFC 2217 terminal server on loopback) and a registry holding only the serial plugin."""

from __future__ import annotations

from collections.abc import Iterator

import hafence_serial
import pytest

from hafence.plugins import PluginRegistry
from tests.fencing_helpers import cfg_args, make_fencer  # noqa: F401 (re-exported)
from tests.peers.serial_device import SerialDevice

PASSWORD = "Serial-s3cret!pw"


@pytest.fixture
def switch() -> Iterator[SerialDevice]:
    """A two-outlet switch with a password, on a pseudo-terminal."""
    with SerialDevice(outlets=2, password=PASSWORD) as dev:
        yield dev


@pytest.fixture
def plain() -> Iterator[SerialDevice]:
    """A one-outlet relay without password, on a pseudo-terminal."""
    with SerialDevice() as dev:
        yield dev


@pytest.fixture
def terminal_server() -> Iterator[SerialDevice]:
    """The two-outlet switch behind an RFC 2217 server (line settings and DTR/RTS visible)."""
    with SerialDevice(outlets=2, password=PASSWORD, transport="rfc2217") as dev:
        yield dev


@pytest.fixture
def registry() -> PluginRegistry:
    reg = PluginRegistry(load_entry_points=False)
    reg.register(hafence_serial, "serial")
    return reg
