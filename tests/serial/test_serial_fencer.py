"""The serial driver through fence.cfg and the real Fencer: verified off, failure kinds,
secrets kept out of history and logs."""

from __future__ import annotations

import logging
from pathlib import Path

from hafence.plugins import PluginRegistry
from tests.peers.serial_device import SerialDevice

from .conftest import PASSWORD, cfg_args, make_fencer

FAST = "timeout=1 power_timeout=1 poll_interval=0.05"


def device_line(dev: SerialDevice, name: str = "relay", **override: str) -> str:
    opts = {**dev.driver_options(outlet=1), **override}
    del opts["plug"]  # per node, on the connect line
    return f"device {name} serial {cfg_args(opts)} {FAST}\n"


CONNECT = "connect relay node=node1 plug=1\nconnect relay node=node2 plug=2\n"


async def test_verified_off_then_on(
    registry: PluginRegistry, switch: SerialDevice, tmp_path: Path
) -> None:
    f = make_fencer(registry, device_line(switch) + CONNECT, tmp_path)
    res = await f.fence("node2")
    assert res.ok and res.level == 1 and res.devices == ["relay"]
    assert switch.power(2) == "off" and switch.power(1) == "on"
    # off confirmed by a status read after the OFF
    cmds = [c for c in switch.commands() if c != "LOGIN ******"]
    assert cmds[0] == "OFF 2" and cmds[-1] == "STATUS 2"
    [rec] = f.history.records("node2")
    assert rec.ok and rec.action == "off"
    d = f.build(f.chain("node2")[0].devices[0])
    try:
        on = await f.run_device(d, "on", node="node2")
    finally:
        await d.close()
    assert on.ok and on.state == "on" and switch.power(2) == "on"


async def test_reboot_is_off_verify_on(
    registry: PluginRegistry, switch: SerialDevice, tmp_path: Path
) -> None:
    res = await make_fencer(registry, device_line(switch) + CONNECT, tmp_path).fence(
        "node1", "reboot"
    )
    assert res.ok and switch.power(1) == "on"
    power = [c for c in switch.commands() if c.startswith(("ON", "OFF"))]
    assert power == ["OFF 1", "ON 1"]


async def test_stuck_relay_is_still_on(
    registry: PluginRegistry, switch: SerialDevice, tmp_path: Path
) -> None:
    switch.set_stuck(True)
    res = await make_fencer(registry, device_line(switch) + CONNECT, tmp_path).fence("node1")
    assert not res.ok and res.error_kind == "still_on"
    assert switch.power(1) == "on"


async def test_wrong_password_is_auth_failed_and_never_logged(
    registry: PluginRegistry, switch: SerialDevice, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = switch.wrong_password_options()["password"]
    f = make_fencer(registry, device_line(switch, password=wrong) + CONNECT, tmp_path)
    res = await f.fence("node1")
    assert not res.ok and res.error_kind == "auth_failed"
    assert switch.power(1) == "on"
    history = (tmp_path / "history.jsonl").read_text()
    for secret in (wrong, PASSWORD):
        assert secret not in history and secret not in caplog.text
        assert secret not in res.to_json()


async def test_silent_switch_is_unreachable_not_a_bare_timeout(
    registry: PluginRegistry, switch: SerialDevice, tmp_path: Path
) -> None:
    # The fencer bounds each call at 'timeout'; the driver gives up first, so the
    # result says why (unreachable) - the bound the user set was honoured.
    switch.set_mode("silent")
    res = await make_fencer(registry, device_line(switch) + CONNECT, tmp_path).fence("node1")
    assert not res.ok and res.error_kind == "unreachable"


async def test_absent_device_falls_through_to_the_next_level(
    registry: PluginRegistry, switch: SerialDevice, tmp_path: Path
) -> None:
    text = (
        f"device gone serial device=/dev/hafence-unplugged-tty {FAST}\n"
        "connect gone node=node1\n" + device_line(switch) + CONNECT
    )
    res = await make_fencer(registry, text, tmp_path).fence("node1")
    assert res.ok and res.level == 2
    [lv1] = res.attempts[0].levels[:1]
    assert lv1.devices[0].error_kind == "unreachable"
    assert switch.power(1) == "off"


async def test_dry_run_check_changes_nothing(
    registry: PluginRegistry, switch: SerialDevice, tmp_path: Path
) -> None:
    rep = await make_fencer(registry, device_line(switch) + CONNECT, tmp_path).check("node2")
    assert rep.ok and rep.devices[0].state == "on"
    assert not any(c.startswith(("ON", "OFF")) for c in switch.commands())
    assert rep.budget_seconds > 0
