"""The serial driver against a switch played on a pty pair (and over RFC 2217)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os

import pytest
from hafence_serial.driver import DENIED, SerialDriver
from hafence_serial.protocol import Pattern, unescape

from hafence.errors import (
    AuthError,
    DeviceError,
    NotSupportedError,
    ParamError,
    UnreachableError,
)
from hafence.fence.driver import PowerState
from hafence.fence.metadata import driver_metadata, driver_metadata_xml
from hafence.plugins import PluginRegistry
from tests.peers.serial_device import SerialDevice

from .conftest import PASSWORD

FAST = {"timeout": "1"}


def drv(options: dict[str, str], **extra: str) -> SerialDriver:
    return SerialDriver({**options, **FAST, **extra}, label="relay")


# -- configuration -------------------------------------------------------------------------
def test_registered_through_its_entry_point() -> None:
    reg = PluginRegistry()
    assert reg.fence_driver("serial") is SerialDriver
    assert "serial" in reg.plugins and not reg.errors


def test_device_is_required() -> None:
    with pytest.raises(ParamError) as exc:
        SerialDriver({})
    assert exc.value.field == "device"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"cmd_off": "OFF {plug}"}, "plug"),
        ({"cmd_on": r"ON \q"}, "cmd_on"),
        ({"password": "pw"}, "cmd_login"),
        ({"cmd_login": "LOGIN {password}"}, "password"),
        ({"status_on": "re:(unclosed"}, "status_on"),
        ({"parity": "X"}, "parity"),
        ({"bytesize": "9"}, "bytesize"),
        ({"stopbits": "3"}, "stopbits"),
        ({"baudrate": "0"}, "baudrate"),
        ({"pulse": "dtr", "pulse_ms": "1000", "timeout": "1"}, "pulse_ms"),
        ({"timeout": "0"}, "timeout"),
        ({"outlets": "4"}, "outlets"),  # cmd_status has no {plug}
        ({"outlets": "0", "cmd_status": "STATUS {plug}", "plug": "1"}, "outlets"),
        ({"outlets": "2", "cmd_status": "STATUS {plug}", "plug": "3"}, "plug"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, str], field: str) -> None:
    with pytest.raises(ParamError) as exc:
        SerialDriver({"device": "/dev/ttyS0", **options})
    assert exc.value.field == field


def test_escapes_give_binary_commands() -> None:
    assert unescape("f", r"\xA0\x01\x01\xa2") == bytes([0xA0, 1, 1, 0xA2])
    assert unescape("f", r"A\r\n\t\\B") == b"A\r\n\t\\B"
    with pytest.raises(ParamError):
        unescape("f", "\\")


def test_patterns_exact_case_insensitive_or_regex() -> None:
    assert Pattern.parse("f", "ok").matches("OK")
    assert not Pattern.parse("f", "OK").matches("OK!")
    rx = Pattern.parse("f", r"re:Outlet \d: ON")
    assert rx.matches("Outlet 2: ON") and not rx.matches("Outlet 2: ON x")


@pytest.mark.parametrize(
    ("reply", "refused"),
    [
        ("DENIED", True),
        ("Access denied", True),
        ("Invalid password", True),
        ("login failed", True),
        ("Unauthorized", True),
        ("ERR invalid outlet", False),
        ("Login OK", False),
        ("OK", False),
    ],
)
def test_default_refusal_pattern(reply: str, refused: bool) -> None:
    assert Pattern.parse("reply_denied", DENIED).matches(reply) is refused


async def test_expected_reply_wins_over_the_refusal_pattern(plain: SerialDevice) -> None:
    # a switch whose normal answer to status reads like a refusal
    d = drv({"device": plain.path}, reply_denied="re:O.*")
    assert await d.status() == PowerState.ON


def test_password_masked_in_repr_and_metadata(switch: SerialDevice) -> None:
    d = drv(switch.driver_options(2))
    assert PASSWORD not in repr(d)
    assert PASSWORD not in str(d.public_options())
    assert PASSWORD not in repr(d.login) and PASSWORD not in str(vars(d))
    meta = driver_metadata(SerialDriver)
    names = {p["name"] for p in meta["parameters"]}
    assert {"device", "baudrate", "parity", "cmd_off", "reply_off", "pulse_ms"} <= names
    assert "<parameter" in driver_metadata_xml(SerialDriver)


# -- actions -------------------------------------------------------------------------------
async def test_status_off_on_one_outlet(switch: SerialDevice) -> None:
    d = drv(switch.driver_options(2))
    assert await d.status() == PowerState.ON
    await d.off()
    assert switch.power(2) == "off" and switch.power(1) == "on"
    assert await d.status() == PowerState.OFF
    await d.on()
    assert switch.power(2) == "on"
    await d.monitor()
    # every command was preceded by its login, the password never recorded in clear
    assert switch.commands() == [
        "LOGIN ******", "STATUS 2", "LOGIN ******", "OFF 2", "LOGIN ******", "STATUS 2",
        "LOGIN ******", "ON 2", "LOGIN ******", "STATUS 2",
    ]  # fmt: skip


async def test_defaults_drive_a_single_relay(plain: SerialDevice) -> None:
    d = drv({"device": plain.path})
    await d.off()
    assert plain.power() == "off" and await d.status() == PowerState.OFF
    assert plain.commands() == ["OFF", "STATUS"]


async def test_echoing_device_and_regex_status(plain: SerialDevice) -> None:
    plain.echo = True  # the command comes back first, as from a terminal in cooked mode
    d = drv({"device": plain.path}, status_on="re:O[N]", status_off="re:OF+")
    assert await d.status() == PowerState.ON
    await d.off()
    assert await d.status() == PowerState.OFF


async def test_fire_and_forget_commands() -> None:
    # A relay board that answers nothing to power commands (reply_off/reply_on empty):
    # the driver does not wait for an answer; status still needs one.
    with SerialDevice(quiet_power=True) as relay:
        d = drv({"device": relay.path}, reply_off="", reply_on="", eol="crlf")
        await d.off()
        # (the status answer comes after the OFF was acted on: the line is in order)
        assert await d.status() == PowerState.OFF and relay.power() == "off"
        await d.on()
        assert await d.status() == PowerState.ON
        # with the default reply_off=OK it would wait in vain: no answer, unreachable
        with pytest.raises(UnreachableError, match="no answer to 'OFF'"):
            await drv({"device": relay.path}).off()


async def test_unsolicited_output_is_not_taken_for_a_reply(plain: SerialDevice) -> None:
    plain.inject(b"Relay board v1.2 ready\r\nOFF\r\n")  # a banner, a stale answer
    assert await drv({"device": plain.path}).status() == PowerState.ON


async def test_status_reply_neither_on_nor_off(switch: SerialDevice) -> None:
    opts = switch.driver_options(2)
    del opts["outlets"]  # (with it, plug=7 is refused up front)
    d = drv({**opts, "plug": "7"})  # the switch has 2 outlets
    with pytest.raises(
        DeviceError,
        match=r"unexpected reply 'ERR NO OUTLET' to 'STATUS 7' \(expected 'ON' or 'OFF'\)",
    ):
        await d.status()


async def test_error_reply_to_power_command(switch: SerialDevice) -> None:
    d = drv({**switch.driver_options(2), "cmd_off": "POWEROFF {plug}"})
    with pytest.raises(
        DeviceError, match=r"unexpected reply 'ERR UNKNOWN COMMAND' to 'POWEROFF 2'"
    ):
        await d.off()
    assert switch.power(2) == "on"


async def test_list_outlets(switch: SerialDevice) -> None:
    switch.set_power(False, outlet=1)
    d = drv({**switch.driver_options(2), "outlets": "2"})
    ports = await d.list()
    assert [(p.id, p.state) for p in ports] == [("1", PowerState.OFF), ("2", PowerState.ON)]
    assert switch.commands() == ["LOGIN ******", "STATUS 1", "LOGIN ******", "STATUS 2"]
    opts = switch.driver_options(2)
    del opts["outlets"]
    plain = drv(opts)
    with pytest.raises(NotSupportedError, match="outlets=N"):
        await plain.list()


# -- failure paths -------------------------------------------------------------------------
async def test_wrong_password_is_auth_error(switch: SerialDevice, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    opts = switch.wrong_password_options(2)
    with pytest.raises(AuthError) as exc:
        await drv(opts).off()
    assert exc.value.kind == "auth_failed"
    assert "LOGIN ******" in str(exc.value) and opts["password"] not in str(exc.value)
    assert switch.power(2) == "on"  # the OFF was never sent
    assert switch.commands() == ["LOGIN ******"]
    assert opts["password"] not in caplog.text and PASSWORD not in caplog.text


async def test_no_login_configured_is_auth_error(switch: SerialDevice) -> None:
    with pytest.raises(AuthError, match="'STATUS' refused: 'DENIED'"):
        await drv({"device": switch.path}).status()


async def test_garbled_reply_is_device_error_quoting_it(switch: SerialDevice) -> None:
    switch.set_mode("garbled")
    with pytest.raises(DeviceError) as exc:
        await drv(switch.driver_options(2)).status()
    msg = str(exc.value)
    assert exc.value.kind == "device_error"
    assert r"'\xfe\x00\x9c~#\xd5qP\x1b\xff'" in msg and "LOGIN ******" in msg


async def test_incomplete_reply_is_device_error(plain: SerialDevice) -> None:
    # A reply with no line end (wrong eol setting, a line cut short) is quoted as received.
    plain.eol = b""
    with pytest.raises(
        DeviceError, match=r"incomplete reply to 'STATUS' within 0.9s: received 'ON'"
    ):
        await drv({"device": plain.path}).status()


async def test_silent_device_is_unreachable_within_the_timeout(plain: SerialDevice) -> None:
    plain.set_mode("silent")
    with pytest.raises(UnreachableError, match=r"no answer to 'STATUS' within 0.9s"):
        await drv({"device": plain.path}).status()


async def test_absent_device_is_unreachable() -> None:
    with pytest.raises(UnreachableError, match="cannot open /dev/hafence-no-such-tty"):
        await drv({"device": "/dev/hafence-no-such-tty"}).status()


async def test_closed_terminal_server_port_is_unreachable(unused_tcp_port: int) -> None:
    for scheme in ("rfc2217", "socket"):
        with pytest.raises(UnreachableError, match="Connection refused"):
            await drv({"device": f"{scheme}://127.0.0.1:{unused_tcp_port}"}).status()


async def test_waiting_on_the_line_never_blocks_the_event_loop(plain: SerialDevice) -> None:
    plain.set_mode("silent")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        with pytest.raises(UnreachableError):
            await drv({"device": plain.path}).status()
    finally:
        ticker.cancel()
    assert ticks > 5  # a blocking read would have frozen the ticker at 0


async def test_two_outlets_of_one_switch_share_the_line(switch: SerialDevice) -> None:
    d1, d2 = drv(switch.driver_options(1)), drv(switch.driver_options(2))
    await asyncio.gather(d1.off(), d2.off(), d1.status(), d2.status())
    assert switch.power(1) == switch.power(2) == "off"
    # serialised by the per-device lock: each login directly precedes its own command
    cmds = switch.commands()
    assert cmds[0::2] == ["LOGIN ******"] * 4 and "LOGIN ******" not in cmds[1::2]


async def test_pulse_on_a_pty_says_there_are_no_modem_lines(plain: SerialDevice) -> None:
    with pytest.raises(DeviceError, match=r"cannot pulse DTR.*no modem lines"):
        await drv({"device": plain.path}, pulse="dtr").off()


# -- over RFC 2217 (a terminal server): line settings and DTR/RTS pulses -----------------
async def test_line_settings_reach_the_line(terminal_server: SerialDevice) -> None:
    opts = {
        **terminal_server.driver_options(1),
        "baudrate": "19200",
        "parity": "E",
        "bytesize": "7",
        "stopbits": "2",
        "timeout": "5",
    }
    d = SerialDriver(opts)
    assert await d.status() == PowerState.ON
    assert terminal_server.line_settings() == {
        "baudrate": 19200, "bytesize": 7, "parity": "E", "stopbits": 2,
    }  # fmt: skip


@pytest.mark.parametrize("line", ["dtr", "rts"])
async def test_pulse_lasts_the_milliseconds_asked(terminal_server: SerialDevice, line: str) -> None:
    opts = {**terminal_server.driver_options(2), "pulse": line, "pulse_ms": "250", "timeout": "5"}
    d = SerialDriver(opts)
    await d.off()
    assert terminal_server.power(2) == "off"
    events = [(lvl, t) for name, lvl, t in terminal_server.signals() if name == line]
    # idle (inactive) from the open, then one pulse: active, inactive
    levels = [lvl for lvl, _ in events]
    assert levels[0] is False and levels[-2:] == [True, False] and levels.count(True) == 1
    # the peer saw the line go active and back no sooner than the pulse length
    assert events[-1][1] - events[-2][1] >= 0.25
    # status polls do not pulse
    terminal_server.clear_signals()
    await d.status()
    assert True not in [lvl for name, lvl, _ in terminal_server.signals() if name == line]


async def test_port_locked_by_another_process_is_busy(plain: SerialDevice) -> None:
    fd = os.open(plain.path, os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a console program would
        with pytest.raises(DeviceError, match="in use by another process"):
            await drv({"device": plain.path}).status()
        # exclusive=0 shares the line (the owner's risk)
        assert await drv({"device": plain.path}, exclusive="0").status() == PowerState.ON
    finally:
        os.close(fd)
