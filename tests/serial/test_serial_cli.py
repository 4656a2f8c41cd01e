"""``hafence device`` and ``hafence fence`` drive the serial switch (in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hafence.cli.main import cli
from tests.peers.serial_device import SerialDevice

from .conftest import PASSWORD


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HAFENCE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RELAY_PW", PASSWORD)
    return tmp_path / "state"


def opts(dev: SerialDevice) -> list[str]:
    out = ["--driver", "serial", "--password-env", "RELAY_PW", "-o", "timeout=2"]
    for k, v in dev.driver_options(2).items():
        if k != "password":
            out += ["-o", f"{k}={v}"]
    return out


def test_device_off_and_status_json(switch: SerialDevice) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["device", "off", "--yes", *opts(switch)])
    assert r.exit_code == 0, r.output
    assert switch.power(2) == "off" and PASSWORD not in r.output
    r = runner.invoke(cli, ["--output", "json", "device", "status", *opts(switch)])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["ok"], data["state"], data["driver"]) == (True, "off", "serial")


def test_fence_through_fence_cfg(switch: SerialDevice, tmp_path: Path) -> None:
    o = switch.driver_options(2)
    del o["password"], o["plug"]
    args = " ".join(f"{k}='{v}'" for k, v in o.items())
    cfg = tmp_path / "fence.cfg"
    cfg.write_text(
        f"device relay serial {args} password_env=RELAY_PW timeout=2 power_timeout=2\n"
        "connect relay node=node2 plug=2\n"
    )
    r = CliRunner().invoke(
        cli, ["--output", "json", "fence", "node2", "--yes", "--config", str(cfg)]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] is True and switch.power(2) == "off"
