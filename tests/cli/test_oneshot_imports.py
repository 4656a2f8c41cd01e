"""A one-shot ``hafence device status`` imports what it uses and nothing else: the one
driver's plugin, not the other drivers (pysnmp alone costs more than the IPMI work),
not the store, not fence.cfg checking, not importlib.metadata. benchmarks/oneshot.py
measures the time; this guards the cause."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli.conftest import device_line

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
