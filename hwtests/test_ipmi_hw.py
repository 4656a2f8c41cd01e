"""The ``ipmi`` driver against real BMCs from the hardware config, else ipmi_sim.

Read-only checks always run. Off/on and reboot run only on a BMC whose config says
``allow_power_off = true`` (always on the simulated BMC); they leave the target
powered as they found it.
"""

from __future__ import annotations

import pytest

from hafence.errors import AuthError
from hafence.fence import Fencer
from hafence.fence.driver import PowerState
from hafence.plugins import PluginRegistry

from .conftest import HwDevice

pytestmark = pytest.mark.hw_driver("ipmi")


def fencer(registry: PluginRegistry) -> Fencer:
    return Fencer(None, registry, retries=0, actor="hwtest")


async def test_monitor_status_and_list(hw_device: HwDevice) -> None:
    async with hw_device.build() as drv:
        await drv.monitor()
        state = await drv.status()
        assert state in (PowerState.ON, PowerState.OFF)
        (port,) = await drv.list()
        assert port.state == state
    if hw_device.simulated:
        assert state == PowerState(hw_device.peer.power)


async def test_dry_run_touches_nothing(hw_device: HwDevice, hw_registry: PluginRegistry) -> None:
    f = fencer(hw_registry)
    async with hw_device.build() as drv:
        before = await drv.status()
        for action in ("monitor", "status"):
            res = await f.run_device(drv, action, record=False)
            assert res.ok, res.message
        assert await drv.status() == before
    if hw_device.simulated:
        assert hw_device.peer.power_calls() == []


async def test_session_is_reused(hw_device: HwDevice) -> None:
    drivers = [hw_device.build() for _ in range(3)]
    before = drivers[0].logins
    for drv in drivers:
        await drv.status()
        await drv.status()
    assert drivers[0].logins - before <= 1  # at most one login for six requests


async def test_wrong_password_is_auth_failed(hw_device: HwDevice) -> None:
    async with hw_device.build(password="surely-not-the-pw") as drv:
        with pytest.raises(AuthError) as err:
            await drv.status()
    assert err.value.kind == "auth_failed"
    assert "surely-not" not in str(err.value)


async def test_verified_off_then_on(hw_device: HwDevice, hw_registry: PluginRegistry) -> None:
    hw_device.require_power_off()
    f = fencer(hw_registry)
    async with hw_device.build() as drv:
        before = await drv.status()
        try:
            off = await f.run_device(drv, "off", record=False)
            assert off.ok and off.state == "off", off.message
            assert await drv.status() == PowerState.OFF
        finally:
            if before == PowerState.ON:  # leave the machine as we found it
                on = await f.run_device(drv, "on", record=False)
                assert on.ok and on.state == "on", on.message
    if hw_device.simulated:
        assert hw_device.peer.power_calls() == ["set power 0", "set power 1"]


async def test_verified_reboot(hw_device: HwDevice, hw_registry: PluginRegistry) -> None:
    hw_device.require_power_off()
    async with hw_device.build() as drv:
        if await drv.status() != PowerState.ON:
            pytest.skip(f"{hw_device.name}: target is off; a reboot would power it on")
        res = await fencer(hw_registry).run_device(drv, "reboot", record=False)
        assert res.ok and res.state == "on", res.message
    if hw_device.simulated:
        assert hw_device.peer.power_calls() == ["set power 0", "set power 1"]
