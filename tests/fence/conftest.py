"""Fixtures for the fence tests: real OpenIPMI ipmi_sim BMCs on loopback, and a small
in-test device model for combinatorial failure paths of the (real) fencer."""

from __future__ import annotations

import asyncio
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
from hafence.simdevices.ipmi_sim import IpmiSim, free_udp_port, started_sims
from hafence.simdevices.ipmi_sim import available as ipmi_sim_available


# -- ipmi_sim -----------------------------------------------------------------------
@pytest.fixture
def ipmi_sims(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``ipmi_sims(power_on=True) -> IpmiSim``; every sim stopped at teardown."""
    if not ipmi_sim_available():
        pytest.skip("OpenIPMI ipmi_sim/ipmitool not installed (scripts/install.sh installs them)")
    with started_sims(tmp_path) as start:
        yield start


@pytest.fixture
def ipmi_sim(ipmi_sims: Any) -> IpmiSim:
    return ipmi_sims()


@pytest.fixture
def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on (probed, then released)."""
    return free_udp_port()


# -- device model for engine failure paths -----------------------------------------
@dataclass
class ModelDevice:
    """Hardware state the model driver acts on; survives driver rebuilds per attempt."""

    power: str = "on"
    behaviour: str = "ok"  # ok|stuck|unreachable|auth|hang|crash|lag|hang_status
    fail_first: int = 0  # this many 'off' calls fail (unreachable) before it works
    lag: int = 0  # status keeps saying on for this many polls after off
    calls: list[str] = field(default_factory=list)
    at: list[float] = field(default_factory=list)  # the loop's time of each call
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
        d.at.append(asyncio.get_running_loop().time())
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
