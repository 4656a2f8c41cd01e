"""fence_hafence spoken to the way Pacemaker speaks to a fence agent.

The console script runs as a subprocess: options as ``name=value`` lines on stdin (what
Pacemaker's fencer sends) or fence-agents' argv options, exit codes as fence-agents
define them, against a real BMC (OpenIPMI ipmi_sim on loopback).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from hafence.simdevices.ipmi_sim import IpmiSim
from hafence.simdevices.ipmi_sim import available as ipmi_sim_available

AGENT = shutil.which("fence_hafence") or str(Path(sys.executable).with_name("fence_hafence"))
FENCE_RNG = Path("/usr/share/cluster/relaxng/metadata.rng")  # from Debian's fence-agents


def run(stdin: str = "", *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT, *argv], input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpmiSim]:
    if not ipmi_sim_available():
        pytest.skip("OpenIPMI ipmi_sim not installed (scripts/install.sh installs it)")
    with IpmiSim(workdir=tmp_path_factory.mktemp("bmc"), password="Agent-s3cret!") as sim:
        yield sim


@pytest.fixture
def pwfile(tmp_path: Path, bmc: IpmiSim) -> Path:
    p = tmp_path / "bmc.pw"
    p.write_text(bmc.password + "\n")
    p.chmod(0o600)
    return p


def stdin_for(bmc: IpmiSim, action: str, *, password: str | None = None, **more: str) -> str:
    lines = {
        "action": action, "driver": "ipmi", "ip": bmc.host, "ipport": str(bmc.port),
        "username": bmc.user, "password": password or bmc.password,
        "nodename": "node1", "port": "node1", "power_timeout": "10", "poll_interval": "0.05",
    }  # fmt: skip
    lines.update(more)
    return "".join(f"{k}={v}\n" for k, v in lines.items() if v is not None)


def test_metadata_validates_against_fence_agents_schema() -> None:
    assert FENCE_RNG.exists(), "fence-agents' metadata.rng missing (install fence-agents)"
    schema = etree.RelaxNG(etree.parse(str(FENCE_RNG)))
    for argv in (("-o", "metadata"), ("-o", "metadata", "--driver=ipmi")):
        r = run("", *argv)
        assert r.returncode == 0, r.stderr
        doc = etree.fromstring(r.stdout.encode())
        assert schema.validate(doc), schema.error_log
        names = [p.get("name") for p in doc.iter("parameter")]
        assert {"action", "driver", "plug", "ip", "ipport", "username", "password"} <= set(names)
        assert "port" not in names  # fence-agents' port is the plug: never ipmi's UDP port
        actions = {a.get("name") for a in doc.iter("action")}
        assert {"on", "off", "reboot", "status", "list", "monitor", "metadata",
                "validate-all"} <= actions  # fmt: skip
    # stdin, as Pacemaker asks for metadata
    assert run("action=metadata\n").stdout.startswith("<?xml")


def test_stdin_status_off_on_with_fence_agent_exit_codes(bmc: IpmiSim) -> None:
    bmc.set_power(True)
    r = run(stdin_for(bmc, "status"))
    assert (r.returncode, r.stdout) == (0, "Status: ON\n"), r.stderr
    r = run(stdin_for(bmc, "off"))
    assert (r.returncode, r.stdout) == (0, "Success: Powered OFF\n"), r.stderr
    assert bmc.power == "off"  # verified by the BMC itself, not by the agent
    r = run(stdin_for(bmc, "status"))
    assert (r.returncode, r.stdout) == (2, "Status: OFF\n"), r.stderr
    r = run(stdin_for(bmc, "on"))
    assert (r.returncode, r.stdout) == (0, "Success: Powered ON\n"), r.stderr
    assert bmc.power == "on"
    bmc.clear_calls()
    r = run(stdin_for(bmc, "reboot"))
    assert (r.returncode, r.stdout) == (0, "Success: Rebooted\n"), r.stderr
    assert bmc.power_calls() == ["set power 0", "set power 1"]  # off, verified, on


def test_monitor_list_validate(bmc: IpmiSim) -> None:
    assert run(stdin_for(bmc, "monitor")).returncode == 0
    r = run(stdin_for(bmc, "list"))
    assert (r.returncode, r.stdout) == (0, f"{bmc.host},bmc\n"), r.stderr
    r = run(stdin_for(bmc, "list-status"))
    assert r.stdout == f"{bmc.host},bmc,ON\n"
    bmc.clear_calls()
    assert run(stdin_for(bmc, "validate-all")).returncode == 0
    assert bmc.calls() == []  # validation touches no device


def test_argv_options_and_secret_sources(bmc: IpmiSim, pwfile: Path, tmp_path: Path) -> None:
    bmc.set_power(True)
    base = ["--driver=ipmi", "-a", bmc.host, "-u", str(bmc.port), "-l", bmc.user]
    r = run("", "-o", "status", *base, "-p", bmc.password)
    assert (r.returncode, r.stdout) == (0, "Status: ON\n"), r.stderr
    r = run("", "--action=status", *base, f"--password-file={pwfile}")
    assert r.returncode == 0, r.stderr
    script = tmp_path / "pw.sh"
    script.write_text(f"#!/bin/sh\ncat {pwfile}\n")
    script.chmod(0o700)
    r = run("", "-o", "status", *base, "-S", str(script))
    assert r.returncode == 0, r.stderr
    r = run(f"action=status\ndriver=ipmi\nip={bmc.host}\nipport={bmc.port}\n"
            f"username={bmc.user}\npassword_env=BMC_PW\n")  # fmt: skip
    assert r.returncode == 1 and "password_env" in r.stderr  # not set in our environment
    env_run = subprocess.run(
        [AGENT], input=f"action=status\ndriver=ipmi\nip={bmc.host}\nipport={bmc.port}\n"
        f"username={bmc.user}\npassword_env=BMC_PW\n",
        capture_output=True, text=True, env={"BMC_PW": bmc.password, "PATH": "/usr/bin"},
        timeout=60, check=False,
    )  # fmt: skip
    assert (env_run.returncode, env_run.stdout) == (0, "Status: ON\n"), env_run.stderr


def test_failures_exit_1_and_never_echo_the_secret(bmc: IpmiSim) -> None:
    bmc.set_power(True)
    wrong = "Wrong-pw-1234"
    for action in ("status", "off", "monitor"):
        r = run(stdin_for(bmc, action, password=wrong, verbose="1"))
        assert r.returncode == 1, (action, r.stdout, r.stderr)
        assert "auth_failed" in r.stderr
        assert wrong not in r.stdout + r.stderr
        assert bmc.password not in r.stdout + r.stderr
    assert bmc.power == "on"  # a refused off changed nothing
    r = run(stdin_for(bmc, "status", frobnicate="1"))
    assert r.returncode == 1 and "frobnicate" in r.stderr  # unknown parameter, named
    r = run(stdin_for(bmc, "status", driver="nosuch"))
    assert r.returncode == 1 and "nosuch" in r.stderr
    r = run(stdin_for(bmc, "explode"))
    assert r.returncode == 1 and "action" in r.stderr
    r = run(stdin_for(bmc, "validate-all", ipport="many"))
    assert r.returncode == 1 and "ipport" in r.stderr  # validation names the field
    assert bmc.password not in r.stderr


def test_unreachable_device_fails_within_its_timeout(closed_udp_port: int) -> None:
    r = run(f"action=status\ndriver=ipmi\nip=127.0.0.1\nipport={closed_udp_port}\n"
            "password=x\ntimeout=1\n")  # fmt: skip
    assert r.returncode == 1
    assert "unreachable" in r.stderr or "timeout" in r.stderr, r.stderr
