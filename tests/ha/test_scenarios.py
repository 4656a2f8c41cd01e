"""Every Proxmox HA reference scenario, run on the simulator and compared line by line.

Each scenario must reproduce ``log.expect`` exactly (column padding aside); none is
skipped or expected to differ. hafence's own scenarios (``hafence-scenarios``) fence
through simulated power devices with the real fencer on virtual time.
"""

from __future__ import annotations

import pytest

from hafence.sim.scenario import compare
from tests.ha.conftest import RESULTS, SCENARIOS

ALL = sorted(p for p in SCENARIOS.glob("test-*") if (p / "log.expect").exists())


def test_reference_scenarios_present() -> None:
    assert len(ALL) >= 90, f"expected the reference scenarios under {SCENARIOS}"


HAFENCE = sorted((SCENARIOS.parent / "hafence-scenarios").glob("test-*"))


@pytest.mark.parametrize("scenario", HAFENCE, ids=[p.name for p in HAFENCE])
def test_hafence_scenario(scenario) -> None:
    """hafence's own scenarios (hardware fence devices), in the same format."""
    result = compare(scenario)
    assert result.matched, f"{scenario.name}: HA log differs from log.expect\n{result.diff}"


@pytest.mark.parametrize("scenario", ALL, ids=[p.name for p in ALL])
def test_scenario(scenario) -> None:
    result = compare(scenario)
    if not result.matched:
        RESULTS["mismatched"].append(scenario.name)
        pytest.fail(f"{scenario.name}: HA log differs from log.expect\n{result.diff}")
    RESULTS["matched"].append(scenario.name)
