"""The snmp_ifmib driver against a real SNMP agent (snmpsim) on loopback."""

from __future__ import annotations

import asyncio
import builtins
import os
import threading
from collections.abc import Coroutine
from typing import Any

import pytest
from hafence_snmp.ifmib import IfMibDriver

from hafence.errors import DeviceError, ParamError
from hafence.fence.driver import Port, PowerState
from hafence.fence.metadata import driver_metadata, driver_metadata_xml
from hafence.plugins import get_registry
from hafence.secrets import Secret
from hafence.simdevices.snmp_agent import EXTRA_V3_USERS, SimPort, SnmpAgent, V3User, snmp_agent

VERSIONS = ("1", "2c", "3")


def test_registered_through_entry_point() -> None:
    reg = get_registry()
    assert reg.fence_driver("snmp_ifmib") is IfMibDriver
    assert reg.owner("hafence_fence_drivers", "snmp_ifmib") == "snmp_ifmib"


def test_metadata_marks_secrets_and_fence_agents_names() -> None:
    meta = driver_metadata(IfMibDriver)
    params = {p["name"]: p for p in meta["parameters"]}
    assert params["plug"]["required"] and params["ip"]["required"]
    for secret in ("community", "password", "snmp_priv_passwd"):
        assert params[secret]["secret"], secret
    assert not params["username"]["secret"]
    assert "reboot" in meta["actions"]  # composed by the fencer
    assert "reboot" not in IfMibDriver.actions
    xml = driver_metadata_xml(IfMibDriver)
    assert 'name="snmp_priv_prot"' in xml and 'name="plug"' in xml


@pytest.mark.parametrize("version", VERSIONS)
async def test_list_shows_every_port(switch: SnmpAgent, version: str) -> None:
    async with IfMibDriver(switch.driver_options("1", version=version)) as d:
        ports = await d.list()
    assert ports == [
        Port("1", "Gi1/0/1", "node1", PowerState.ON),
        Port("2", "Gi1/0/2", "node2", PowerState.ON),
        Port("3", "Gi1/0/3", "node3", PowerState.OFF),
        Port("10", "Po10", "lab trunk", PowerState.UNKNOWN),  # ifAdminStatus testing(3)
        Port("24", "Gi1/0/24", "uplink (locked)", PowerState.ON),
    ]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("plug", "index", "state"),
    [
        ("1", 1, PowerState.ON),  # ifIndex
        ("Gi1/0/2", 2, PowerState.ON),  # ifName
        ("GigabitEthernet1/0/3", 3, PowerState.OFF),  # ifDescr
        ("ifName:Po10", 10, PowerState.UNKNOWN),  # forced kind; testing(3) is not on/off
        ("ifDescr:GigabitEthernet1/0/24", 24, PowerState.ON),
        ("ifIndex:2", 2, PowerState.ON),
    ],
)
async def test_status_by_index_name_and_descr(
    switch: SnmpAgent, version: str, plug: str, index: int, state: PowerState
) -> None:
    async with IfMibDriver(switch.driver_options(plug, version=version), label="sw") as d:
        assert await d.status() == state
        assert await d.if_index() == index
        await d.monitor()


async def test_off_on_v2c_changes_the_agents_port(agent: SnmpAgent) -> None:
    async with IfMibDriver(agent.driver_options("Gi1/0/2"), label="sw") as d:
        await d.off()
        # read back independently of the driver: a raw GET over a plain socket
        assert agent.get_admin_status(2) == 2
        assert await d.status() == PowerState.OFF
        await d.off()  # idempotent: already down stays down, no error
        assert agent.get_admin_status(2) == 2
        await d.on()
        assert agent.get_admin_status(2) == 1
        await d.on()
        assert await d.status() == PowerState.ON
    assert agent.get_admin_status(1) == 1  # neighbours untouched
    oid = "1.3.6.1.2.1.2.2.1.7.2"
    assert agent.set_requests() == [(oid, "2"), (oid, "2"), (oid, "1"), (oid, "1")]


async def test_v3_authpriv_off_on(agent: SnmpAgent) -> None:
    opts = agent.driver_options("GigabitEthernet1/0/1", version="3")
    async with IfMibDriver(opts, label="sw") as d:
        assert d.options["snmp_sec_level"] == "authPriv"
        await d.off()
        assert agent.get_admin_status(1) == 2  # same switch state seen through v2c
        assert await d.status() == PowerState.OFF
        await d.on()
        assert await d.status() == PowerState.ON
    log = agent.log_text()
    assert "securityModel 3, securityName fenceadmin, securityLevel 3" in log  # authPriv


async def test_v1_off_on(agent: SnmpAgent) -> None:
    async with IfMibDriver(agent.driver_options("3", version="1")) as d:
        await d.on()
        assert agent.get_admin_status(3) == 1
        await d.off()
        assert await d.status() == PowerState.OFF


async def test_session_reopens_after_close(agent: SnmpAgent) -> None:
    d = IfMibDriver(agent.driver_options("Gi1/0/1"))
    assert await d.status() == PowerState.ON
    await d.close()
    await d.close()  # twice is fine
    await d.off()
    assert await d.status() == PowerState.OFF
    await d.close()


async def test_a_new_engine_compiles_no_mib_source(
    switch: SnmpAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pysnmp compiled its MIB modules from source for every engine (it never finds
    # the bytecode in __pycache__): the bulk of a fence call's set-up, in its bound.
    async with IfMibDriver(switch.driver_options("Gi1/0/1")) as d:
        await d.status()  # this process has loaded every MIB an engine needs by now
    compiled: list[str] = []
    real = builtins.compile

    def counting(source: Any, filename: Any, *args: Any, **kw: Any) -> Any:
        compiled.append(str(filename))
        return real(source, filename, *args, **kw)

    monkeypatch.setattr(builtins, "compile", counting)
    async with IfMibDriver(switch.driver_options("Gi1/0/2")) as d:
        assert await d.status() == PowerState.ON  # a new driver: a new engine
    assert [f for f in compiled if "mibs" in f] == []


class LoopThread:
    """An event loop running in its own thread, as the CRM's FenceRunner keeps one."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        # the driver bounds every call itself (timeout, default 10 s); a hang guard only
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def in_new_thread(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run(coro)`` in a thread of its own; that loop is closed afterwards."""
    out: dict[str, Any] = {}

    def main() -> None:
        try:
            out["result"] = asyncio.run(coro)
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=main)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("result")


def test_one_driver_serves_event_loops_of_other_threads(agent: SnmpAgent) -> None:
    # pysnmp binds an engine's socket to the loop it was made on: a second loop used
    # to get no answer at all ("unreachable") from a switch that was fine.
    d = IfMibDriver(agent.driver_options("Gi1/0/1"))
    in_new_thread(d.off())
    assert agent.get_admin_status(1) == 2
    in_new_thread(d.on())  # the first loop is closed by now
    assert agent.get_admin_status(1) == 1
    in_new_thread(d.close())
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):  # each loop ends with the engine open: its socket must not leak
        assert in_new_thread(d.status()) == PowerState.ON
    in_new_thread(d.close())
    assert len(os.listdir("/proc/self/fd")) == fds
    a, b = LoopThread(), LoopThread()
    try:
        a.run(d.off())
        assert agent.get_admin_status(1) == 2
        assert b.run(d.status()) == PowerState.OFF  # loop a still runs in its thread
        b.run(d.on())
        assert a.run(d.status()) == PowerState.ON
        a.run(d.close())
    finally:
        a.stop()
        b.stop()
    oid = "1.3.6.1.2.1.2.2.1.7.1"
    assert agent.set_requests() == [(oid, "2"), (oid, "1"), (oid, "2"), (oid, "1")]


async def test_close_releases_the_engines_sockets(switch: SnmpAgent) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def lifecycle() -> None:
        async with IfMibDriver(switch.driver_options("Gi1/0/1", version="3")) as d:
            await d.status()
            await d.list()

    await lifecycle()  # first use may open process-wide things (event loop internals)
    base = open_fds()
    for _ in range(5):
        await lifecycle()
    assert open_fds() == base


async def test_unknown_port_names_the_port(switch: SnmpAgent) -> None:
    async with IfMibDriver(switch.driver_options("Gi9/9/9"), label="sw") as d:
        for action in (d.status, d.off, d.on):
            with pytest.raises(DeviceError, match=r"port 'Gi9/9/9' not found") as info:
                await action()
            assert info.value.kind == "device_error" and info.value.device == "sw"
    async with IfMibDriver(switch.driver_options("gi1/0/1"), label="sw") as d:
        with pytest.raises(DeviceError, match=r"did you mean 'Gi1/0/1'\?"):
            await d.status()  # names are exact: a near miss is only suggested
    async with IfMibDriver(switch.driver_options("99"), label="sw") as d:
        with pytest.raises(DeviceError, match=r"port '99': no ifAdminStatus.99"):
            await d.status()
        with pytest.raises(DeviceError, match=r"port '99': agent refused SET"):
            await d.off()


async def test_unknown_port_v1_error_status_names_the_port(switch: SnmpAgent) -> None:
    # SNMPv1 answers a missing object with error-status noSuchName, not a value
    async with IfMibDriver(switch.driver_options("99", version="1"), label="sw") as d:
        with pytest.raises(DeviceError, match=r"port '99': .*noSuchName"):
            await d.status()


async def test_read_only_port_refuses_off(agent: SnmpAgent) -> None:
    async with IfMibDriver(agent.driver_options("Gi1/0/24"), label="sw") as d:
        with pytest.raises(
            DeviceError, match=r"port 'Gi1/0/24' \(ifIndex 24\): SNMP SET .*: notWritable"
        ):
            await d.off()
        assert await d.status() == PowerState.ON
    assert agent.get_admin_status(24) == 1


async def test_ambiguous_and_numeric_names(tmp_path) -> None:
    ports = (
        SimPort(5, "eth", "1", "a"),
        SimPort(6, "eth", "2", "b", admin=2),
        SimPort(7, "mgmt", "mgmt0", "c"),
    )
    with snmp_agent(ports=ports, workdir=tmp_path / "sw") as sw:
        async with IfMibDriver(sw.driver_options("eth"), label="sw") as d:
            with pytest.raises(DeviceError, match=r"ambiguous.*ifIndex 5, 6"):
                await d.status()
        # a port *named* "2" needs the ifName: prefix; bare "2" is an ifIndex
        async with IfMibDriver(sw.driver_options("ifName:2")) as d:
            assert await d.status() == PowerState.OFF and await d.if_index() == 6
        async with IfMibDriver(sw.driver_options("2")) as d:
            with pytest.raises(DeviceError, match="no such interface"):
                await d.status()


async def test_renumbered_switch_never_gets_a_set_for_the_wrong_port(
    agent: SnmpAgent, caplog: pytest.LogCaptureFixture
) -> None:
    async with IfMibDriver(agent.driver_options("Gi1/0/2"), label="sw") as d:
        assert await d.if_index() == 2
        await d.off()
        # the switch reboots and numbers its interfaces differently: Gi1/0/2 is now 7
        # and ifIndex 2 is another port
        agent.restart(
            ports=(
                SimPort(2, "GigabitEthernet1/0/1", "Gi1/0/1", "node1"),
                SimPort(7, "GigabitEthernet1/0/2", "Gi1/0/2", "node2"),
            )
        )
        await d.off()  # the SET goes to ifIndex 7
        assert agent.get_admin_status(7) == 2 and agent.get_admin_status(2) == 1
        assert "port 'Gi1/0/2' is no longer ifIndex 2" in caplog.text
        caplog.clear()
        agent.restart(ports=(SimPort(9, "GigabitEthernet1/0/2", "Gi1/0/2", "node2", admin=2),))
        assert await d.status() == PowerState.OFF  # status re-resolves too
        assert await d.if_index() == 9
        assert "port 'Gi1/0/2' is no longer ifIndex 7" in caplog.text


def test_option_validation() -> None:
    base = {"ip": "127.0.0.1", "plug": "1"}
    with pytest.raises(ParamError, match="community: required"):
        IfMibDriver(base)
    with pytest.raises(ParamError, match="username: required"):
        IfMibDriver({**base, "snmp_version": "3"})
    with pytest.raises(ParamError, match="snmp_priv_passwd: required"):
        IfMibDriver(
            {**base, "snmp_version": "3", "username": "u", "password": "12345678",
             "snmp_sec_level": "authPriv"}
        )  # fmt: skip
    with pytest.raises(ParamError, match="password: SNMPv3 passwords must be at least 8"):
        IfMibDriver({**base, "snmp_version": "3", "username": "u", "password": "short"})
    with pytest.raises(ParamError, match="snmp_version: must be one of"):
        IfMibDriver({**base, "community": "c", "snmp_version": "2"})
    with pytest.raises(ParamError, match="plug: ifIndex must be a number"):
        IfMibDriver({**base, "community": "c", "plug": "ifIndex:x"})
    with pytest.raises(ParamError, match="plug: required"):
        IfMibDriver({"ip": "127.0.0.1", "community": "c"})
    # fence_ifmib's names work too
    d = IfMibDriver({"ipaddr": "h", "port": "Gi1/0/1", "community": "c", "login": "u"})
    assert d.options["ip"] == "h" and d.plug == "Gi1/0/1"
    # security level follows from the passwords given
    d = IfMibDriver({**base, "snmp_version": "3", "username": "u", "password": "12345678"})
    assert d.options["snmp_sec_level"] is None
    assert d.client.credentials.security_level == "authNoPriv"


async def test_secrets_from_file_and_env(
    agent: SnmpAgent, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = agent.driver_options("1", version="3")
    (tmp_path / "auth").write_text(opts.pop("password") + "\n")
    monkeypatch.setenv("SW_PRIV", opts.pop("snmp_priv_passwd"))
    d = IfMibDriver(
        {**opts, "password_file": str(tmp_path / "auth"), "snmp_priv_passwd_env": "SW_PRIV"}
    )
    async with d:
        assert isinstance(d.options["password"], Secret)
        await d.off()
    assert agent.get_admin_status(1) == 2


@pytest.mark.parametrize("version", ["2c", "3"])
async def test_ipv6_loopback(tmp_path, version: str) -> None:
    with snmp_agent(ipv6=True, workdir=tmp_path / "sw") as sw:
        async with IfMibDriver(sw.driver_options("Gi1/0/1", version=version, ipv6=True)) as d:
            assert d.options["ip"] == "::1"
            await d.off()
            assert await d.status() == PowerState.OFF
        assert sw.get_admin_status(1) == 2  # the same switch, read over IPv4
        assert "transportAddress ('::1'," in sw.log_text()


@pytest.mark.parametrize("user", EXTRA_V3_USERS, ids=lambda u: u.name)
async def test_v3_protocols_and_security_levels(agent: SnmpAgent, user: V3User) -> None:
    async with IfMibDriver(agent.driver_options("Gi1/0/2", version="3", user=user)) as d:
        # the security level follows from the passwords given
        assert d.client.credentials.security_level == user.level
        await d.off()
        assert await d.status() == PowerState.OFF
    assert agent.get_admin_status(2) == 2
    level = {"noAuthNoPriv": 1, "authNoPriv": 2, "authPriv": 3}[user.level]
    assert f"securityName {user.name}, securityLevel {level}" in agent.log_text()
