"""Fixtures for the ``hafence`` CLI tests: real ipmi_sim BMCs and a real SNMP agent on
loopback, fence.cfg files in tmp_path, and two ways to run the CLI: in-process through
click's CliRunner, and through the installed ``hafence`` console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hafence.cli.main import cli
from hafence.simdevices.ipmi_sim import IpmiSim, free_udp_port, started_sims
from hafence.simdevices.ipmi_sim import available as ipmi_sim_available

PASSWORD = "Cli-s3cret!pw"  # the BMC's real password; no output may ever show it
WRONG = "Wr0ng-guess!pw"  # a wrong one; no output may show it either


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """History and state go to tmp_path, never /var/lib/hafence."""
    d = tmp_path / "state"
    monkeypatch.setenv("HAFENCE_STATE_DIR", str(d))
    monkeypatch.delenv("HAFENCE_FENCE_CFG", raising=False)
    return d


@pytest.fixture
def ipmi_sims(tmp_path: Path) -> Iterator[Callable[..., IpmiSim]]:
    """Factory ``ipmi_sims(**kw) -> IpmiSim`` (started); all stopped at teardown."""
    if not ipmi_sim_available():
        pytest.skip("OpenIPMI ipmi_sim not installed (scripts/install.sh installs it)")
    with started_sims(tmp_path, password=PASSWORD) as start:
        yield start


@pytest.fixture
def bmc(ipmi_sims: Callable[..., IpmiSim]) -> IpmiSim:
    return ipmi_sims()


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    p = tmp_path / "bmc.pw"
    p.write_text(PASSWORD + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture
def wrong_password_file(tmp_path: Path) -> Path:
    p = tmp_path / "wrong.pw"
    p.write_text(WRONG + "\n")
    p.chmod(0o600)
    return p


def device_line(name: str, bmc: IpmiSim, password: str = PASSWORD, **extra: object) -> str:
    """A fence.cfg ``device`` line for an ipmi_sim BMC with small time bounds."""
    opts: dict[str, object] = {
        "ip": bmc.host,
        "ipport": bmc.port,
        "username": bmc.user,
        "password": password,
        "lanplus": 1,
        "timeout": 5,
        "power_timeout": 3,
        "poll_interval": 0.05,
    }
    opts.update(extra)
    return f"device {name} ipmi " + " ".join(f"{k}='{v}'" for k, v in opts.items())


@pytest.fixture
def write_cfg(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "fence.cfg") -> Path:
        p = tmp_path / name
        p.write_text(text)
        p.chmod(0o600)
        return p

    return write


@pytest.fixture
def node_cfg(bmc: IpmiSim, write_cfg: Callable[[str], Path]) -> Path:
    """fence.cfg: node1 fenced by one BMC (password inline, as many sites have it)."""
    return write_cfg(f"{device_line('bmc1', bmc)}\nconnect bmc1 node=node1\n")


def ipmi_args(bmc: IpmiSim) -> list[str]:
    """``--driver ipmi -o ...`` for a BMC (no password: tests add it their own way)."""
    return [
        "--driver",
        "ipmi",
        "-o",
        f"ip={bmc.host}",
        "-o",
        f"ipport={bmc.port}",
        "-o",
        f"username={bmc.user}",
        "-o",
        "power_timeout=3",
        "-o",
        "poll_interval=0.05",
    ]


@pytest.fixture
def run() -> Callable[..., Result]:
    """Run ``hafence ARGS`` in-process (click's CliRunner); stdout and stderr apart."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)

    return invoke


@dataclass
class Proc:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def hafence_script() -> str:
    """The installed console script (next to this interpreter, else on PATH)."""
    here = Path(sys.executable).with_name("hafence")
    found = str(here) if here.exists() else shutil.which("hafence")
    if not found:
        pytest.skip("the hafence console script is not installed (pip install -e .)")
    return found


@pytest.fixture
def script() -> Callable[..., Proc]:
    """Run the installed ``hafence`` console script as a subprocess (stdin: /dev/null)."""
    exe = hafence_script()

    def call(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Proc:
        full_env = {**os.environ, **(env or {})}
        p = subprocess.run(
            [exe, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
        )
        return Proc(p.returncode, p.stdout, p.stderr)

    return call


@pytest.fixture
def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (probed, then released)."""
    return free_udp_port()
