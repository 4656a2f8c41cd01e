"""Fixtures: a fake kernel per test (syscall seam) and real mux processes on it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hafence.watchdog.fake import FakeKernel
from hafence.watchdog.muxproc import MuxProcess

StartMux = Callable[..., MuxProcess]

# Upper bound for waiting on an event; the tests assert *that* it happens, not when.
EVENT_WAIT = 60.0


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path / "kernel" / "watchdog.json")


@pytest.fixture
def start_mux(tmp_path: Path) -> Iterator[Callable[..., MuxProcess]]:
    """Start real hafence-watchdog-mux processes; every one is stopped (or killed) after."""
    procs: list[MuxProcess] = []

    def start(**kw: Any) -> MuxProcess:
        mux = MuxProcess(tmp_path / f"mux{len(procs)}", **kw)
        procs.append(mux)
        return mux.start()

    yield start
    for mux in procs:
        mux.stop(grace=2)  # a tripped mux refuses SIGTERM: then killed
        mux.kill()


def wait_for(predicate: Callable[[], Any], what: str, limit: float = EVENT_WAIT) -> Any:
    end = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)
