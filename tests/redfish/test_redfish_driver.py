"""The redfish driver (sushy) against sushy-tools' Redfish emulator on loopback."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator

import pytest
from hafence_redfish.driver import RedfishDriver

from hafence.errors import (
    AuthError,
    DeviceError,
    NotSupportedError,
    ParamError,
    UnreachableError,
)
from hafence.fence.driver import PowerState
from hafence.fence.metadata import driver_metadata
from hafence.plugins import PluginRegistry
from tests.peers.redfish import RedfishEmulator

from .conftest import PASSWORD

_OPENED: list[RedfishDriver] = []


def drv(options: dict[str, str], **extra: str) -> RedfishDriver:
    # The driver's default timeout (10 s): these tests judge answers, not time, and a
    # status is four HTTPS requests to a Python emulator (a 2 s bound failed at load 9).
    # The tests about time set their own.
    d = RedfishDriver({**options, **extra}, label="bmc")
    _OPENED.append(d)
    return d


@pytest.fixture(autouse=True)
async def _close_drivers() -> AsyncIterator[None]:
    """Log every driver out at the end of its test, not whenever the GC gets to it."""
    yield
    while _OPENED:
        await _OPENED.pop().close()


# -- configuration -------------------------------------------------------------------------
def test_registered_through_its_entry_point() -> None:
    reg = PluginRegistry()
    assert reg.fence_driver("redfish") is RedfishDriver
    meta = driver_metadata(RedfishDriver)
    names = {p["name"] for p in meta["parameters"]}
    assert {"ip", "ipport", "ssl", "ssl_insecure", "ca_file", "plug", "password"} <= names


def test_without_sushy_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sushy", None)  # what a missing package looks like
    with pytest.raises(ParamError) as exc:
        RedfishDriver({"ip": "127.0.0.1"})
    assert exc.value.field == "driver" and "pip install 'hafence[redfish]'" in str(exc.value)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "ip"),
        ({"ip": "https://bmc/redfish"}, "ip"),
        ({"ip": "bmc", "ssl_insecure": "1", "ca_file": "/x.pem"}, "ca_file"),
        ({"ip": "bmc", "ssl": "0", "ssl_insecure": "1"}, "ssl"),
        ({"ip": "bmc", "auth": "digest"}, "auth"),
        ({"ip": "bmc", "method": "reset"}, "method"),
        ({"ip": "bmc", "timeout": "0"}, "timeout"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, str], field: str) -> None:
    with pytest.raises(ParamError) as exc:
        RedfishDriver(options)
    assert exc.value.field == field


def test_urls_and_verification() -> None:
    d = RedfishDriver({"ip": "bmc.example"})
    assert d.base_url == "https://bmc.example:443" and d.verify is True
    d = RedfishDriver({"ip": "::1", "ipport": "8000", "ssl": "0"})
    assert d.base_url == "http://[::1]:8000"
    assert RedfishDriver({"ip": "b", "ssl_insecure": "1"}).verify is False
    assert RedfishDriver({"ip": "b", "ca_file": "/ca.pem"}).verify == "/ca.pem"
    assert "reboot" not in RedfishDriver({"ip": "b"}).actions
    assert "reboot" in RedfishDriver({"ip": "b", "method": "cycle"}).actions


# -- actions -------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["id", "name", "path"])
async def test_status_off_on_by_id_name_or_path(bmc: RedfishEmulator, how: str) -> None:
    system = {
        "id": bmc.system_id("node2"),
        "name": "node2",
        "path": f"/redfish/v1/Systems/{bmc.system_id('node2')}",
    }[how]
    async with drv(bmc.driver_options(), system=system) as d:
        assert await d.status() == PowerState.ON
        await d.off()
        assert bmc.power("node2") == "off" and bmc.power("node1") == "on"
        assert await d.status() == PowerState.OFF
        await d.on()
        assert await d.status() == PowerState.ON
        await d.monitor()
    assert bmc.calls() == ["ForceOff node2", "On node2"]


async def test_status_is_read_fresh_each_time(bmc: RedfishEmulator) -> None:
    async with drv(bmc.driver_options("node1")) as d:
        assert await d.status() == PowerState.ON
        bmc.set_power(False, "node1")  # changed behind the driver's back
        assert await d.status() == PowerState.OFF


async def test_the_only_system_needs_no_id(tls_bmc: RedfishEmulator) -> None:
    opts = tls_bmc.driver_options()
    assert "system" not in opts
    async with drv(opts) as d:
        await d.off()
        assert await d.status() == PowerState.OFF
    assert tls_bmc.calls() == ["ForceOff solo"]


async def test_several_systems_and_no_id_is_an_error_listing_them(bmc: RedfishEmulator) -> None:
    opts = {k: v for k, v in bmc.driver_options().items() if k != "system"}
    with pytest.raises(DeviceError, match=r"has 2 systems \(.*\): set system=ID") as exc:
        await drv(opts).status()
    assert bmc.system_id("node1") in str(exc.value)


async def test_unknown_system(bmc: RedfishEmulator) -> None:
    with pytest.raises(DeviceError, match=r"no system 'node9' on http://127.0.0.1:\d+ \(Ids: "):
        await drv(bmc.driver_options(), system="node9").status()


async def test_list_shows_every_system(bmc: RedfishEmulator) -> None:
    bmc.set_power(False, "node1")
    async with drv(bmc.driver_options()) as d:
        ports = await d.list()
    assert {(p.id, p.name, p.state) for p in ports} == {
        (bmc.system_id("node1"), "node1", PowerState.OFF),
        (bmc.system_id("node2"), "node2", PowerState.ON),
    }


async def test_native_reboot_is_force_restart(bmc: RedfishEmulator) -> None:
    async with drv(bmc.driver_options("node1"), method="cycle") as d:
        await d.reboot()
        bmc.set_power(False, "node1")
        await d.reboot()  # a restart does nothing to a system that is off: On instead
    assert bmc.calls() == ["ForceRestart node1", "On node1"]
    assert bmc.power("node1") == "on"
    with pytest.raises(NotSupportedError, match="method=onoff"):
        await drv(bmc.driver_options("node1")).reboot()


async def test_diag_sends_an_nmi(bmc: RedfishEmulator) -> None:
    d = drv(bmc.driver_options("node2"))
    assert "diag" in d.actions
    await d.diag()
    assert bmc.calls() == ["Nmi node2"] and bmc.power("node2") == "on"


# -- failure paths -------------------------------------------------------------------------
async def test_wrong_password_is_auth_error_without_leaks(bmc: RedfishEmulator, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # sushy and urllib3 log requests at debug level
    opts = bmc.wrong_password_options("node1")
    with pytest.raises(AuthError, match=r"refused the credentials \(HTTP 401\)") as exc:
        await drv(opts).off()
    assert exc.value.kind == "auth_failed"
    assert bmc.calls() == [] and bmc.power("node1") == "on"
    for secret in (opts["password"], PASSWORD):
        assert secret not in str(exc.value) and secret not in caplog.text


async def test_password_from_a_file(bmc: RedfishEmulator, tmp_path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    opts = {k: v for k, v in bmc.driver_options("node1").items() if k != "password"}
    async with drv(opts, password_file=str(pw)) as d:
        assert await d.status() == PowerState.ON
        assert PASSWORD not in repr(d)


async def test_tls_verified_against_the_ca_file(tls_bmc: RedfishEmulator) -> None:
    async with drv(tls_bmc.driver_options()) as d:
        assert await d.status() == PowerState.ON


async def test_untrusted_certificate_is_refused_with_a_hint(tls_bmc: RedfishEmulator) -> None:
    opts = {k: v for k, v in tls_bmc.driver_options().items() if k != "ca_file"}
    with pytest.raises(UnreachableError, match=r"TLS certificate not trusted \(give ca_file="):
        await drv(opts).status()
    async with drv(opts, ssl_insecure="1") as d:  # verification off: accepted
        assert await d.status() == PowerState.ON


async def test_https_to_a_plain_http_port(bmc: RedfishEmulator) -> None:
    opts = {**bmc.driver_options("node1"), "ssl": "1", "ssl_insecure": "1"}
    with pytest.raises(UnreachableError, match="TLS handshake failed"):
        await drv(opts).status()


async def test_closed_port_is_unreachable(closed_port: int) -> None:
    opts = {"ip": "127.0.0.1", "ipport": str(closed_port), "ssl": "0", "password": "x"}
    with pytest.raises(UnreachableError, match="connection refused"):
        await drv(opts).status()


async def test_silent_bmc_is_unreachable_within_the_timeout(silent_port: int) -> None:
    opts = {"ip": "127.0.0.1", "ipport": str(silent_port), "ssl": "0", "password": "x"}
    d = RedfishDriver({**opts, "timeout": "1"})
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        with pytest.raises(UnreachableError, match=r"127.0.0.1:\d+"):
            await d.status()
    finally:
        ticker.cancel()
        await d.close()
    assert ticks > 5  # sushy's blocking HTTP ran in a worker thread


# -- Redfish sessions ------------------------------------------------------------------------
async def test_session_opened_once_reused_and_logged_out(fresh_bmc: RedfishEmulator) -> None:
    d = drv(fresh_bmc.driver_options("node1"))  # auth=auto: a session when the BMC offers one
    assert await d.status() == PowerState.ON
    await d.off()
    assert await d.status() == PowerState.OFF
    assert len(fresh_bmc.sessions()) == 1  # one login for the three calls
    created = fresh_bmc.sessions_created()
    await d.close()
    assert fresh_bmc.sessions() == []  # BMCs allow few sessions: never leak one
    assert fresh_bmc.sessions_created() == created


async def test_expired_session_is_renewed(fresh_bmc: RedfishEmulator) -> None:
    async with drv(fresh_bmc.driver_options("node1"), auth="session") as d:
        await d.status()
        [before] = fresh_bmc.sessions()
        fresh_bmc.expire_sessions()  # a BMC reset: the token is no longer valid
        assert await d.status() == PowerState.ON
        [after] = fresh_bmc.sessions()
    assert after != before and fresh_bmc.sessions() == []


async def test_basic_auth_opens_no_session(fresh_bmc: RedfishEmulator) -> None:
    created = fresh_bmc.sessions_created()
    async with drv(fresh_bmc.driver_options("node1"), auth="basic") as d:
        await d.off()
    assert fresh_bmc.sessions_created() == created and fresh_bmc.power("node1") == "off"


async def test_bmc_without_sessions_falls_back_to_basic() -> None:
    with RedfishEmulator(sessions=False, password=PASSWORD) as plain:
        async with drv(plain.driver_options()) as d:
            await d.off()
            assert await d.status() == PowerState.OFF
        with pytest.raises(AuthError):  # explicitly asked for a session: refused
            await drv(plain.driver_options(), auth="session").status()
