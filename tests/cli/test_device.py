"""``hafence device ACTION`` against a real ipmi_sim BMC on loopback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hafence.fence import FenceHistory
from tests.cli.conftest import PASSWORD, WRONG, device_line, ipmi_args

pytestmark = pytest.mark.peer("ipmi_sim")


def no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert WRONG not in text


def test_status_with_password_file(run, bmc, password_file):
    r = run("device", "status", *ipmi_args(bmc), "--password-file", str(password_file))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["DEVICE", "DRIVER", "ACTION", "RESULT", "STATE", "TIME"]
    assert lines[1].split()[:5] == ["ipmi", "ipmi", "status", "ok", "on"]
    assert bmc.power_calls() == []


def test_status_json_reads_off(run, bmc, password_file):
    bmc.set_power(False)
    r = run(
        "device", "status", *ipmi_args(bmc), "--password-file", str(password_file),
        "--output", "json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["ok"], data["state"], data["action"], data["error_kind"]) == (
        True,
        "off",
        "status",
        None,
    )


def test_password_env_and_option_env(run, bmc):
    env = {"BMC_PW": PASSWORD}
    r = run("device", "status", *ipmi_args(bmc), "--password-env", "BMC_PW", env=env)
    assert r.exit_code == 0, r.output
    r = run("device", "status", *ipmi_args(bmc), "-o", "password_env=BMC_PW", env=env)
    assert r.exit_code == 0, r.output
    r = run("device", "status", *ipmi_args(bmc), "--password-env", "NOT_SET_ANYWHERE")
    assert r.exit_code == 2
    assert "NOT_SET_ANYWHERE" in r.stderr


def test_bare_password_warns_and_is_never_shown(run, bmc):
    r = run("-vv", "device", "status", *ipmi_args(bmc), "--password", PASSWORD)
    assert r.exit_code == 0, r.output
    assert "warning: --password puts a secret on the command line" in r.stderr
    no_secret(r.stdout, r.stderr)


def test_wrong_password_exit_1_auth_failed_no_secret(run, bmc, wrong_password_file):
    args = ("device", "status", *ipmi_args(bmc), "--password-file", str(wrong_password_file))
    r = run("-vv", *args)
    assert r.exit_code == 1
    assert "FAILED (auth_failed)" in r.stdout
    assert "error: auth_failed:" in r.stderr
    no_secret(r.stdout, r.stderr)
    r = run(*args, "--output", "json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["error_kind"] == "auth_failed"
    no_secret(r.stdout, r.stderr)


def test_off_refused_without_yes_and_without_tty(run, bmc, password_file):
    r = run("device", "off", *ipmi_args(bmc), "--password-file", str(password_file))
    assert r.exit_code == 2
    assert "refusing without confirmation" in r.stderr and "--yes" in r.stderr
    assert bmc.power == "on"
    assert bmc.power_calls() == []
    r = run(
        "device", "off", *ipmi_args(bmc), "--password-file", str(password_file),
        "--output", "json",
    )  # fmt: skip
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error_kind"] == "not_confirmed"
    assert bmc.power_calls() == []


def test_off_yes_verified_and_recorded(run, bmc, password_file, state_dir):
    r = run(
        "device", "off", "--yes", *ipmi_args(bmc), "--password-file", str(password_file),
        "--node", "node7", "--output", "json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["ok"] is True and data["state"] == "off" and data["node"] == "node7"
    assert bmc.power == "off"
    assert "set power 0" in bmc.power_calls()
    recs = FenceHistory(state_dir / "fence-history.jsonl").records("node7")
    assert [(r.action, r.ok) for r in recs] == [("off", True)]
    # and back on, verified
    r = run("device", "on", *ipmi_args(bmc), "--password-file", str(password_file))
    assert r.exit_code == 0, r.output
    assert bmc.power == "on"


def test_off_stuck_bmc_is_still_on(run, ipmi_sims, password_file):
    bmc = ipmi_sims(stuck=True)
    r = run(
        "device", "off", "--yes", *ipmi_args(bmc), "-o", "power_timeout=0.5",
        "--password-file", str(password_file),
    )  # fmt: skip
    assert r.exit_code == 1
    assert "FAILED (still_on)" in r.stdout
    assert bmc.power == "on"


def test_reboot_yes_ends_on(run, bmc, password_file):
    r = run(
        "device", "reboot", "--yes", *ipmi_args(bmc), "--password-file", str(password_file),
        "--output", "json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["state"] == "on"
    assert bmc.power == "on"
    assert bmc.power_calls(), "reboot sent no power command"


def test_monitor_and_list(run, bmc, password_file):
    base = (*ipmi_args(bmc), "--password-file", str(password_file))
    r = run("device", "monitor", *base)
    assert r.exit_code == 0, r.output
    r = run("device", "list", *base, "--output", "json")
    assert r.exit_code == 0, r.output
    ports = json.loads(r.stdout)["ports"]
    assert ports and ports[0]["state"] == "on"


def test_diag_asks_then_reaches_the_bmc(run, bmc, password_file):
    base = (*ipmi_args(bmc), "--password-file", str(password_file))
    r = run("device", "diag", *base)
    assert r.exit_code == 2 and "refusing without confirmation" in r.stderr
    r = run("device", "diag", "--yes", *base, "--output", "json")
    data = json.loads(r.stdout)
    assert data["action"] == "diag"
    # ipmi_sim may or may not implement the NMI pulse; either way the BMC answered.
    assert data["ok"] or data["error_kind"] in ("device_error", "not_supported"), data
    assert r.exit_code == (0 if data["ok"] else 1)


def test_diag_not_offered_by_driver_is_usage_error(run, tmp_path):
    r = run(
        "device", "diag", "--yes", "--driver", "snmp_ifmib", "-o", "ip=127.0.0.1",
        "-o", "plug=1", "-o", "community=x",
    )  # fmt: skip
    assert r.exit_code == 2
    assert "no 'diag' action" in r.stderr


def test_unreachable_bmc_times_out_within_timeout(run, closed_udp_port, password_file):
    r = run(
        "--timeout", "1", "device", "status", "--driver", "ipmi", "-o", "ip=127.0.0.1",
        "-o", f"ipport={closed_udp_port}", "--password-file", str(password_file),
        "--output", "json",
    )  # fmt: skip
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["error_kind"] in ("timeout", "unreachable"), data


def test_device_from_fence_cfg(run, bmc, write_cfg):
    cfg = write_cfg(
        f"{device_line('bmc1', bmc)}\nconnect bmc1 node=node1\n"
        f"{device_line('bmc2', bmc)}\nconnect bmc2 node=node1\nconnect bmc2 node=node2\n"
    )
    r = run("device", "status", "--config", str(cfg), "--device", "bmc1")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[1].split()[:5] == ["bmc1", "ipmi", "status", "ok", "on"]
    r = run("device", "status", "--config", str(cfg), "--device", "bmc2")
    assert r.exit_code == 2 and "--node" in r.stderr
    r = run("device", "status", "--config", str(cfg), "--device", "bmc2", "--node", "node2")
    assert r.exit_code == 0, r.output
    r = run("device", "status", "--config", str(cfg), "--device", "nope")
    assert r.exit_code == 2 and "no device 'nope'" in r.stderr
    r = run("device", "status", "--config", str(cfg), "--device", "bmc1", "--node", "node2")
    assert r.exit_code == 2 and "not connected to node 'node2'" in r.stderr
    no_secret(r.stdout, r.stderr)


def test_device_from_fence_cfg_with_timeout_override(run, bmc, write_cfg, closed_udp_port):
    cfg = write_cfg(
        f"{device_line('dead', bmc, ipport=closed_udp_port, timeout=30)}\nconnect dead node=n1\n"
    )
    r = run(
        "device", "status", "--config", str(cfg), "--device", "dead", "--timeout", "1",
        "--output", "json",
    )  # fmt: skip
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["error_kind"] in ("timeout", "unreachable")
    # The override, not the config's 30 s, bounded the request.
    bound = re.search(r"within ([\d.]+)s", data["message"])
    assert bound and float(bound.group(1)) <= 1.0, data["message"]


def test_usage_errors_exit_2(run, bmc, password_file):
    r = run("device", "status")
    assert r.exit_code == 2 and "which device?" in r.stderr
    r = run("device", "status", "--driver", "nosuch")
    assert r.exit_code == 2 and "unknown fence driver 'nosuch'" in r.stderr and "ipmi" in r.stderr
    r = run("device", "status", "--driver", "ipmi", "--password-file", str(password_file))
    assert r.exit_code == 2 and "ip: required" in r.stderr
    r = run("device", "status", *ipmi_args(bmc), "-o", "bogus=1", "--output", "json")
    assert r.exit_code == 2
    data = json.loads(r.stdout)
    assert data["error_kind"] == "config_error" and data["errors"][0]["field"] == "bogus"
    r = run("device", "status", "--driver", "ipmi", "--device", "x")
    assert r.exit_code == 2


def test_missing_password_file_is_usage_error(run, bmc, tmp_path: Path):
    r = run("device", "status", *ipmi_args(bmc), "--password-file", str(tmp_path / "none"))
    assert r.exit_code == 2
    assert "password_file" in r.stderr
