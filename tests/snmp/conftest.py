"""Fixtures for the SNMP tests: a real SNMP agent (snmpsim) on loopback and a plugin
registry holding only the snmp_ifmib plugin."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import hafence_snmp
import pytest

from hafence.plugins import PluginRegistry
from hafence.simdevices.snmp_agent import SnmpAgent, free_udp_port, snmp_agent
from tests.fencing_helpers import cfg_args, make_fencer  # noqa: F401 (re-exported)


def _need_snmpsim() -> None:
    if not shutil.which("snmpsim-command-responder"):
        pytest.skip("snmpsim not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def switch() -> Iterator[SnmpAgent]:
    """A simulated switch shared by a module's read-only tests (never SET it)."""
    _need_snmpsim()
    with snmp_agent() as agent:
        yield agent


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[SnmpAgent]:
    """A fresh simulated switch for one test (ports start as in DEFAULT_PORTS)."""
    _need_snmpsim()
    with snmp_agent(workdir=tmp_path / "snmpsim") as a:
        yield a


@pytest.fixture
def registry() -> PluginRegistry:
    reg = PluginRegistry(load_entry_points=False)
    reg.register(hafence_snmp, "snmp_ifmib")
    return reg


@pytest.fixture
def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (probed, then released)."""
    return free_udp_port()
