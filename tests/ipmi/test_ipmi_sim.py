"""The ipmi_sim peer runner itself: life cycle, isolation, stuck mode, helpers."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from hafence_ipmi.driver import IpmiDriver
from hafence_ipmi.session import SessionPool

from hafence.fence import parse_fence_config
from hafence.fence.driver import PowerState
from hafence.simdevices.ipmi_sim import IpmiSim, IpmiSimError, available, rmcp_ping

pytestmark = pytest.mark.skipif(not available(), reason="OpenIPMI ipmi_sim not installed")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_stop_cleans_up() -> None:
    sim = IpmiSim(password="pw-1")
    with pytest.raises(RuntimeError):
        with sim:
            pid, workdir = sim.pid, sim.workdir
            assert sim.running and rmcp_ping(sim.host, sim.port)
            assert stat.S_IMODE((workdir / "lan.conf").stat().st_mode) == 0o600
            assert "pw-1" not in repr(sim)
            raise RuntimeError("a failing test body still stops the BMC")
    assert pid is not None and gone(pid) and not workdir.exists()
    assert not rmcp_ping(sim.host, sim.port)
    sim.stop()  # twice is fine


def test_a_shared_port_is_refused(tmp_path: Path) -> None:
    with IpmiSim(workdir=tmp_path / "a") as first:
        second = IpmiSim(workdir=tmp_path / "b", port=first.port, startup_timeout=3)
        with pytest.raises(IpmiSimError, match="shared"):
            second.start()
        assert not second.running


def test_ipmitool_sees_the_power_file(tmp_path: Path) -> None:
    with IpmiSim(workdir=tmp_path, power_on=False) as sim:
        out = subprocess.run(
            [*sim.ipmitool_args(), "chassis", "power", "status"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.stdout.strip() == "Chassis Power is off"
        sim.set_power(True)
        subprocess.run([*sim.ipmitool_args(), "chassis", "power", "off"], timeout=30, check=True)
        assert sim.power == "off" and sim.power_calls() == ["set power 0"]


async def test_stuck_mode_and_heal(tmp_path: Path) -> None:
    with IpmiSim(workdir=tmp_path, stuck=True) as sim:
        drv = IpmiDriver(sim.driver_options(), pool=SessionPool())
        await drv.off()
        assert sim.stuck and sim.power == "on" and await drv.status() == PowerState.ON
        sim.set_stuck(False)
        await drv.off()
        assert sim.power == "off" and sim.power_calls() == ["set power 0", "set power 0"]


def test_restart_keeps_port_and_power(tmp_path: Path) -> None:
    with IpmiSim(workdir=tmp_path) as sim:
        port, pid = sim.port, sim.pid
        sim.set_power(False)
        sim.restart()
        assert sim.port == port and sim.pid != pid and gone(pid) and sim.power == "off"
        assert rmcp_ping(sim.host, sim.port)


def test_fence_cfg_args_round_trip(tmp_path: Path) -> None:
    sim = IpmiSim(workdir=tmp_path, password="it's a pw; $x `y`")
    cfg = parse_fence_config(f"device b ipmi {sim.fence_cfg_args()}\nconnect b node=n\n")
    (level,) = cfg.chain("n")
    opts = level.devices[0].options()
    assert opts["password"] == sim.password and opts["ipport"] == str(sim.port)
    agent = parse_fence_config(f"device f fence_ipmilan {sim.agent_args()}\nconnect f node=n\n")
    assert agent.chain("n")[0].devices[0].options()["cipher"] == "3"
