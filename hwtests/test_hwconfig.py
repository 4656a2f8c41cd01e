"""The hardware config parser (hwtests/conftest.py): every error names file, line and
field, and nothing invalid gets through to a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from hafence.errors import ConfigError

from .conftest import load_hw_config

EXAMPLE = Path(__file__).with_name("hardware.example.toml")


@pytest.fixture
def example(tmp_path: Path) -> str:
    pw = tmp_path / "pw"
    pw.write_text("hw-pw-long-enough\n")
    text = EXAMPLE.read_text().replace("/etc/hafence/secrets/node3-bmc", str(pw))
    text = text.replace('password_env = "HAFENCE_SWITCH1_AUTH"', f'password_file = "{pw}"')
    return text.replace(
        'snmp_priv_passwd_env = "HAFENCE_SWITCH1_PRIV"', f'snmp_priv_passwd_file = "{pw}"'
    )


def load(tmp_path: Path, text: str | bytes):
    path = tmp_path / "hardware.toml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return load_hw_config(path), str(path)


def test_example_loads(tmp_path: Path, example: str) -> None:
    cfg, _ = load(tmp_path, example)
    assert [d.name for d in cfg.devices] == ["node3-bmc", "rack1-switch-port7"]
    assert cfg.devices[0].options["ipport"] == 623


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "says"),
    [
        ("ipport = 623", "ipport = 70000", 18, "fence.node3-bmc.ipport", "out of range (1..65535)"),
        ("ipport = 623", "ipport = -1", 18, "fence.node3-bmc.ipport", "out of range"),
        ("ipport = 623", "ipport = 623.5", 18, "fence.node3-bmc.ipport", "expected integer"),
        ("timeout = 5", "timeout = inf", 22, "fence.node3-bmc.timeout", "finite"),
        ("timeout = 5", "timeout = nan", 22, "fence.node3-bmc.timeout", "finite"),
        ("timeout = 5", "timeout = true", 22, "fence.node3-bmc.timeout", "got True"),
        ('username = "fencer"', 'username = ["a"]', 19, "fence.node3-bmc.username", "string"),
        ("allow_power_off = false\nip = \"192.0.2.13\"", "allow_power_off = 1\nip = \"192.0.2.13\"",
         16, "fence.node3-bmc.allow_power_off", "true or false"),
        ('"/dev/watchdog0"', '"/etc/passwd"', 38, "watchdog.main.device", "/dev/watchdogN"),
        ("[watchdog.main]", "[watchdog.main]\nreset = 1", 38, "watchdog.main.reset", "unknown key"),
        ("[watchdog.main]", "[watchdog.main", 37, None, "invalid TOML"),
    ],
)  # fmt: skip
def test_errors_name_file_line_and_field(
    tmp_path: Path, example: str, old: str, new: str, line: int, field: str | None, says: str
) -> None:
    assert old in example
    with pytest.raises(ConfigError) as info:
        load(tmp_path, example.replace(old, new, 1))
    err = info.value
    assert (err.file, err.line, err.field) == (str(tmp_path / "hardware.toml"), line, field)
    assert says in err.message


def test_bytes_and_structure(tmp_path: Path, example: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, example.encode() + b"# caf\xe9\n")
    assert info.value.line == example.count("\n") + 1 and "not UTF-8" in info.value.message
    with pytest.raises(ConfigError, match="must be a table") as info:
        load(tmp_path, "debug = true\n" + example)
    assert (info.value.line, info.value.field) == (1, "debug")
    with pytest.raises(ConfigError, match="do not put secrets in this file"):
        load(tmp_path, example.replace('username = "fencer"', 'password = "x"', 1))
