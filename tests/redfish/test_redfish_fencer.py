"""The redfish driver through fence.cfg and the real Fencer: verified off (also when the
BMC applies it late), failure kinds, secrets kept out of history and logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.plugins import PluginRegistry
from tests.peers.redfish import RedfishEmulator

from .conftest import PASSWORD, cfg_args, make_fencer

FAST = "timeout=2 power_timeout=2 poll_interval=0.05"


def device_line(bmc: RedfishEmulator, name: str = "bmc", **override: str) -> str:
    opts = {**bmc.driver_options("node1"), **override}
    del opts["system"]  # per node, on the connect line
    return f"device {name} redfish {cfg_args(opts)} {FAST}\n"


def connect(bmc: RedfishEmulator, name: str = "bmc") -> str:
    return "".join(
        f"connect {name} node={n} system={bmc.system_id(n)}\n" for n in ("node1", "node2")
    )


async def test_verified_off_then_on(
    registry: PluginRegistry, bmc: RedfishEmulator, tmp_path: Path
) -> None:
    f = make_fencer(registry, device_line(bmc) + connect(bmc), tmp_path)
    res = await f.fence("node2")
    assert res.ok and res.level == 1 and res.devices == ["bmc"]
    assert bmc.power("node2") == "off" and bmc.power("node1") == "on"
    assert bmc.calls() == ["ForceOff node2"]
    [rec] = f.history.records("node2")
    assert rec.ok and rec.action == "off"
    d = f.build(f.chain("node2")[0].devices[0])
    try:
        on = await f.run_device(d, "on", node="node2")
    finally:
        await d.close()
    assert on.ok and on.state == "on" and bmc.power("node2") == "on"


@pytest.fixture
def slow_bmc() -> Iterator[RedfishEmulator]:
    with RedfishEmulator(systems=("node1", "node2"), power_delay=0.5) as b:
        yield b


async def test_off_applied_late_is_waited_for(
    registry: PluginRegistry, slow_bmc: RedfishEmulator, tmp_path: Path
) -> None:
    # Real BMCs accept the reset and change PowerState later: only a status read
    # showing Off counts, which the fencer polls for.
    res = await make_fencer(registry, device_line(slow_bmc) + connect(slow_bmc), tmp_path).fence(
        "node1"
    )
    assert res.ok and slow_bmc.power("node1") == "off"


async def test_reboot_native_with_method_cycle(
    registry: PluginRegistry, bmc: RedfishEmulator, tmp_path: Path
) -> None:
    text = device_line(bmc, method="cycle") + connect(bmc)
    res = await make_fencer(registry, text, tmp_path).fence("node1", "reboot")
    assert res.ok and bmc.calls() == ["ForceRestart node1"]
    bmc.clear_calls()
    res = await make_fencer(registry, device_line(bmc) + connect(bmc), tmp_path).fence(
        "node1", "reboot"
    )
    assert res.ok and bmc.calls() == ["ForceOff node1", "On node1"]


async def test_stuck_system_is_still_on(
    registry: PluginRegistry, bmc: RedfishEmulator, tmp_path: Path
) -> None:
    bmc.set_stuck(True)
    res = await make_fencer(registry, device_line(bmc) + connect(bmc), tmp_path).fence("node1")
    assert not res.ok and res.error_kind == "still_on"
    assert bmc.power("node1") == "on" and "ForceOff node1" in bmc.calls()


async def test_wrong_password_is_auth_failed_and_never_logged(
    registry: PluginRegistry, bmc: RedfishEmulator, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = bmc.wrong_password_options()["password"]
    f = make_fencer(registry, device_line(bmc, password=wrong) + connect(bmc), tmp_path)
    res = await f.fence("node1")
    assert not res.ok and res.error_kind == "auth_failed"
    assert bmc.power("node1") == "on" and bmc.calls() == []
    history = (tmp_path / "history.jsonl").read_text()
    for secret in (wrong, PASSWORD):
        assert secret not in history and secret not in caplog.text
        assert secret not in res.to_json()


async def test_closed_and_silent_ports_are_unreachable(
    registry: PluginRegistry, bmc: RedfishEmulator, closed_port: int, silent_port: int,
    tmp_path: Path,
) -> None:  # fmt: skip
    for port in (closed_port, silent_port):
        text = device_line(bmc, ipport=str(port)) + connect(bmc)
        res = await make_fencer(registry, text, tmp_path).fence("node1")
        # the driver's own bound fired under the fencer's: the kind says why
        assert not res.ok and res.error_kind == "unreachable", res.to_dict()


async def test_dry_run_check_changes_nothing(
    registry: PluginRegistry, bmc: RedfishEmulator, tmp_path: Path
) -> None:
    rep = await make_fencer(registry, device_line(bmc) + connect(bmc), tmp_path).check("node2")
    assert rep.ok and rep.devices[0].state == "on"
    assert bmc.calls() == []


async def test_fencing_leaves_no_session_behind(
    registry: PluginRegistry, fresh_bmc: RedfishEmulator, tmp_path: Path
) -> None:
    bmc = fresh_bmc
    f = make_fencer(registry, device_line(bmc) + connect(bmc), tmp_path)
    assert (await f.fence("node1")).ok
    assert (await f.check("node2")).ok
    assert bmc.sessions_created() > 0 and bmc.sessions() == []
