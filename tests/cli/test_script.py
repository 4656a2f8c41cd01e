"""The installed ``hafence`` console script as a subprocess, against a real ipmi_sim and
a real SNMP agent (snmpsim) on loopback: what an operator or a script actually runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hafence.simdevices.snmp_agent import snmp_agent
from tests.cli.conftest import PASSWORD, WRONG, device_line, hafence_script, ipmi_args


def no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert WRONG not in text


# -- ipmi_sim ----------------------------------------------------------------------
@pytest.mark.peer("ipmi_sim")
def test_dry_run_then_verified_off(script, bmc, node_cfg):
    p = script("fence", "node1", "--dry-run", "--config", str(node_cfg))
    assert p.exit_code == 0, p.output
    assert "result: OK" in p.stdout and "time budget:" in p.stdout
    p = script("fence", "node1", "--dry-run", "--config", str(node_cfg), "--output", "json")
    assert p.exit_code == 0, p.output
    data = json.loads(p.stdout)
    assert data["ok"] and data["budget_seconds"] > 0 and data["devices"][0]["state"] == "on"
    assert bmc.power_calls() == []
    p = script("fence", "node1", "--config", str(node_cfg))  # stdin is /dev/null: refuse
    assert p.exit_code == 2 and "refusing without confirmation" in p.stderr
    assert bmc.power == "on"
    p = script("-v", "fence", "node1", "--yes", "--config", str(node_cfg))
    assert p.exit_code == 0, p.output
    assert bmc.power == "off"
    # -v: Proxmox-style decision lines on stderr, naming node and device
    assert re.search(
        r"info +fence: fence node 'node1': level 1 device 'bmc1' off confirmed", p.stderr
    )
    no_secret(p.stdout, p.stderr)


@pytest.mark.peer("ipmi_sim")
def test_wrong_password_exit_1_no_secret_anywhere(script, bmc, wrong_password_file, write_cfg):
    p = script(
        "-vv", "device", "status", *ipmi_args(bmc), "--password-file", str(wrong_password_file),
        "--output", "json",
    )  # fmt: skip
    assert p.exit_code == 1
    assert json.loads(p.stdout)["error_kind"] == "auth_failed"
    no_secret(p.stdout, p.stderr)
    cfg = write_cfg(f"{device_line('bmc1', bmc, password=WRONG)}\nconnect bmc1 node=node1\n")
    p = script("-vv", "fence", "node1", "--yes", "--retries", "0", "--config", str(cfg))
    assert p.exit_code == 1
    assert "NOT fenced: auth_failed" in p.stderr
    assert bmc.power == "on"
    no_secret(p.stdout, p.stderr)


def test_bad_config_exit_2_names_file_line(script, write_cfg):
    cfg = write_cfg("device a ipmi ip=127.0.0.1 password=x\nconnect a node=n1 port=abc\n")
    p = script("config", "check", str(cfg))
    assert p.exit_code == 2
    assert f"{cfg}:2: port: expected integer, got 'abc'" in p.stderr
    p = script("fence", "n1", "--dry-run", "--config", str(cfg), "--output", "json")
    assert p.exit_code == 2
    data = json.loads(p.stdout)
    assert data["devices"][0]["error_kind"] == "config_error"
    assert f"{cfg}:2: port" in data["devices"][0]["message"]


def test_usage_error_exit_2(script):
    p = script("fence")
    assert p.exit_code == 2 and "Missing argument 'NODE'" in p.stderr
    p = script("device", "off", "--bogus-flag")
    assert p.exit_code == 2


@pytest.mark.peer("ipmi_sim")
def test_confirmation_on_a_terminal(bmc, node_cfg):
    """On a tty the destructive action asks: 'n' leaves the power on, 'y' fences."""
    exe = hafence_script()

    def answer(reply: str) -> subprocess.CompletedProcess[str]:
        master, slave = os.openpty()
        try:
            proc = subprocess.Popen(
                [exe, "fence", "node1", "--config", str(node_cfg)],
                stdin=slave,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            os.write(master, reply.encode() + b"\n")  # the tty buffers it until read
            out, err = proc.communicate(timeout=60)
        finally:
            os.close(slave)
            os.close(master)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    p = answer("n")
    assert "fence node 'node1' (off)" in p.stderr and "[y/N]" in p.stderr
    assert p.returncode == 1 and "aborted" in p.stderr
    assert bmc.power == "on" and bmc.power_calls() == []
    p = answer("y")
    assert p.returncode == 0, p.stdout + p.stderr
    assert bmc.power == "off"


@pytest.mark.peer("ipmi_sim")
def test_demo_runs_and_cleans_up(script):
    p = script("demo", timeout=180)
    assert p.exit_code == 0, p.output
    out = p.stdout
    for expected in (
        "$ hafence config check",
        "result: OK",
        "node 'node1' fenced: off confirmed by level 1 (bmc1)",
        "(the simulator itself reports the target's power: off)",
        "(the simulator itself reports the target's power: on)",
        "demo done",
    ):
        assert expected in out
    workdir = re.search(r"working in (\S+)", out)
    assert workdir and not Path(workdir.group(1)).exists()
    assert "demo-" not in out.replace("hafence-demo-", "")  # the BMC password never shown


# -- SNMP agent ----------------------------------------------------------------------
@pytest.fixture
def switch(tmp_path: Path):
    if not shutil.which("snmpsim-command-responder"):
        pytest.skip("snmpsim not installed (pip install -e '.[test]')")
    with snmp_agent(workdir=tmp_path / "snmpsim") as agent:
        yield agent


@pytest.mark.peer("snmpsim")
def test_snmp_dry_run_and_verified_off(script, switch, write_cfg):
    cfg = write_cfg(
        # the device's own timeouts: the test judges outcomes, on a machine maybe busy
        f"device sw snmp_ifmib {switch.cfg_args()} poll_interval=0.05\n"
        "connect sw node=node1 plug=Gi1/0/1\nconnect sw node=node2 plug=Gi1/0/2\n"
    )
    p = script("fence", "node1", "--dry-run", "--config", str(cfg), "--output", "json")
    assert p.exit_code == 0, p.output
    data = json.loads(p.stdout)
    assert data["ok"] and data["devices"][0]["driver"] == "snmp_ifmib"
    assert data["devices"][0]["state"] == "on"
    assert switch.set_requests() == []  # a dry run sends no SET
    p = script("fence", "node1", "--yes", "--config", str(cfg))
    assert p.exit_code == 0, p.output
    assert switch.get_admin_status(1) == 2 and switch.get_admin_status(2) == 1
    p = script("chain", "node2", "--config", str(cfg))
    assert p.exit_code == 0 and "community=******" in p.stdout
    for text in (p.stdout, p.stderr):
        assert switch.community not in text


@pytest.mark.peer("snmpsim")
def test_snmp_device_list_with_community_from_env(script, switch):
    env = {"SW_COMMUNITY": switch.community}
    p = script(
        "device", "list", "--driver", "snmp_ifmib", "-o", f"ip={switch.host}",
        "-o", f"ipport={switch.port}", "-o", "plug=1", "-o", "community_env=SW_COMMUNITY",
        "--output", "json", env=env,
    )  # fmt: skip
    assert p.exit_code == 0, p.output
    names = {port["name"] for port in json.loads(p.stdout)["ports"]}
    assert "GigabitEthernet1/0/1" in names or "Gi1/0/1" in names
    assert switch.community not in p.stdout + p.stderr
