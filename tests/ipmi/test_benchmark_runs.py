"""benchmarks/fence_latency.py still runs end to end (one round; no timing asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("ipmi_sim", "ipmitool", "fence_ipmilan")),
    reason="needs ipmi_sim, ipmitool and fence_ipmilan (scripts/install.sh)",
)
def test_fence_latency_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fence_latency.py"), "--rounds", "1", "--json"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert set(results) == {"status", "off", "reboot"}
    for action, tools in results.items():
        assert {"hafence", "hafence cold", "fence_ipmilan"} <= set(tools), action
        assert all(len(times) == 1 for times in tools.values())
    assert "bench-Pw-1" not in proc.stdout + proc.stderr
