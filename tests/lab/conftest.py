"""One fast-timing 3-node lab for the whole module (building one costs ~15 s)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.lab.chaos import ChaosRun, services_for
from hafence.lab.cleanup import leftovers
from hafence.lab.control import Lab
from hafence.lab.network import netns_supported


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    why = netns_supported()
    if why:
        pytest.skip(f"hafence lab needs network namespaces: {why}")
    lab = Lab(tmp_path_factory.mktemp("lab"))
    lab.up(3, "fast", services=services_for(3))
    layout = lab.layout
    try:
        yield lab
    finally:
        # take it down the hard way: the supervisor dies first, as in a crash; the
        # sweep must still find and remove everything by name
        pid = lab.supervisor_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        lab.down()
        assert leftovers(layout.state_dir, layout.prefix) == []
        assert not layout.state_dir.exists() and not layout.run_dir.exists()


@pytest.fixture(scope="module")
def chaos(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosRun]:
    logs: Path = tmp_path_factory.mktemp("chaos-logs")
    run = ChaosRun(lab, logs, print)
    run.checker.start()
    try:
        yield run
    finally:
        run.checker.stop()
