"""The ``ipmi`` driver (pyghmi) against a real OpenIPMI ipmi_sim on loopback."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hafence_ipmi.driver import IpmiDriver
from hafence_ipmi.session import SessionPool, call, raw, run

from hafence.errors import AuthError, NotSupportedError, ParamError, UnreachableError
from hafence.fence import Fencer
from hafence.fence.driver import PowerState
from hafence.fence.metadata import driver_metadata, driver_metadata_xml
from hafence.plugins import PluginRegistry
from hafence.simdevices.ipmi_sim import IpmiSim, free_udp_port

from .conftest import PASSWORD


def driver(bmc: IpmiSim, **opts: object) -> IpmiDriver:
    # A private session pool per driver keeps tests independent of each other.
    return IpmiDriver(bmc.driver_options(**opts), label="bmc", pool=SessionPool())


# -- registration and parameters ---------------------------------------------------------
def test_registered_through_the_entry_point(registry: PluginRegistry) -> None:
    assert registry.fence_driver("ipmi") is IpmiDriver
    assert registry.owner("hafence_fence_drivers", "ipmi") == "ipmi"


def test_metadata_documents_params() -> None:
    meta = driver_metadata(IpmiDriver)
    names = {p["name"] for p in meta["parameters"]}
    assert {"ip", "ipport", "username", "password", "privlvl", "lanplus", "cipher"} <= names
    assert "method" in names and "port" not in names  # port: deprecated, never shown
    xml = driver_metadata_xml(IpmiDriver)
    assert 'name="ip"' in xml and 'obsoletes="ipaddr"' in xml
    assert {"status", "off", "on", "reboot", "list", "monitor", "diag"} <= set(meta["actions"])
    cipher = next(p for p in IpmiDriver.params if p.name == "cipher")
    assert cipher.choices == ("3", "17") and "pyghmi" in cipher.help


def test_options_are_validated() -> None:
    base = {"ip": "127.0.0.1", "password": "x"}
    with pytest.raises(ParamError) as err:
        IpmiDriver({**base, "lanplus": "0"})
    assert err.value.field == "lanplus" and "IPMI 2.0" in str(err.value)
    with pytest.raises(ParamError) as err:
        IpmiDriver({**base, "cipher": "1"})
    assert err.value.field == "cipher"
    with pytest.raises(ParamError) as err:
        IpmiDriver({**base, "privlvl": "root"})
    assert err.value.field == "privlvl"
    with pytest.raises(ParamError) as err:
        IpmiDriver({"ip": "127.0.0.1"})
    assert err.value.field == "password"
    # IPMI 2.0 field sizes (bytes, not characters); the message never shows the value
    for field, value in (("password", "é" * 10 + "x"), ("kg", "k" * 21), ("username", "u" * 17)):
        with pytest.raises(ParamError) as err:
            IpmiDriver({**base, field: value})
        assert err.value.field == field and "at most" in str(err.value)
        assert value not in str(err.value)
    # fence_ipmilan spellings are accepted
    drv = IpmiDriver({"ipaddr": "10.0.0.1", "ipport": "6230", "login": "a", "passwd": "p"})
    assert drv.options["ip"] == "10.0.0.1" and drv.options["ipport"] == 6230
    assert drv.options["username"] == "a" and "reboot" not in drv.actions
    assert "reboot" in IpmiDriver({**base, "method": "cycle"}).actions


def test_password_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAFENCE_TEST_IPMI_PW", "from-env")
    drv = IpmiDriver({"ip": "127.0.0.1", "password_env": "HAFENCE_TEST_IPMI_PW"})
    assert drv.target.password.reveal() == "from-env"
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    drv = IpmiDriver({"ip": "127.0.0.1", "password_file": str(pw)})
    assert drv.target.password.reveal() == "from-file"


# -- actions against ipmi_sim --------------------------------------------------------------
async def test_long_passwords_and_user_names_log_in(ipmi_sims) -> None:
    # Sent whole: ipmi_sim's longest (a byte under IPMI's limits refused above).
    bmc = ipmi_sims(user="u" * 15, password="P" * 19)
    assert await driver(bmc).status() == PowerState.ON


async def test_status_reads_the_chassis(bmc: IpmiSim) -> None:
    drv = driver(bmc)
    assert await drv.status() == PowerState.ON
    bmc.set_power(False)
    assert await drv.status() == PowerState.OFF


async def test_off_and_on_send_chassis_control(bmc: IpmiSim) -> None:
    drv = driver(bmc)
    await drv.off()
    assert bmc.power == "off"
    assert bmc.power_calls() == ["set power 0"]
    await drv.on()
    assert bmc.power == "on"
    assert bmc.power_calls() == ["set power 0", "set power 1"]


async def test_monitor_and_list(bmc: IpmiSim) -> None:
    drv = driver(bmc)
    await drv.monitor()
    ports = await drv.list()
    assert len(ports) == 1 and ports[0].id == "127.0.0.1" and ports[0].state == PowerState.ON
    assert bmc.power_calls() == []  # neither touches the power


async def test_diag_is_refused_cleanly_by_ipmi_sim(bmc: IpmiSim) -> None:
    with pytest.raises(NotSupportedError) as err:
        await driver(bmc).diag()
    assert "Invalid data field" in str(err.value) and err.value.device == "bmc"
    assert bmc.power == "on"


async def test_reboot_onoff_is_composed_by_the_fencer(bmc: IpmiSim) -> None:
    drv = driver(bmc)
    with pytest.raises(NotSupportedError):
        await drv.reboot()
    res = await Fencer(retries=0).run_device(drv, "reboot", record=False)
    assert res.ok and res.state == "on" and res.message == "off, verified, on"
    assert bmc.power_calls() == ["set power 0", "set power 1"]


async def test_reboot_cycle_is_native(bmc: IpmiSim) -> None:
    drv = driver(bmc, method="cycle")
    res = await Fencer(retries=0).run_device(drv, "reboot", record=False)
    assert res.ok and res.state == "on" and res.message == "native reboot"
    # ipmi_sim implements a cycle as off, then on once it has seen the power off
    assert bmc.power_calls() == ["set power 0", "set power 1"]


async def test_reboot_reset_and_reboot_of_an_off_target(bmc: IpmiSim) -> None:
    await driver(bmc, method="reset").reboot()
    assert bmc.power_calls() == ["set reset 1"] and bmc.power == "on"
    bmc.clear_calls()
    bmc.set_power(False)
    await driver(bmc, method="cycle").reboot()  # a cycle does nothing when off: power on
    assert bmc.power_calls() == ["set power 1"] and bmc.power == "on"


# -- verified fencing through the real fencer --------------------------------------------------
async def test_fence_node_verified_off(bmc: IpmiSim, make_fencer, tmp_path: Path) -> None:
    fencer = make_fencer(f"device bmc ipmi {bmc.fence_cfg_args()}\nconnect bmc node=node1\n")
    check = await fencer.check("node1")
    assert check.ok and bmc.power == "on"  # the dry run powers nothing off
    res = await fencer.fence("node1")
    assert res.ok and res.level == 1
    assert bmc.power == "off" and bmc.power_calls() == ["set power 0"]
    (rec,) = fencer.history.records("node1")
    assert rec.ok and rec.devices == ["bmc"]
    assert PASSWORD not in (tmp_path / "history.jsonl").read_text()


async def test_level_of_two_bmcs_both_off(ipmi_sims, make_fencer) -> None:
    a, b = ipmi_sims(), ipmi_sims()
    text = (
        f"device psu:1 ipmi {a.fence_cfg_args()}\ndevice psu:2 ipmi {b.fence_cfg_args()}\n"
        "connect psu:1 node=n1\nconnect psu:2 node=n1\n"
    )
    res = await make_fencer(text).fence("n1")
    assert res.ok and a.power == "off" and b.power == "off"


async def test_stuck_target_is_still_on_never_success(ipmi_sims, make_fencer) -> None:
    bmc = ipmi_sims(stuck=True)
    text = f"device bmc ipmi {bmc.fence_cfg_args(power_timeout=0.5)}\nconnect bmc node=n1\n"
    res = await make_fencer(text).fence("n1")
    assert not res.ok and res.error_kind == "still_on"
    assert bmc.power == "on" and "set power 0" in bmc.power_calls()


async def test_falls_through_to_the_next_level(ipmi_sims, make_fencer) -> None:
    dead, good = ipmi_sims(stuck=True), ipmi_sims()
    text = (
        f"device first ipmi {dead.fence_cfg_args(power_timeout=0.3)}\n"
        f"device second ipmi {good.fence_cfg_args()}\n"
        "connect first node=n1\nconnect second node=n1\n"
    )
    res = await make_fencer(text).fence("n1")
    assert res.ok and res.level == 2 and good.power == "off"


# -- failure paths ---------------------------------------------------------------------------
async def test_wrong_password_is_auth_error(bmc: IpmiSim) -> None:
    drv = driver(bmc, password="not-the-password")
    with pytest.raises(AuthError) as err:
        await drv.off()
    assert err.value.kind == "auth_failed" and err.value.device == "bmc"
    assert "not-the-password" not in str(err.value)
    assert bmc.power == "on" and bmc.power_calls() == []


async def test_unknown_user_is_auth_error(bmc: IpmiSim) -> None:
    with pytest.raises(AuthError):
        await driver(bmc, username="nobody").status()


async def test_low_privilege_cannot_power_off(ipmi_sims) -> None:
    bmc = ipmi_sims(extra_users=(("viewer", "viewer-pw", "user"),))
    drv = driver(bmc, username="viewer", password="viewer-pw", privlvl="user")
    assert await drv.status() == PowerState.ON  # reading is allowed
    with pytest.raises(AuthError) as err:
        await drv.off()
    assert "privilege" in str(err.value)
    assert bmc.power == "on"


async def test_closed_port_is_unreachable_within_the_timeout() -> None:
    drv = IpmiDriver(
        {"ip": "127.0.0.1", "port": free_udp_port(), "password": "pw", "timeout": 2.0},
        label="gone",
        pool=SessionPool(),
    )
    # pyghmi alone would retry for ~5 s: the fencer bounds the call by `timeout` too,
    # and 'unreachable' (not the fencer's generic 'timeout') shows the driver's own
    # bound fired first.
    res = await Fencer(retries=0).run_device(drv, "status", record=False)
    assert not res.ok and res.error_kind == "unreachable", res
    with pytest.raises(UnreachableError) as err:
        await drv.status()
    assert err.value.device == "gone"


async def test_closed_port_when_pyghmi_gives_up_first() -> None:
    drv = IpmiDriver(
        {"ip": "127.0.0.1", "port": free_udp_port(), "password": "pw", "timeout": 30.0},
        pool=SessionPool(),
    )
    with pytest.raises(UnreachableError) as err:  # pyghmi's own ~5 s login retries
        await drv.status()
    assert "login" in str(err.value)


async def test_concurrent_good_and_bad_logins_keep_their_errors(ipmi_sims) -> None:
    # pyghmi runs every session's callbacks on whichever thread polls: a failure must
    # still reach its own caller as the right typed error.
    a, b = ipmi_sims(), ipmi_sims()
    calls = []
    for sim in (a, b):
        calls += [driver(sim).status(), driver(sim, password="wrong-pw").status()]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0::2] == [PowerState.ON, PowerState.ON]
    assert all(isinstance(r, AuthError) for r in results[1::2]), results


# -- sessions -----------------------------------------------------------------------------------
async def active_sessions(drv: IpmiDriver) -> int:
    """What the BMC itself reports (Get Session Info: active sessions)."""
    data = await run(
        drv.target, lambda cmd: raw(cmd, 0x06, 0x3D, (0x00,)), 5.0, "info", pool=drv.pool
    )
    return data[2] & 0x3F


async def test_sessions_are_reused_across_calls_and_drivers(bmc: IpmiSim) -> None:
    pool = SessionPool()
    drivers = [IpmiDriver(bmc.driver_options(), pool=pool) for _ in range(3)]
    for drv in drivers:
        for _ in range(4):
            assert await drv.status() == PowerState.ON
        await drv.close()
    await asyncio.gather(*(d.status() for d in drivers))  # concurrent use of one session
    assert drivers[0].logins == 1
    assert await active_sessions(drivers[0]) == 1


async def test_a_dead_session_reconnects(bmc: IpmiSim) -> None:
    drv = driver(bmc)
    assert await drv.status() == PowerState.ON
    bmc.restart()  # a BMC reset: the BMC forgets every session
    bmc.set_power(False)
    assert await drv.status() == PowerState.OFF
    assert drv.logins == 2


async def test_a_session_pyghmi_gave_up_on_is_retried_within_our_bound(bmc: IpmiSim) -> None:
    # On a loaded machine pyghmi's own retransmit timer can run out before a busy BMC
    # answers, and it then marks even a fresh session broken ("Session no longer
    # connected"). Whether the BMC is unreachable is for the caller's bound to say.
    target = driver(bmc).target
    broken: list[int] = []

    def status(cmd):  # the first request finds its session declared dead by pyghmi
        if not broken:
            broken.append(1)
            cmd.ipmi_session._mark_broken()
        return raw(cmd, 0x00, 0x01)[0] & 0x01

    pool = SessionPool()
    assert (
        await asyncio.to_thread(call, target, status, pool=pool, deadline=time.monotonic() + 10)
        == 1
    )
    assert pool.login_count(target) == 2
    broken.clear()  # without a bound, a fresh session's loss is final, as before
    with pytest.raises(UnreachableError, match="no longer connected"):
        await asyncio.to_thread(call, target, status, pool=SessionPool())
    broken.clear()  # and a bound that has passed is final too
    with pytest.raises(UnreachableError):
        await asyncio.to_thread(call, target, status, pool=SessionPool(), deadline=time.monotonic())


# -- secrets ------------------------------------------------------------------------------------
async def test_password_never_shown(bmc: IpmiSim, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    drv = driver(bmc)
    assert PASSWORD not in repr(drv) and "******" in repr(drv)
    assert PASSWORD not in str(drv.public_options()) and PASSWORD not in repr(drv.target)
    await drv.status()
    await drv.off()
    bad = driver(bmc, password=PASSWORD + "x")
    with pytest.raises(AuthError) as err:
        await bad.status()
    assert PASSWORD not in str(err.value) and err.value.__cause__ is None
    assert PASSWORD not in caplog.text and caplog.text  # something was logged


async def test_fence_cfg_with_password_file(bmc: IpmiSim, make_fencer, tmp_path: Path) -> None:
    secret = tmp_path / "bmc.pw"
    secret.write_text(PASSWORD + "\n")
    args = bmc.fence_cfg_args().replace(f"password={PASSWORD}", f"password_file={secret}")
    args = args.replace(f"password='{PASSWORD}'", f"password_file={secret}")
    assert PASSWORD not in args
    fencer = make_fencer(f"device bmc ipmi {args}\nconnect bmc node=n1\n")
    res = await fencer.fence("n1", "reboot")
    assert res.ok and bmc.power == "on"
    assert bmc.power_calls() == ["set power 0", "set power 1"]
    assert PASSWORD not in res.to_json()


async def test_pyghmi_workarounds_are_in_place(bmc: IpmiSim) -> None:
    # Speed lives in benchmarks/; here only that the workarounds are wired in.
    import threading

    from pyghmi.ipmi.private import session as pyghmi_session

    assert pyghmi_session._io_wait.__module__ == "hafence_ipmi.session"
    await driver(bmc).status()
    assert any(t.name == "hafence-ipmi-keepalive" and t.daemon for t in threading.enumerate())


async def test_keepalive_loop_sleeps_while_no_session_is_alive(
    bmc: IpmiSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyghmi's own Housekeeper spins once no session is alive (all logged out, or broken
    # by a BMC that went away), holding the GIL: a daemon that had fenced through IPMI
    # once ran every other thread - its SNMP fences' event loop too - several times
    # slower, on a core burnt for nothing.
    import threading

    from pyghmi.ipmi.private import session as pyghmi_session

    drv = driver(bmc)
    await drv.status()  # logged in; the keepalive thread waits for this session's next ping
    real = pyghmi_session.Session.wait_for_rsp
    calls: list[float] = []

    def counting(*args: object, **kw: object) -> object:
        if threading.current_thread().name == "hafence-ipmi-keepalive":
            calls.append(1.0)
        return real(*args, **kw)

    monkeypatch.setattr(pyghmi_session.Session, "wait_for_rsp", counting)
    # From now on pyghmi knows no live session (as after the last logout) ...
    monkeypatch.setattr(pyghmi_session.Session, "keepalive_sessions", {})
    monkeypatch.setattr(pyghmi_session.Session, "waiting_sessions", {})
    await drv.status()  # ... and this reply wakes the keepalive thread up into that state
    calls.clear()
    await asyncio.sleep(1.0)
    assert len(calls) <= 3  # idle sleeps of _KEEPALIVE_IDLE; a spinning loop makes thousands


def test_pyghmi_oem_handlers_are_imported_only_when_pyghmi_asks(bmc: IpmiSim) -> None:
    # In a fresh interpreter, as a one-shot command runs: the driver's raw chassis
    # commands need no OEM handler, so the vendor handlers (3/4 of pyghmi's import
    # time) stay unimported; a Command method that wants one still gets the real lookup.
    code = f"""
import asyncio, sys
from hafence.fence.chain import driver_class
opts = {bmc.driver_options()!r}
driver = driver_class("ipmi")(opts)
assert asyncio.run(driver.status()).value == "on"
print(sorted(m for m in sys.modules if ".oem." in m))
from hafence_ipmi.session import POOL, Target
cmd = next(iter(POOL._cmds.values()))
print(cmd.get_power()["powerstate"], type(cmd._oem).__module__)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = proc.stdout.splitlines()
    assert before == "['pyghmi.ipmi.oem.generic', 'pyghmi.ipmi.oem.lookup']"
    assert after == "on pyghmi.ipmi.oem.generic"  # ipmi_sim is no Lenovo: generic handler


def _run_script(code: str) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter: pyghmi's socket and I/O thread are made once per process.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_a_process_holding_over_1024_files_still_gets_answers(bmc: IpmiSim) -> None:
    # pyghmi's I/O thread waited with select(), which dies on a descriptor >= 1024: the
    # process's first IPMI socket then sat above the limit and no answer ever came.
    code = f"""
import asyncio, socket
from hafence.fence.chain import driver_class
held = [socket.socket() for _ in range(1100)]
driver = driver_class("ipmi")({bmc.driver_options(timeout=30.0)!r})
print(asyncio.run(driver.status()).value)
from pyghmi.ipmi.private import session
print(min(s.fileno() for s in session.iosockets) > 1024)
"""
    proc = _run_script(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["on", "True"]


def test_a_dead_pyghmi_io_thread_is_started_again(bmc: IpmiSim) -> None:
    code = f"""
import asyncio, logging, threading
from hafence.fence.chain import driver_class
from pyghmi.ipmi.private import session
logging.basicConfig(format="%(levelname)s %(message)s")
driver = driver_class("ipmi")({bmc.driver_options(timeout=30.0)!r})
print(asyncio.run(driver.status()).value)
dead = session.iothread
dead.running = False  # its loop ends at the next wake-up, as if it had crashed
session.iosockets[0].sendto(b"\\x01", (session.myself, session.iosockets[0].getsockname()[1]))
threading.Thread.join(dead, 10)  # not its own join(), which logs every session out
print(dead.is_alive())
print(asyncio.run(driver.status()).value, session.iothread is not dead)
"""
    proc = _run_script(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["on", "False", "on", "True"]
    assert "ERROR ipmi: pyghmi's I/O thread has died; starting a new one" in proc.stderr


def test_a_session_gone_as_its_packet_arrives_does_not_end_the_io_thread(bmc: IpmiSim) -> None:
    # pyghmi finds a packet's session in two steps; a session removed in between by
    # another thread (a logout) raised KeyError in its I/O thread and ended it.
    code = f"""
import asyncio, threading
from hafence.fence.chain import driver_class
from pyghmi.ipmi.private import session
driver = driver_class("ipmi")({bmc.driver_options(timeout=30.0)!r})
print(asyncio.run(driver.status()).value)

class GoneInBetween(dict):
    armed = True

    def __getitem__(self, key):
        if GoneInBetween.armed and threading.current_thread() is session.iothread:
            GoneInBetween.armed = False
            raise KeyError(key)
        return super().__getitem__(key)

session.Session.bmc_handlers = GoneInBetween(session.Session.bmc_handlers)
thread = session.iothread
print(asyncio.run(driver.status()).value, GoneInBetween.armed)
print(session.iothread is thread and thread.is_alive())
"""
    proc = _run_script(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["on", "on", "False", "True"]
