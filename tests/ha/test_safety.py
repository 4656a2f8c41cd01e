"""The safety property over many random clusters, and proof that the checker bites.

Each seed builds a random cluster (hafence.sim.safety.random_cluster): crashes, network
cuts, reboots, shutdowns, LRM restarts, maintenance, migrations, config changes, and fence
devices that work, fail a few times or never work. The checker watches the simulated
hardware, not the CRM's bookkeeping.
"""

from __future__ import annotations

import os

import pytest

from hafence.ha.nodestatus import NodeStatus
from hafence.sim.hardware import Hardware
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


def _unsafe_fence_node(self: NodeStatus, node: str) -> bool:
    """A broken fencer: acknowledges at once, without hardware fence or agent lock."""
    if self.get(node) != "fence":
        self._set(node, "fence")
    self._set(node, "unknown")
    return True


def test_checker_catches_recovery_before_fencing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NodeStatus, "fence_node", _unsafe_fence_node)
    caught = [seed for seed in range(200) if check_seed(seed).violations]
    assert caught, "an unsafe fencer went unnoticed over 200 seeds"


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
