"""Fixtures for the fence tests: a real OpenIPMI ipmi_sim BMC on loopback, and a small
in-test device model for combinatorial failure paths of the (real) fencer."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import hafence_fence_agent
import pytest

from hafence.errors import AuthError, UnreachableError
from hafence.fence.driver import FenceDriver, Param, PowerState
from hafence.hookspecs import hookimpl
from hafence.plugins import PluginRegistry

PEERS = Path(__file__).parent / "peers"
PASSWORD = "s3cr3t-Pw!"


# -- ipmi_sim -----------------------------------------------------------------------
@dataclass
class SimBMC:
    """One running ipmi_sim; power state lives in ``state`` ("1"/"0")."""

    port: int
    state: Path
    proc: subprocess.Popen
    user: str = "admin"
    password: str = PASSWORD

    @property
    def power(self) -> str:
        return "on" if self.state.read_text().strip() == "1" else "off"

    def set_power(self, on: bool) -> None:
        self.state.write_text("1\n" if on else "0\n")

    def set_stuck(self, stuck: bool = True) -> None:
        Path(f"{self.state}.mode").write_text("stuck\n" if stuck else "\n")

    def calls(self) -> list[str]:
        log = Path(f"{self.state}.log")
        return log.read_text().splitlines() if log.exists() else []

    def agent_args(self, password: str | None = None) -> str:
        """fence.cfg arguments for fence_ipmilan against this BMC."""
        pw = self.password if password is None else password
        return (
            f"ip=127.0.0.1 ipport={self.port} username={self.user} password='{pw}' "
            "lanplus cipher=3 power_timeout=5 poll_interval=0.1"
        )

    def agent_options(self, **extra: Any) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "ip": "127.0.0.1",
            "ipport": self.port,
            "username": self.user,
            "password": self.password,
            "lanplus": True,
            "cipher": "3",
            "power_timeout": 5,
            "poll_interval": 0.1,
        }
        opts.update(extra)
        return opts


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _udp_bound(port: int) -> bool:
    needle = f":{port:04X} "
    try:
        return needle in Path("/proc/net/udp").read_text()
    except OSError:
        return False


def _start_sim(workdir: Path, power_on: bool) -> SimBMC:
    workdir.mkdir(parents=True, exist_ok=True)
    state = workdir / "power"
    state.write_text("1\n" if power_on else "0\n")
    script = workdir / "chassis_ctl.sh"
    shutil.copy(PEERS / "chassis_ctl.sh", script)
    script.chmod(0o755)
    for _ in range(5):  # another tester may grab the port between probe and bind
        port = _free_udp_port()
        conf = workdir / "lan.conf"
        conf.write_text(
            'name "hafence-test"\nset_working_mc 0x20\n  startlan 1\n'
            f"    addr 127.0.0.1 {port}\n    priv_limit admin\n"
            "    allowed_auths_callback none md2 md5 straight\n"
            "    allowed_auths_user none md2 md5 straight\n"
            "    allowed_auths_operator none md2 md5 straight\n"
            "    allowed_auths_admin none md2 md5 straight\n"
            "    guid a123456789abcdefa123456789abcdef\n  endlan\n"
            f'  chassis_control "{script} {state}"\n'
            f'  user 2 true "admin" "{PASSWORD}" admin 10 none md2 md5 straight\n'
        )
        out = open(workdir / "ipmi_sim.out", "w")
        proc = subprocess.Popen(
            ["ipmi_sim", "-c", str(conf), "-f", str(PEERS / "bmc.emu"), "-n", "-s", str(workdir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None and not _udp_bound(port):
            time.sleep(0.02)
        if proc.poll() is None and _udp_bound(port):
            return SimBMC(port, state, proc)
        _stop(proc)
    raise RuntimeError(f"ipmi_sim did not start: {(workdir / 'ipmi_sim.out').read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)


@pytest.fixture
def ipmi_sims(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``ipmi_sims(power_on=True) -> SimBMC``; every sim stopped at teardown."""
    if not (shutil.which("ipmi_sim") and shutil.which("ipmitool")):
        pytest.skip("OpenIPMI ipmi_sim/ipmitool not installed (scripts/install.sh installs them)")
    started: list[SimBMC] = []

    def start(power_on: bool = True) -> SimBMC:
        bmc = _start_sim(tmp_path / f"bmc{len(started)}", power_on)
        started.append(bmc)
        return bmc

    try:
        yield start
    finally:
        for bmc in started:
            _stop(bmc.proc)


@pytest.fixture
def ipmi_sim(ipmi_sims: Any) -> SimBMC:
    return ipmi_sims()


@pytest.fixture
def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (probed, then released)."""
    return _free_udp_port()


# -- device model for engine failure paths -----------------------------------------
@dataclass
class ModelDevice:
    """Hardware state the model driver acts on; survives driver rebuilds per attempt."""

    power: str = "on"
    behaviour: str = "ok"  # ok|stuck|unreachable|auth|hang|crash|lag|hang_status
    fail_first: int = 0  # this many 'off' calls fail (unreachable) before it works
    lag: int = 0  # status keeps saying on for this many polls after off
    calls: list[str] = field(default_factory=list)
    closed: int = 0


class ModelDriver(FenceDriver):
    """A modelled fence device (for engine paths a real peer cannot be made to take)."""

    name: ClassVar[str] = "model"
    params: ClassVar[tuple[Param, ...]] = (
        Param("device", str, required=True, help="Name of the modelled device"),
        Param("password", str, secret=True),
    )
    lab: ClassVar[dict[str, ModelDevice]] = {}

    @property
    def dev(self) -> ModelDevice:
        return self.lab[self.options["device"]]

    async def _gate(self, action: str) -> None:
        d = self.dev
        d.calls.append(action)
        if d.behaviour == "unreachable":
            raise UnreachableError("connection refused", device=self.label)
        if d.behaviour == "auth":
            raise AuthError("login refused", device=self.label)
        if d.behaviour == "hang_status" and action == "status":
            await asyncio.Event().wait()

    async def status(self) -> PowerState:
        await self._gate("status")
        d = self.dev
        if d.power == "off" and d.lag > 0:
            d.lag -= 1
            return PowerState.ON
        return PowerState(d.power)

    async def off(self) -> None:
        await self._gate("off")
        d = self.dev
        if d.fail_first > 0:
            d.fail_first -= 1
            raise UnreachableError("no answer", device=self.label)
        if d.behaviour == "hang":
            await asyncio.Event().wait()
        if d.behaviour == "crash":
            raise RuntimeError(f"driver bug, password was {self.options['password'].reveal()}")
        if d.behaviour != "stuck":
            d.power = "off"

    async def on(self) -> None:
        await self._gate("on")
        self.dev.power = "on"

    async def close(self) -> None:
        self.dev.closed += 1


class ModelRebootDriver(ModelDriver):
    name: ClassVar[str] = "model_reboot"
    actions: ClassVar[frozenset[str]] = frozenset({"status", "off", "on", "monitor", "reboot"})

    async def reboot(self) -> None:
        await self._gate("reboot")
        self.dev.power = "on"


class _ModelPlugin:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @hookimpl
    def hafence_fence_drivers(self) -> list[type]:
        return [ModelDriver, ModelRebootDriver]

    @hookimpl
    def hafence_fence_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


@dataclass
class Lab:
    registry: PluginRegistry
    plugin: _ModelPlugin
    devices: dict[str, ModelDevice]

    def add(self, name: str, **kw: Any) -> ModelDevice:
        self.devices[name] = ModelDevice(**kw)
        return self.devices[name]

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.plugin.events


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A registry with the model drivers and the real fence_agent bridge, nothing else."""
    registry = PluginRegistry(load_entry_points=False)
    plugin = _ModelPlugin()
    registry.register(plugin, "model")
    registry.register(hafence_fence_agent, "fence_agent")
    devices: dict[str, ModelDevice] = {}
    ModelDriver.lab = devices
    try:
        yield Lab(registry, plugin, devices)
    finally:
        ModelDriver.lab = {}
