"""Shared pieces of the HA core tests: where the reference scenarios live, and their
tally (printed by tests/conftest.py, which also gathers it from xdist workers)."""

from __future__ import annotations

import os
from pathlib import Path

SCENARIOS = Path(os.environ.get("HAFENCE_PVE_HA_TESTS", Path(__file__).parent / "scenarios"))

# filled by test_scenarios.py, printed at the end of the run (tests/conftest.py)
RESULTS: dict[str, list[str]] = {"matched": [], "mismatched": []}
