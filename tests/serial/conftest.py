"""Fixtures for the serial driver tests: a power switch played on a pty (or behind an
RFC 2217 terminal server on loopback) and a registry holding only the serial plugin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hafence_serial
import pytest

from hafence.fence import FenceHistory, Fencer, parse_fence_config
from hafence.plugins import PluginRegistry
from hafence.testing.peers.serial_device import SerialDevice

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


def make_fencer(registry: PluginRegistry, text: str, tmp_path: Path, **kw) -> Fencer:
    cfg = parse_fence_config(text, str(tmp_path / "fence.cfg"))
    kw.setdefault("retries", 0)
    return Fencer(cfg, registry, FenceHistory(tmp_path / "history.jsonl"), actor="nodeA", **kw)


def cfg_args(options: dict[str, str]) -> str:
    """fence.cfg key=value arguments, every value single-quoted."""
    return " ".join(f"{k}='{v}'" for k, v in options.items())
