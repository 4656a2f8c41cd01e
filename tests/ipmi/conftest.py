"""Fixtures for the IPMI tests: a real OpenIPMI ipmi_sim BMC on loopback per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hafence.fence import FenceHistory, Fencer, parse_fence_config
from hafence.plugins import PluginRegistry
from hafence.simdevices.ipmi_sim import IpmiSim, available, started_sims

PASSWORD = "Ipmi-s3cret!pw"


@pytest.fixture
def ipmi_sims(tmp_path: Path) -> Iterator[Callable[..., IpmiSim]]:
    """Factory ``ipmi_sims(**kw) -> IpmiSim`` (started); all stopped at teardown."""
    if not available():
        pytest.skip("OpenIPMI ipmi_sim not installed (scripts/install.sh installs it)")
    with started_sims(tmp_path, password=PASSWORD) as start:
        yield start


@pytest.fixture
def bmc(ipmi_sims: Callable[..., IpmiSim]) -> IpmiSim:
    return ipmi_sims()


@pytest.fixture
def registry() -> PluginRegistry:
    return PluginRegistry()


@pytest.fixture
def make_fencer(registry: PluginRegistry, tmp_path: Path) -> Callable[[str], Fencer]:
    """``make_fencer(fence_cfg_text) -> Fencer`` with a history file in tmp_path."""

    def make(text: str) -> Fencer:
        cfg = parse_fence_config(text, str(tmp_path / "fence.cfg"))
        history = FenceHistory(tmp_path / "history.jsonl")
        return Fencer(cfg, registry, history, retries=0, backoff=0.0, actor="tester")

    return make
