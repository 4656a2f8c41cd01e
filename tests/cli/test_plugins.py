"""``hafence plugins list``, ``drivers list``, ``driver metadata``: the real registry,
and a vendor distribution with broken plugins installed next to it (a real dist-info on
PYTHONPATH, run through the console script)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

FIRST_PARTY = {"ipmi": "ipmi", "snmp_ifmib": "snmp_ifmib", "fence_agent": "fence_agent"}


def test_plugins_list_text(run):
    r = run("plugins", "list")
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:] if line.strip()}
    for plugin, driver in FIRST_PARTY.items():
        assert plugin in rows
        assert "hafence 0.1.0" in rows[plugin]
        assert f"fence:{driver}" in rows[plugin]
        assert rows[plugin].rstrip().endswith("ok")


def test_plugins_list_json(run):
    r = run("plugins", "list", "--output", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["ipmi"]["module"] == "hafence_ipmi"
    assert by_name["ipmi"]["drivers"] == ["fence:ipmi"]
    assert by_name["snmp_ifmib"]["source"].startswith("hafence ")


def test_drivers_list(run):
    r = run("drivers", "list", "--output", "json")
    assert r.exit_code == 0, r.output
    rows = {(d["kind"], d["name"]): d for d in json.loads(r.stdout)}
    ipmi = rows[("fence", "ipmi")]
    assert ipmi["plugin"] == "ipmi"
    assert {"status", "off", "on", "reboot", "diag"} <= set(ipmi["actions"])
    assert "diag" not in rows[("fence", "snmp_ifmib")]["actions"]
    r = run("drivers", "list")
    assert r.exit_code == 0
    assert any(line.split()[:3] == ["ipmi", "fence", "ipmi"] for line in r.stdout.splitlines())


def test_driver_metadata_formats(run):
    r = run("driver", "metadata", "ipmi", "--format", "json")
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout)
    params = {p["name"]: p for p in meta["parameters"]}
    assert params["password"]["secret"] is True and params["password"]["default"] is None
    assert params["ip"]["required"] is True
    assert "timeout" in params  # common params are part of every driver
    r = run("driver", "metadata", "snmp_ifmib", "--format", "xml")
    assert r.exit_code == 0, r.output
    root = ET.fromstring(r.stdout)
    assert root.tag == "resource-agent" and root.get("name") == "snmp_ifmib"
    assert {a.get("name") for a in root.iter("action")} >= {"off", "on", "status", "metadata"}
    r = run("driver", "metadata", "ipmi")
    assert r.exit_code == 0
    assert "password (passwd)" in r.stdout and "NAME_file=PATH" in r.stdout
    r = run("--output", "json", "driver", "metadata", "ipmi")
    assert json.loads(r.stdout)["name"] == "ipmi"


def test_driver_metadata_unknown_exit_2(run):
    r = run("driver", "metadata", "nosuch")
    assert r.exit_code == 2
    assert "unknown fence driver 'nosuch'" in r.stderr and "ipmi" in r.stderr
    r = run("driver", "metadata", "nosuch", "--output", "json")
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error_kind"] == "unknown_driver"


def test_fence_agent_metadata_when_installed(run):
    import shutil

    if not shutil.which("fence_ipmilan"):
        pytest.skip("fence-agents not installed")
    r = run("driver", "metadata", "fence_ipmilan", "--output", "json")
    assert r.exit_code == 0, r.output
    names = {p["name"] for p in json.loads(r.stdout)["parameters"]}
    assert "ip" in names or "ipaddr" in names


# -- a vendor distribution with broken plugins -------------------------------------------
@pytest.fixture
def vendor_site(tmp_path: Path) -> Path:
    """A site dir holding 'acme-fence 2.0' with three plugins: one fine, one whose module
    does not import (both with a manifest), one whose hook raises (without one)."""
    site = tmp_path / "site"
    dist = site / "acme_fence-2.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-fence\nVersion: 2.0\n")
    (dist / "entry_points.txt").write_text(
        "[hafence]\n"
        "acme_good = acme_good\n"
        "acme_missing = acme_not_installed_module\n"
        "acme_raises = acme_raises\n"
        # the manifest: acme_good and acme_missing name their drivers, acme_raises does not
        "[hafence.fence_drivers]\n"
        "acme_pdu = acme_good\n"
        "acme_ghost = acme_not_installed_module\n"
    )
    (site / "acme_good.py").write_text(
        "from hafence.fence.driver import FenceDriver, Param, PowerState\n"
        "from hafence.hookspecs import hookimpl\n\n"
        "class AcmePdu(FenceDriver):\n"
        "    name = 'acme_pdu'\n"
        "    description = 'ACME PDU outlet'\n"
        "    params = (Param('ip', str, required=True),)\n"
        "    async def status(self):\n"
        "        return PowerState.ON\n"
        "    async def off(self):\n"
        "        pass\n"
        "    async def on(self):\n"
        "        pass\n\n"
        "@hookimpl\n"
        "def hafence_fence_drivers():\n"
        "    return [AcmePdu]\n"
    )
    (site / "acme_raises.py").write_text(
        "from hafence.hookspecs import hookimpl\n\n"
        "@hookimpl\n"
        "def hafence_fence_drivers():\n"
        "    raise RuntimeError('acme firmware table missing')\n"
    )
    return site


def test_broken_plugins_named_others_load(script, vendor_site):
    env = {"PYTHONPATH": str(vendor_site)}
    p = script("plugins", "list", "--output", "json", env=env)
    assert p.exit_code == 0, p.output
    data = json.loads(p.stdout)
    by_name = {x["name"]: x for x in data["plugins"]}
    assert by_name["acme_good"]["source"] == "acme-fence 2.0"
    assert by_name["acme_good"]["drivers"] == ["fence:acme_pdu"] and by_name["acme_good"]["ok"]
    assert by_name["acme_missing"]["ok"] is False
    assert "acme_not_installed_module" in " ".join(by_name["acme_missing"]["errors"])
    assert by_name["acme_raises"]["ok"] is False
    assert "acme firmware table missing" in " ".join(by_name["acme_raises"]["errors"])
    assert by_name["ipmi"]["ok"] and by_name["ipmi"]["drivers"] == ["fence:ipmi"]
    p = script("plugins", "list", env=env)
    assert p.exit_code == 0
    assert "plugin 'acme_missing'" in p.stdout and "plugin 'acme_raises'" in p.stdout
    # The good vendor driver is usable like a first-party one.
    p = script("device", "status", "--driver", "acme_pdu", "-o", "ip=127.0.0.1", env=env)
    assert p.exit_code == 0, p.output
    assert p.stdout.splitlines()[1].split()[:5] == ["acme_pdu", "acme_pdu", "status", "ok", "on"]
    assert "acme" not in p.stderr  # only acme_good was imported: nobody else complained
    # A declared driver whose plugin is broken: refused, and the plugin named.
    p = script("device", "status", "--driver", "acme_ghost", "-o", "ip=127.0.0.1", env=env)
    assert p.exit_code == 2
    assert "unknown fence driver 'acme_ghost'" in p.stderr
    assert "plugin 'acme_missing'" in p.stderr and "acme_not_installed_module" in p.stderr


def test_one_shot_device_status_imports_only_what_it_uses(bmc, password_file):
    # In a fresh interpreter, as from a shell: the ipmi plugin and nothing of the other
    # plugins, commands or their libraries (pysnmp alone used to cost 0.18 s).
    code = (
        "import sys\n"
        "from hafence.cli.main import cli\n"
        "try:\n"
        "    cli()\n"
        "finally:\n"
        "    print(' '.join(sorted(m for m in sys.modules if '.' not in m or 'cli.' in m)))\n"
    )
    args = ["device", "status", "--driver", "ipmi", "-o", f"ip={bmc.host}",
            "-o", f"ipport={bmc.port}", "-o", f"username={bmc.user}",
            "--password-file", str(password_file)]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table, modules = proc.stdout.rsplit("\n", 2)[0], set(proc.stdout.split("\n")[-2].split())
    assert " status  ok      on " in table
    assert {"hafence_ipmi", "pyghmi", "hafence.cli.devices"} <= modules
    for other in ("hafence_snmp", "pysnmp", "hafence_redfish", "sushy", "hafence_serial",
                  "serial", "hafence_fence_agent", "hafence_watchdogs", "hafence_resources",
                  "hafence.cli.demo", "hafence.cli.sim", "hafence.cli.watchdog"):  # fmt: skip
        assert other not in modules


def test_oneshot_benchmark_runs():
    # benchmarks/oneshot.py end to end, one round (figures live in benchmarks/README.md)
    import shutil

    if not shutil.which("fence_ipmilan"):
        pytest.skip("fence-agents not installed")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "oneshot.py"), "--rounds", "1", "--floors",
         "--json"],
        capture_output=True, text=True, timeout=180, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    # every row checked its answer: the exchange-only floor read the power state too
    for tool in ("hafence device status", "fence_ipmilan -o status",
                 "  hafence: IPMI exchange only", "  fence_ipmilan: python start-up"):  # fmt: skip
        assert len(res[tool]["runs"]) == 1 and res[tool]["min"] > 0
    assert res["speedup"] > 0 and "oneshot-Pw-1" not in proc.stdout + proc.stderr
