"""The safety property over many random clusters, and proof that the checker bites.

Each seed builds a random cluster (hafence.sim.safety.random_cluster): crashes, network
cuts, reboots, shutdowns, LRM restarts, maintenance, migrations, config changes, and fence
chains of one to three levels (PDU outlet pairs among them) whose devices work, fail a
few times, never answer, flake, stick, lie or answer slowly, fenced by the real fencer
with retries and back-off. The checker watches the simulated hardware, not the CRM's
bookkeeping; tests/ha/test_safety_mutants.py shows it catches broken variants.
"""

from __future__ import annotations

import logging
import os

import pytest

from hafence.sim.hardware import Hardware
from hafence.sim.power import FENCER_LOG
from hafence.sim.safety import SafetyChecker, check_seed

SEEDS = int(os.environ.get("HAFENCE_SAFETY_SEEDS", "1000"))
CHUNK = 100


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK), ids=lambda s: f"seeds{s}-{s + CHUNK - 1}")
def test_no_service_twice_and_no_recovery_before_fence(first: int) -> None:
    failures = {}
    starts = recoveries = 0
    for seed in range(first, min(first + CHUNK, SEEDS)):
        checker = check_seed(seed)
        starts += checker.starts
        recoveries += checker.recoveries
        if checker.violations:
            failures[seed] = checker.violations[:3]
    assert not failures, f"safety violated (seed: first violations): {failures}"
    # the chunk must exercise what it claims to check
    assert starts > 0 and recoveries > 0


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_seeds_exercise_the_real_fencer() -> None:
    """Levels, sub-devices, retries with back-off, verification and time bounds all run."""
    handler = _Lines()
    FENCER_LOG.addHandler(handler)
    level = FENCER_LOG.level
    FENCER_LOG.setLevel(logging.INFO)
    try:
        for seed in range(60):
            check_seed(seed)
    finally:
        FENCER_LOG.removeHandler(handler)
        FENCER_LOG.setLevel(level)
    text = "\n".join(handler.lines)
    for seen in (
        "attempt 1 level 2 (pdu): off via 'pdu:1', 'pdu:2'",  # a level of two outlets
        "attempt 1 level 3",  # a third level after two failed
        "failed on every level, retrying in",  # back-off between attempts
        "off failed: still_on",  # verification caught a device that did not switch
        "off failed: timeout",  # the time bound of a device that never answers
        "off failed: unreachable",
        "off failed: device_error",
        "delaying by",
        "confirmed off",
    ):
        assert seen in text, f"no seed of 0-59 shows {seen!r}"


def test_checker_catches_double_start() -> None:
    hw = Hardware(status={n: {"power": "on", "network": "on"} for n in ("node1", "node2")})
    checker = SafetyChecker(hw)
    hw.start_service("node1", "vm:100")
    assert checker.violations == []
    hw.start_service("node2", "vm:100")
    assert (
        checker.violations
        and "vm:100 started on node2 while running on node1" in (checker.violations[0])
    )
