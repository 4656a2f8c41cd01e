"""The ``snmp_ifmib`` driver against real switches from the hardware config, else snmpsim.

Configured ``[fence.NAME]`` devices with ``driver = "snmp_ifmib"`` are tested (format:
hwtests/hardware.example.toml); without a config the same checks run against the
simulated switch (snmpsim on loopback, SNMPv3 authPriv). Read-only checks always run;
the verified off (and on again) only where ``allow_power_off = true`` - always on the
simulated switch - and the port is left as it was found.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.errors import AuthError, UnreachableError
from hafence.fence import Fencer
from hafence.fence.driver import PowerState
from hafence.plugins import PluginRegistry

from .conftest import HwDevice, register_simulator

pytestmark = pytest.mark.hw_driver("snmp_ifmib")


@register_simulator("snmp_ifmib")
@contextlib.contextmanager
def _snmpsim(workdir: Path) -> Iterator[HwDevice]:
    if not shutil.which("snmpsim-command-responder"):
        pytest.skip("no hardware configured and snmpsim is not installed")
    from hafence.simdevices.snmp_agent import snmp_agent

    with snmp_agent(workdir=workdir) as agent:
        opts = {**agent.driver_options("Gi1/0/1", version="3"), "timeout": 2}
        yield HwDevice("snmpsim", "snmp_ifmib", opts, True, True, agent)


def fencer(registry: PluginRegistry) -> Fencer:
    return Fencer(None, registry, retries=0, actor="hwtest")


def _is_v3(dev: HwDevice) -> bool:
    return str(dev.options.get("snmp_version", "2c")) == "3"


async def test_monitor_status_and_list(hw_device: HwDevice) -> None:
    async with hw_device.build() as drv:
        await drv.monitor()
        state = await drv.status()
        index = await drv.if_index()
        ports = await drv.list()
    ours = [p for p in ports if p.id == str(index)]
    assert len(ours) == 1, f"ifIndex {index} of the configured port is not in the port list"
    assert ours[0].state == state
    if hw_device.simulated:
        assert (index, state) == (1, PowerState.ON)
        assert hw_device.peer.get_admin_status(1) == 1


async def test_dry_run_touches_nothing(hw_device: HwDevice, hw_registry: PluginRegistry) -> None:
    f = fencer(hw_registry)
    async with hw_device.build() as drv:
        before = await drv.status()
        for action in ("monitor", "status", "list"):
            res = await f.run_device(drv, action, record=False)
            assert res.ok, res.message
        assert await drv.status() == before
    if hw_device.simulated:
        assert hw_device.peer.set_requests() == []


async def test_wrong_credentials_fail_cleanly(
    hw_device: HwDevice, hw_registry: PluginRegistry
) -> None:
    bad_value = "definitely-not-the-secret"
    # The kind of the answer is judged, so a v3 agent gets the device's own time to send
    # its report (a loaded machine delivered it after 2 s); a v1/v2c agent usually drops
    # a wrong community, which looks unreachable: no need to wait long for nothing.
    if _is_v3(hw_device):
        bad, kinds = {"password": bad_value}, ("auth_failed",)
    else:
        bad, kinds = {"community": bad_value, "timeout": 2}, ("auth_failed", "unreachable")
    async with hw_device.build(**bad) as drv:
        with pytest.raises((AuthError, UnreachableError)) as info:
            await drv.status()
    assert info.value.kind in kinds
    assert bad_value not in str(info.value)
    drv = hw_device.build(**bad)
    try:
        res = await fencer(hw_registry).run_device(drv, "off", record=False)
    finally:
        await drv.close()
    assert not res.ok and res.error_kind in kinds  # never a success without a confirmed off


async def test_verified_off_then_on(hw_device: HwDevice, hw_registry: PluginRegistry) -> None:
    hw_device.require_power_off()
    f = fencer(hw_registry)
    async with hw_device.build() as drv:
        before = await drv.status()
        try:
            off = await f.run_device(drv, "off", record=False)
            assert off.ok and off.state == "off", off.message
            if hw_device.simulated:
                assert hw_device.peer.get_admin_status(1) == 2
            again = await f.run_device(drv, "off", record=False)  # idempotent
            assert again.ok and again.state == "off", again.message
        finally:
            if before != PowerState.OFF:  # leave the port as it was found
                on = await f.run_device(drv, "on", record=False)
                assert on.ok and on.state == "on", on.message
    if hw_device.simulated:
        assert hw_device.peer.get_admin_status(1) == 1
