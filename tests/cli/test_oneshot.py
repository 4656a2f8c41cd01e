"""One-shot ``hafence device status`` processes.

They import what they use and nothing else: the one driver's plugin, not the other
drivers (pysnmp alone costs more than the IPMI work), not the store, not fence.cfg
checking, not importlib.metadata (benchmarks/oneshot.py measures the time; this guards
the cause). And they close their BMC session when they end, as ipmitool does: a BMC
has few session slots (ipmi_sim 63), and one-shot commands leaving theirs open until
the idle timeout lock everyone out, the fencer included.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.cli.conftest import PASSWORD, device_line

# What `hafence device status` must never import: other drivers and their libraries,
# the HA store and core, config checking, and the stdlib's metadata machinery (plugin
# entry points are read by hafence.plugins_index).
NOT_IMPORTED = (
    "hafence_snmp", "pysnmp", "hafence_redfish", "sushy", "hafence_serial", "serial",
    "hafence_fence_agent", "hafence_watchdogs", "hafence_resources", "hafence_ocf",
    "hafence.store", "hafence.ha", "hafence.fence.check", "hafence.sim", "hafence.watchdog",
    "importlib.metadata", "pyghmi.ipmi.oem.lenovo", "pyghmi.redfish",
)  # fmt: skip

CODE = """
import atexit, sys
from hafence.cli.main import cli
atexit.register(lambda: print("MODULES", " ".join(sorted(sys.modules)), file=sys.stderr))
sys.argv[0] = "hafence"
cli()
"""


@pytest.mark.peer("ipmi_sim")
def test_device_status_imports_only_its_driver(bmc, write_cfg, tmp_path):
    cfg = write_cfg(f"{device_line('bmc1', bmc)}\nconnect bmc1 node=node1\n")
    p = subprocess.run(
        [sys.executable, "-c", CODE, "device", "status", "--config", str(cfg), "--device", "bmc1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[1].split()[:5] == ["bmc1", "ipmi", "status", "ok", "on"]
    line = next(x for x in p.stderr.splitlines() if x.startswith("MODULES "))
    modules = set(line.split()[1:])
    assert {"hafence_ipmi", "pyghmi"} <= modules  # the check sees real imports
    leaked = {m for m in modules for bad in NOT_IMPORTED if m == bad or m.startswith(bad + ".")}
    assert leaked == set()


def active_sessions(bmc) -> int:
    """The BMC's open sessions, ipmitool's own for this question included."""
    p = subprocess.run(
        ["ipmitool", "-I", "lanplus", "-C", "3", "-H", bmc.host, "-p", str(bmc.port),
         "-U", bmc.user, "-E", "session", "info", "active"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "IPMI_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return int(re.search(r"active sessions\s*:\s*(\d+)", p.stdout).group(1))


@pytest.mark.peer("ipmi_sim")
def test_device_status_closes_its_bmc_session(script, bmc, node_cfg):
    for _ in range(3):
        p = script("device", "status", "--config", str(node_cfg), "--device", "bmc1")
        assert p.exit_code == 0, p.output
    assert active_sessions(bmc) == 1  # only ipmitool's: the three runs logged out
