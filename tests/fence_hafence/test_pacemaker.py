"""Pacemaker's fencer (pacemaker-fenced, stand-alone) and stonith_admin run fence_hafence.

stonith_admin alone can only ask for metadata and validation without a cluster; fencing
needs the fencer daemon. Its stand-alone mode needs no corosync and no CIB, so the drill
(tests/fence_hafence/pacemaker_drill.py) runs it in private mount and network namespaces,
registers a fence_hafence device for an ipmi_sim BMC and fences a node through it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hafence.simdevices.ipmi_sim import available as ipmi_sim_available

FENCED = Path("/usr/lib/pacemaker/pacemaker-fenced")
AGENT = shutil.which("fence_hafence") or str(Path(sys.executable).with_name("fence_hafence"))
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for private namespaces"),
    pytest.mark.skipif(not ipmi_sim_available(), reason="ipmi_sim not installed"),
]


def test_pacemaker_fences_through_fence_hafence(tmp_path: Path) -> None:
    assert FENCED.exists() and shutil.which("stonith_admin"), (
        "Debian's pacemaker and pacemaker-cli-utils are missing (scripts/install.sh)"
    )
    proc = subprocess.run(
        # private mount, network and pid namespaces: if the drill dies, every process of
        # it (fencer, ipmi_sim, agents) dies with its pid namespace
        ["unshare", "--fork", "--pid", "--kill-child", "--mount-proc", "-m", "-n",
         sys.executable, "-m", "tests.fence_hafence.pacemaker_drill", str(tmp_path), AGENT],
        capture_output=True, text=True, timeout=240, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    log = r.pop("fenced_log")
    password = r.pop("password")
    assert r["metadata"]["rc"] == 0 and 'name="fence_hafence"' in r["metadata"]["out"]
    assert r["validate"]["rc"] == 0, r["validate"]
    assert r["validate_bad"]["rc"] != 0 and "lanplus" in r["validate_bad"]["out"]
    assert r["register"]["rc"] == 0, r["register"]
    assert r["query_on"]["rc"] == 0, r["query_on"]
    assert r["power_before"] == "on"
    assert r["fence"]["rc"] == 0, (r["fence"], log[-3000:])
    assert r["power_after"] == "off"  # the BMC itself says off
    assert r["power_calls"] == ["set power 0"]
    assert r["unfence"]["rc"] == 0 and r["power_unfenced"] == "on"
    assert password not in log + json.dumps(r)  # not in the fencer's log, nor any output
