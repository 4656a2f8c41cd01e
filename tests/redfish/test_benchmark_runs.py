"""benchmarks/serial_redfish_latency.py still runs end to end (one round; no timing
asserted): every round there checks the peers' power state itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serial_redfish_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "serial_redfish_latency.py"),
         "--rounds", "1", "--json"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert {"serial pty", "serial rfc2217", "redfish http basic", "redfish https session"} <= set(
        results
    )
    for tool, actions in results.items():
        assert set(actions) == {"status", "off"}, tool
        assert all(len(times) == 1 for times in actions.values())
