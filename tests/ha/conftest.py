"""Shared pieces of the HA core tests: where the reference scenarios live, and a summary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SCENARIOS = Path(os.environ.get("HAFENCE_PVE_HA_TESTS", Path(__file__).parent / "scenarios"))

# filled by test_scenarios.py, printed at the end of the run
RESULTS: dict[str, list[str]] = {"matched": [], "mismatched": [], "unsupported": []}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not any(RESULTS.values()):
        return
    tr = terminalreporter
    tr.section("Proxmox HA reference scenarios")
    tr.write_line(
        f"{len(RESULTS['matched'])} matched, {len(RESULTS['mismatched'])} mismatched, "
        f"{len(RESULTS['unsupported'])} not yet supported (out of scope)"
    )
    for name in RESULTS["mismatched"]:
        tr.write_line(f"  MISMATCH {name}")
    for entry in RESULTS["unsupported"]:
        tr.write_line(f"  not supported: {entry}")
