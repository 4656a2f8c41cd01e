"""Fixtures for the daemon tests: stores (embedded and a real etcd), ipmi_sim BMCs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hafence.simdevices.ipmi_sim import available as ipmi_sim_available
from hafence.simdevices.ipmi_sim import started_sims
from hafence.store import EmbeddedStore, Store, open_store
from tests.store.conftest import spec
from tests.store.etcd_peer import etcd_url

__all__ = ["etcd_url", "spec"]  # spec: a store directory or an etcd URL, both backends


class Clock:
    """A settable clock for the embedded store's lease expiry (no sleeping in tests)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["embedded", pytest.param("etcd", marks=pytest.mark.peer("etcd"))])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Store]:
    if request.param == "embedded":
        yield EmbeddedStore(tmp_path / "ha", clock=clock)
        return
    url = request.getfixturevalue("etcd_url")
    cluster = f"t{uuid.uuid4().hex[:12]}"  # one key space per test
    s = open_store(url.replace("http://", "etcd://") + f"/{cluster}")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ipmi_sims(tmp_path: Path) -> Iterator[Any]:
    """Factory ``ipmi_sims(**kw) -> IpmiSim`` (started); all stopped at teardown."""
    if not ipmi_sim_available():
        pytest.skip("OpenIPMI ipmi_sim not installed (scripts/install.sh installs it)")
    with started_sims(tmp_path) as start:
        yield start


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake systemctl/qm/pct first on PATH (tests.daemons.fakecli); their state dir."""
    from tests.daemons.fakecli import install

    return install(tmp_path, monkeypatch)
