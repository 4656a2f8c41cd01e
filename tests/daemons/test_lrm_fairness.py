"""The LRM starts every queued service: 200 services on one node, max_worker 4.

Runs benchmarks/lrm_throughput.py: a real CRM and LRM (RealEnv, embedded store) in rounds
like the daemons, ``dummy:`` processes as services. Services that already run get a new
uid (a status check) after every result; they must never keep the never-started ones
waiting. The benchmark gives up after 50 rounds in a row without one more service
running (far more than one start needs, however slow the machine: a round waits for its
workers); its timing is not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_200_services_on_one_node_with_max_worker_4_all_start() -> None:
    argv = [sys.executable, str(ROOT / "benchmarks" / "lrm_throughput.py"), "--services", "200",
            "--max-worker", "4", "--interval", "0.2", "--json"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=280, cwd=ROOT)
    res = json.loads(proc.stdout)
    assert res["started"] == 200, res
    assert proc.returncode == 0 and res["seconds_to_all_started"] is not None
