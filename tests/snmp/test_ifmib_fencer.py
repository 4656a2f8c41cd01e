"""snmp_ifmib through the real Fencer and fence.cfg: verified off, failure kinds, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hafence_snmp.ifmib import IfMibDriver

from hafence.errors import AuthError, DeviceError, UnreachableError
from hafence.fence.driver import PowerState
from hafence.ha.env import FENCE_OK, FENCE_PENDING
from hafence.ha.fencerun import FenceRunner, FenceSource
from hafence.plugins import PluginRegistry
from hafence.simdevices.snmp_agent import SnmpAgent
from hafence.store import EmbeddedStore

from .conftest import cfg_args, make_fencer

# The simulated switch is a Python process (snmpsim) sharing the busy cores with the
# suite: 3 s per call is what it needs there, not what a switch needs. Only the dead
# devices wait the bound out.
FAST = "timeout=3 power_timeout=4 poll_interval=0.05"


def device_line(
    agent: SnmpAgent, name: str = "sw", version: str = "2c", timing: str = FAST, **override: str
) -> str:
    if not override:
        return f"device {name} snmp_ifmib {agent.cfg_args(version=version)} {timing}\n"
    opts = agent.driver_options("x", version=version)
    del opts["plug"]  # per node, on the connect line
    opts.update(override)
    return f"device {name} snmp_ifmib {cfg_args(opts)} {timing}\n"


async def test_verified_off_and_on_through_fencer(
    registry: PluginRegistry, agent: SnmpAgent, tmp_path: Path
) -> None:
    text = (
        device_line(agent)
        + "connect sw node=node1 plug=Gi1/0/1\nconnect sw node=node2 plug=Gi1/0/2\n"
    )
    f = make_fencer(registry, text, tmp_path)
    res = await f.fence("node1")
    assert res.ok and res.level == 1 and res.devices == ["sw"]
    assert agent.get_admin_status(1) == 2 and agent.get_admin_status(2) == 1
    # the off was confirmed by reading ifAdminStatus back after the SET
    log = agent.log_text()
    assert log.rindex("1.3.6.1.2.1.2.2.1.7.1=<2>, flags: EXACT, SET") < log.rindex(
        "1.3.6.1.2.1.2.2.1.7.1=<>, flags: EXACT, GET"
    )
    [rec] = f.history.records("node1")
    assert rec.ok and rec.action == "off" and rec.devices == ["sw"]
    drv = f.build(f.chain("node1")[0].devices[0])
    try:
        on = await f.run_device(drv, "on", node="node1")
    finally:
        await drv.close()
    assert on.ok and on.state == "on" and agent.get_admin_status(1) == 1


async def test_reboot_is_composed_off_verify_on(
    registry: PluginRegistry, agent: SnmpAgent, tmp_path: Path
) -> None:
    f = make_fencer(registry, device_line(agent) + "connect sw node=n1 plug=2\n", tmp_path)
    res = await f.fence("n1", "reboot")
    assert res.ok
    assert agent.get_admin_status(2) == 1
    oid = "1.3.6.1.2.1.2.2.1.7.2"
    assert agent.set_requests() == [(oid, "2"), (oid, "1")]  # down, then up


async def test_v3_fence_and_dry_run_check(
    registry: PluginRegistry, agent: SnmpAgent, tmp_path: Path
) -> None:
    text = device_line(agent, version="3") + "connect sw node=n1 plug=GigabitEthernet1/0/3\n"
    f = make_fencer(registry, text, tmp_path)
    rep = await f.check("n1")
    assert rep.ok, rep
    [chk] = rep.devices
    assert chk.state == "off"  # Gi1/0/3 starts down
    assert agent.set_requests() == []  # a dry run changes nothing
    res = await f.fence("n1")
    assert res.ok and agent.get_admin_status(3) == 2


async def test_level_falls_through_to_a_working_switch(
    registry: PluginRegistry, agent: SnmpAgent, closed_udp_port: int, tmp_path: Path
) -> None:
    text = (
        # level 1: two switch ports (bonded NICs); one switch does not answer
        device_line(agent, "bond:1")
        + device_line(agent, "bond:2", ipport=str(closed_udp_port))
        + "connect bond:1 node=n1 plug=Gi1/0/1\nconnect bond:2 node=n1 plug=Gi1/0/2\n"
        # level 2: another port on the good switch
        + device_line(agent, "backup")
        + "connect backup node=n1 plug=Gi1/0/2\n"
    )
    res = await make_fencer(registry, text, tmp_path).fence("n1")
    assert res.ok and res.level == 2 and res.level_name == "backup"
    lv1 = res.attempts[0].levels[0]
    assert not lv1.ok
    kinds = {d.device: d.error_kind for d in lv1.devices}
    # The dead switch's driver gives up below the fencer's bound; on a starved machine
    # (load 8+ on 2 cores: setting up three SNMP engines holds the event loop) the
    # fencer's own bound can fire first. The fall-through is the point here;
    # test_closed_port_is_unreachable_within_timeout pins 'unreachable' down.
    assert kinds["bond:1"] is None and kinds["bond:2"] in ("unreachable", "timeout")
    assert agent.get_admin_status(1) == 2 and agent.get_admin_status(2) == 2


async def test_closed_port_is_unreachable_within_timeout(
    registry: PluginRegistry, closed_udp_port: int, tmp_path: Path
) -> None:
    opts = {"ip": "127.0.0.1", "ipport": str(closed_udp_port), "community": "c", "plug": "1"}
    d = IfMibDriver({**opts, "timeout": "1"}, label="dead")
    with pytest.raises(UnreachableError, match=r"no SNMP response from 127.0.0.1:\d+ within 0.5s"):
        await d.status()
    await d.close()
    # Through the fencer (whose own bound on the call is 'timeout'): the driver gave up
    # first, so the result says why - unreachable - and not a bare timeout.
    f = make_fencer(registry, f"device dead snmp_ifmib {cfg_args(opts)} {FAST}\n"
                    "connect dead node=n1\n", tmp_path)  # fmt: skip
    res = await f.fence("n1")
    assert not res.ok and res.error_kind == "unreachable"


async def test_agent_dies_mid_session(agent: SnmpAgent) -> None:
    async with IfMibDriver({**agent.driver_options("Gi1/0/1"), "timeout": "3"}) as d:
        await d.status()
        agent.stop()
        with pytest.raises(UnreachableError):
            await d.off()


async def test_wrong_community_is_unreachable_and_changes_nothing(
    registry: PluginRegistry, agent: SnmpAgent, tmp_path: Path
) -> None:
    # v1/v2c agents drop requests with an unknown community: nothing ever answers
    text = device_line(agent, community="not-the-community") + "connect sw node=n1 plug=1\n"
    res = await make_fencer(registry, text, tmp_path).fence("n1")
    assert not res.ok and res.error_kind == "unreachable"
    assert "wrong community" in res.attempts[0].levels[0].devices[0].message
    assert agent.get_admin_status(1) == 1


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"password": "wrong-auth-key"}, "Wrong SNMP PDU digest"),
        ({"snmp_priv_passwd": "wrong-priv-key"}, "Ciphering services not available"),
        ({"username": "intruder"}, "Unknown USM user"),
        ({"snmp_auth_prot": "MD5"}, "Wrong SNMP PDU digest"),
    ],
)
async def test_wrong_v3_credentials_are_auth_failed(
    registry: PluginRegistry, agent: SnmpAgent, tmp_path: Path, override: dict, why: str
) -> None:
    # The device's own timeout: the kind of the answer is judged, and a v3 refusal takes
    # two round trips and key work in a Python agent (at load 8.9, more than 1.5 s).
    opts = {**agent.driver_options("Gi1/0/1", version="3"), **override}
    async with IfMibDriver(opts, label="sw") as d:
        with pytest.raises(AuthError, match=why) as info:
            await d.off()
    assert info.value.kind == "auth_failed"
    line = device_line(agent, version="3", timing="poll_interval=0.05", **override)
    text = line + "connect sw node=n1 plug=1\n"
    res = await make_fencer(registry, text, tmp_path).fence("n1")
    assert not res.ok and res.error_kind == "auth_failed"
    assert agent.get_admin_status(1) == 1


async def test_unknown_and_read_only_ports_never_count_as_fenced(
    registry: PluginRegistry, agent: SnmpAgent, tmp_path: Path
) -> None:
    text = (
        device_line(agent) + "connect sw node=n1 plug=Gi7/7/7\nconnect sw node=n2 plug=Gi1/0/24\n"
    )
    f = make_fencer(registry, text, tmp_path)
    for node, what in (("n1", "port 'Gi7/7/7' not found"), ("n2", "port 'Gi1/0/24' (ifIndex 24)")):
        res = await f.fence(node)
        assert not res.ok and res.error_kind == "device_error"
        assert what in res.attempts[0].levels[0].devices[0].message
    assert agent.get_admin_status(24) == 1


async def test_secrets_never_in_repr_logs_errors_or_history(
    registry: PluginRegistry, agent: SnmpAgent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [agent.community, agent.v3_auth_key, agent.v3_priv_key, "wrong-auth-key"]
    text = (
        device_line(agent, "v2")
        + device_line(agent, "v3", version="3")
        + device_line(agent, "bad", version="3", password="wrong-auth-key")
        + "connect v2 node=n1 plug=1\nconnect v3 node=n2 plug=2\nconnect bad node=n3 plug=3\n"
    )
    f = make_fencer(registry, text, tmp_path)
    results = [await f.fence(n) for n in ("n1", "n2", "n3")]
    assert [r.ok for r in results] == [True, True, False]
    shown = [repr(d) for lv in f.chain("n2") for d in lv.devices]
    for node in ("n1", "n2", "n3"):
        drv = f.build(f.chain(node)[0].devices[0])
        shown += [repr(drv), str(drv.public_options()), repr(drv.client.credentials)]
        try:
            await drv.status()
        except AuthError as exc:
            shown.append(str(exc))
        finally:
            await drv.close()
    shown += [r.to_json() for r in results]
    shown += [caplog.text, (tmp_path / "history.jsonl").read_text()]
    shown.append(f.config.render_commands(["n1", "n2", "n3"]))
    blob = "\n".join(shown)
    assert "******" in blob
    for s in secrets:
        assert s not in blob, s


@pytest.mark.parametrize(("version", "kind"), [("2c", "auth_failed"), ("1", "device_error")])
async def test_read_only_community_cannot_fence(
    registry: PluginRegistry, agent: SnmpAgent, tmp_path: Path, version: str, kind: str
) -> None:
    ro = agent.driver_options("Gi1/0/1", version=version, read_only=True)
    async with IfMibDriver(ro, label="sw") as d:
        assert await d.status() == PowerState.ON  # reading works...
        with pytest.raises((AuthError, DeviceError)) as info:
            await d.off()  # ...writing does not
    # v2c says noAccess; SNMPv1 can only say noSuchName
    assert info.value.kind == kind
    assert "port 'Gi1/0/1' (ifIndex 1)" in str(info.value)
    assert "write access" in str(info.value)
    text = device_line(agent, version=version, community=agent.ro_community)
    res = await make_fencer(registry, text + "connect sw node=n1 plug=Gi1/0/1\n", tmp_path).fence(
        "n1"
    )
    assert not res.ok and res.error_kind == kind
    assert agent.get_admin_status(1) == 1 and agent.set_requests()  # refused, not lost


def test_one_process_fences_a_port_again_from_other_loops_and_threads(
    registry: PluginRegistry, agent: SnmpAgent, tmp_path: Path
) -> None:
    """As the daemons do: a CRM's FenceRunner fences on its own event-loop thread; the
    same port is fenced again by another runner (a new loop and thread, as after a
    master change) after an unfence from yet another thread."""
    text = device_line(agent) + "connect sw node=n1 plug=Gi1/0/1\n"
    cfg = tmp_path / "fence.cfg"
    cfg.write_text(text)
    fencer = make_fencer(registry, text, tmp_path)
    # hang guard only: the fencer bounds a verified off by this budget itself
    budget = 2 * fencer.device_budget(fencer.build(fencer.chain("n1")[0].devices[0]))
    logs: list[str] = []

    def fence_off() -> str:
        source = FenceSource(cfg, EmbeddedStore(tmp_path / "ha"), "crm", alive=lambda _n: False)
        runner = FenceRunner(
            source, actor="crm", log_fn=lambda _lvl, msg: logs.append(msg), registry=registry
        )
        try:
            assert runner.start("n1") == FENCE_PENDING
            deadline = time.monotonic() + budget
            while (state := runner.poll("n1")) == FENCE_PENDING and time.monotonic() < deadline:
                time.sleep(0.05)
            return state
        finally:
            runner.close()

    def unfence() -> None:
        out: list[bool] = []
        t = threading.Thread(target=lambda: out.append(asyncio.run(fencer.fence("n1", "on")).ok))
        t.start()
        t.join(budget)
        assert out == [True]

    assert fence_off() == FENCE_OK, logs
    assert agent.get_admin_status(1) == 2
    unfence()
    assert agent.get_admin_status(1) == 1
    assert fence_off() == FENCE_OK, logs
    assert agent.get_admin_status(1) == 2
    oid = "1.3.6.1.2.1.2.2.1.7.1"
    assert agent.set_requests() == [(oid, "2"), (oid, "1"), (oid, "2")]


@contextlib.asynccontextmanager
async def _delay_proxy(target: tuple[str, int], delay: float) -> AsyncIterator[int]:
    """A UDP relay to ``target`` that holds every request for ``delay`` seconds (a slow
    switch); yields its port."""
    loop = asyncio.get_running_loop()
    upstream: dict[tuple[str, int], asyncio.DatagramTransport] = {}

    class Back(asyncio.DatagramProtocol):
        def __init__(self, client: tuple[str, int]) -> None:
            self.client = client

        def datagram_received(self, data: bytes, _addr: tuple[str, int]) -> None:
            front.sendto(data, self.client)

    async def forward(data: bytes, client: tuple[str, int]) -> None:
        await asyncio.sleep(delay)
        if client not in upstream:
            upstream[client], _ = await loop.create_datagram_endpoint(
                lambda: Back(client), remote_addr=target
            )
        upstream[client].sendto(data)

    tasks: set[asyncio.Task[None]] = set()

    class Front(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
            task = loop.create_task(forward(data, client))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
    try:
        yield front.get_extra_info("sockname")[1]
    finally:
        for task in tasks:
            task.cancel()
        for t in (front, *upstream.values()):
            t.close()


async def test_a_slow_switch_is_unreachable_within_the_call_bound(
    registry: PluginRegistry, agent: SnmpAgent, tmp_path: Path
) -> None:
    # timeout=3: the driver answers within 2.4 s (its margin below the fencer's bound).
    # Each request is answered in 1.6 s, within that bound, but resolving the port's
    # name and the SET take 3.2 s together: the driver must give up on the call at
    # 2.4 s and say why, not overrun into the fencer's bare 'timeout'.
    async with _delay_proxy((agent.host, agent.port), 1.6) as port:
        line = device_line(agent, ipport=str(port), snmp_retries="0")
        f = make_fencer(registry, line + "connect sw node=n1 plug=Gi1/0/1\n", tmp_path)
        res = await f.fence("n1")
    assert not res.ok and res.error_kind == "unreachable", res.message
    assert "within 2.4s to " in res.message  # the SET; the walk itself on a starved machine
