"""hwtests' hardware config: validation, and a real run of hwtests/test_ipmi_hw.py
against an ipmi_sim configured as if it were hardware."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hafence.errors import ConfigError
from hafence.simdevices.ipmi_sim import IpmiSim
from hwtests.conftest import load_hw_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hardware.toml"
    path.write_text(text)
    return path


def test_no_config_is_none(tmp_path: Path) -> None:
    assert load_hw_config(tmp_path / "missing.toml") is None


def test_example_config_parses_to_devices(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    example = (ROOT / "hwtests" / "hardware.example.toml").read_text()
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    example = example.replace("/etc/hafence/secrets/node3-bmc", str(secret))
    monkeypatch.setenv("HAFENCE_SWITCH1_AUTH", "auth-key-1")
    monkeypatch.setenv("HAFENCE_SWITCH1_PRIV", "priv-key-1")
    cfg = load_hw_config(write(tmp_path, example))
    assert cfg is not None
    assert [(d.name, d.driver, d.allow_power_off) for d in cfg.devices] == [
        ("node3-bmc", "ipmi", False),
        ("rack1-switch-port7", "snmp_ifmib", False),
    ]
    assert cfg.data["watchdog"]["main"]["device"] == "/dev/watchdog0"


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('[fence.b]\ndriver = "ipmi"\nip = "h"\npassword = "pw"\n', "fence.b.password", "_file"),
        ('[fence.b]\ndriver = "nope"\n', "fence.b.driver", "unknown"),
        ('[fence.b]\nip = "h"\n', "fence.b.driver", "missing"),
        (
            '[fence.b]\ndriver = "ipmi"\nip = "h"\npassword_env = "HAFENCE_T_UNSET_VAR"\n',
            "fence.b.password_env",
            "not set",
        ),
        (
            '[fence.b]\ndriver="ipmi"\nip="h"\npassword_env="HOME"\nprivlvl="god"\n',
            "fence.b.privlvl",
            "one of",
        ),
        ('[fence.b]\ndriver="ipmi"\nallow_power_off="yes"\n', "fence.b.allow_power_off", "true"),
    ],
)
def test_config_errors_name_file_and_field(tmp_path: Path, text: str, field: str, words) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_hw_config(path)
    assert err.value.file == str(path) and err.value.field == field
    assert words in err.value.message
    assert 'pw"' not in str(err.value)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_hw_config(write(tmp_path, "[fence.b]\ndriver = \n"))
    assert err.value.line == 2 and "hardware.toml:2: invalid TOML" in str(err.value)


def run_hwtests(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HAFENCE_HW_CONFIG": str(config)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "hwtests/test_ipmi_hw.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


@pytest.mark.parametrize("allow", [False, True])
def test_hwtests_run_against_configured_bmc(tmp_path: Path, allow: bool) -> None:
    with IpmiSim(workdir=tmp_path / "bmc", password="Configured-pw9") as bmc:
        pw = tmp_path / "bmc.pw"
        pw.write_text(bmc.password + "\n")
        config = write(
            tmp_path,
            f'[fence.lab-bmc]\ndriver = "ipmi"\nallow_power_off = {str(allow).lower()}\n'
            f'ip = "{bmc.host}"\nport = {bmc.port}\nusername = "{bmc.user}"\n'
            f'password_file = "{pw}"\ntimeout = 5\npoll_interval = 0.05\n',
        )
        proc = run_hwtests(config)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert "lab-bmc" in out or "passed" in out
        if allow:
            assert "6 passed" in out, out
            assert bmc.power_calls() == ["set power 0", "set power 1"] * 2
        else:
            assert "4 passed, 2 skipped" in out, out
            assert "allow_power_off is not set" in out
            assert bmc.power_calls() == []  # read-only: nothing powered
        assert bmc.password not in out


def test_clusterlabs_agent_devices_are_accepted(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    cfg = load_hw_config(
        write(
            tmp_path,
            f'[fence.old]\ndriver = "fence_ipmilan"\nip = "192.0.2.1"\npassword_file = "{pw}"\n',
        )
    )
    assert cfg is not None and cfg.devices[0].build().name == "fence_ipmilan"
