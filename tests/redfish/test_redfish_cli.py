"""``hafence device`` and ``hafence fence`` drive the Redfish emulator (in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hafence.cli.main import cli
from tests.peers.redfish import RedfishEmulator

from .conftest import PASSWORD


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HAFENCE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("BMC_PW", PASSWORD)
    return tmp_path / "state"


def opts(bmc: RedfishEmulator) -> list[str]:
    out = ["--driver", "redfish", "--password-env", "BMC_PW", "-o", "timeout=2"]
    for k, v in bmc.driver_options("node2").items():
        if k != "password":
            out += ["-o", f"{k}={v}"]
    return out


def test_device_off_status_and_list(bmc: RedfishEmulator) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["device", "off", "--yes", *opts(bmc)])
    assert r.exit_code == 0, r.output
    assert bmc.power("node2") == "off" and PASSWORD not in r.output
    r = runner.invoke(cli, ["--output", "json", "device", "status", *opts(bmc)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["state"] == "off"
    r = runner.invoke(cli, ["--output", "json", "device", "list", *opts(bmc)])
    assert r.exit_code == 0, r.output
    ports = {p["name"]: p["state"] for p in json.loads(r.stdout)["ports"]}
    assert ports == {"node1": "on", "node2": "off"}


def test_wrong_password_exit_code_and_no_secret(bmc: RedfishEmulator, monkeypatch) -> None:
    monkeypatch.setenv("BMC_PW", "Wr0ng-guess!pw")
    r = CliRunner().invoke(cli, ["--output", "json", "device", "status", *opts(bmc)])
    assert r.exit_code != 0
    assert json.loads(r.stdout)["error_kind"] == "auth_failed"
    assert "Wr0ng-guess!pw" not in r.output and PASSWORD not in r.output


def test_fence_dry_run_then_fence(bmc: RedfishEmulator, tmp_path: Path) -> None:
    o = bmc.driver_options("node2")
    del o["password"], o["system"]
    args = " ".join(f"{k}='{v}'" for k, v in o.items())
    cfg = tmp_path / "fence.cfg"
    cfg.write_text(
        f"device bmc redfish {args} password_env=BMC_PW timeout=2 power_timeout=2\n"
        f"connect bmc node=node2 system=node2\n"
    )
    runner = CliRunner()
    r = runner.invoke(cli, ["fence", "node2", "--dry-run", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert bmc.calls() == []
    r = runner.invoke(cli, ["--output", "json", "fence", "node2", "--yes", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] is True and bmc.power("node2") == "off"
