"""resource-agents' IPaddr2 as an ocf: service: the address comes and goes with it
(in a private network namespace, see ipaddr2_drill.py). The failover of an address
between nodes runs in the lab's namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private network namespace")
def test_ipaddr2_adds_and_removes_the_service_address(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["unshare", "--fork", "--pid", "--kill-child", "--mount-proc", "-n",
         sys.executable, "-m", "tests.ocf.ipaddr2_drill", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    assert (r["before"], r["bind_before"]) == ("stopped", False)
    assert (r["running"], r["addr_up"], r["bind_up"]) == ("running", True, True)
    assert (r["after"], r["addr_after"], r["bind_after"]) == ("stopped", False, False)
