"""Fencing before recovery, through the simulator's fence devices and watchdogs.

The simulated cluster fences with the real fence runner and fencer (hafence.sim.power):
these tests drive whole clusters through chains, faults and retries on virtual time.
"""

from __future__ import annotations

import pytest

from hafence.errors import ConfigError
from hafence.sim.hardware import Hardware
from hafence.sim.safety import SafetyChecker


def _cluster(cmdlist: list[list[str]]) -> Hardware:
    nodes = ("node1", "node2", "node3")
    return Hardware(
        status={n: {"power": "off", "network": "off", "shutdown": None} for n in nodes},
        service_config={"vm:100": {"node": "node1", "state": "started"}},
        cmdlist=[[f"power {n} on" for n in nodes], *cmdlist],
    )


def _lines(hw: Hardware) -> list[str]:
    return [f"{line.tag}: {line.msg}" for line in hw.lines]


def test_failed_hardware_fence_keeps_service_in_fence_and_retries() -> None:
    hw = _cluster([["network node1 off"], ["delay 600"]])
    hw.add_fence_device("node1", fails=-1)
    checker = SafetyChecker(hw)
    hw.run()
    lines = _lines(hw)
    retries = [x for x in lines if "hardware fence of node 'node1' failed, retrying" in x]
    assert len(retries) >= 10, "a failing fence must be retried every round"
    assert not any("recover service 'vm:100'" in x for x in lines)
    assert hw.manager_status["service_status"]["vm:100"]["state"] == "fence"
    assert hw.service_config["vm:100"]["node"] == "node1"
    assert checker.violations == []


def test_flaky_fence_device_recovers_after_confirmed_off() -> None:
    hw = _cluster([["network node1 off"]])
    dev = hw.add_fence_device("node1", fails=2)
    checker = SafetyChecker(hw)
    hw.run()
    lines = _lines(hw)
    fence_off = lines.index("fence: execute power node1 off")
    recovered = next(i for i, x in enumerate(lines) if "recover service 'vm:100'" in x)
    ack = next(i for i, x in enumerate(lines) if "got agent lock for node 'node1'" in x)
    assert fence_off < ack < recovered
    assert dev.off_requests == 3 and len(dev.cuts) == 1
    assert hw.service_config["vm:100"]["node"] != "node1"
    assert any("vm:100" in run for run in hw.running.values())
    assert checker.violations == []


def test_without_fence_device_the_watchdog_fires_before_the_lock_expires() -> None:
    hw = _cluster([["network node1 off"]])
    checker = SafetyChecker(hw)
    hw.run()
    lines = _lines(hw)
    reset = lines.index("hardware: server 'node1' stopped by poweroff (watchdog)")
    ack = next(i for i, x in enumerate(lines) if "got agent lock for node 'node1'" in x)
    assert reset < ack
    assert checker.violations == []


def test_node_being_fenced_never_takes_its_lock_back() -> None:
    # node1 comes back (power cycled by an admin) while the master still fences it: its LRM
    # must not become active before the master has acknowledged the fence
    hw = _cluster([["network node1 off"], ["power node1 off", "power node1 on"]])
    checker = SafetyChecker(hw)
    hw.run()
    assert checker.violations == []
    state = hw.manager_status["service_status"]["vm:100"]
    assert state["state"] == "started"


def test_fence_ack_by_hand_ends_a_fence_that_can_never_finish() -> None:
    # node1 loses power and its BMC with it: the fence device never answers again
    hw = _cluster([["power node1 off"], ["delay 300"], ["crm node1 fence-ack"]])
    hw.add_fence_device("node1", fails=-1)
    checker = SafetyChecker(hw)
    hw.run()
    lines = _lines(hw)
    ack = next(i for i, x in enumerate(lines) if "confirmed off by hand by admin" in x)
    assert any("hardware fence of node 'node1' failed" in x for x in lines[:ack])
    recovered = next(i for i, x in enumerate(lines) if "recover service 'vm:100'" in x)
    lock = next(i for i, x in enumerate(lines) if "got agent lock for node 'node1'" in x)
    assert ack < lock < recovered
    assert any("vm:100" in run for run in hw.running.values())
    assert "fence_ack" not in hw.manager_status  # used up
    assert checker.violations == []


def test_fence_ack_is_refused_for_a_node_that_is_up() -> None:
    hw = _cluster([["crm node1 fence-ack"]])
    checker = SafetyChecker(hw)
    hw.run()
    text = hw.log_text()
    assert "fence-ack by admin refused: node 'node1' is online" in text
    assert "confirmed off by hand" not in text and "fence_ack" not in hw.manager_status
    assert "vm:100" in hw.running["node1"] and checker.violations == []


def test_checker_catches_a_false_fence_ack() -> None:
    # the admin acknowledges a node that still runs (cut from the network, not off): the
    # watchdog makes it safe in the end, but the checker must flag the false confirmation
    hw = _cluster([["network node1 off", "crm node1 fence-ack"]])
    hw.add_fence_device("node1", fails=-1)
    checker = SafetyChecker(hw)
    hw.run()
    assert any("without a confirmed hardware fence" in v for v in checker.violations)


# -- chains, sub-devices, faults: the real fencer on the simulator's virtual time ----------

BMC = "device bmc sim_power fault=stuck power_timeout=2 poll_interval=1\n"
PDU = (
    "connect bmc node=node3 plug=node3\n"
    "device pdu:1 sim_power latency=1\n"
    "connect pdu:1 node=node3 plug=node3 supply=psu1\n"
    "device pdu:2 sim_power {pdu2}\n"
    "connect pdu:2 node=node3 plug=node3 supply=psu2\n"
)


def _fenced_cluster(fence_cfg: str, cmdlist: list[list[str]]) -> tuple[Hardware, SafetyChecker]:
    """vm:100 on node3 (node1 is the master), fence.cfg for node3."""
    hw = _cluster(cmdlist)
    hw.service_config["vm:100"]["node"] = "node3"
    hw.fencing.set_config(fence_cfg)
    return hw, SafetyChecker(hw)


def test_a_stuck_bmc_fails_verification_and_the_pdu_level_cuts_both_supplies() -> None:
    # the stuck BMC fails its 2 s of polling and the outlets switch off before the
    # node's watchdog would reset it (6 s after the fence starts)
    hw, checker = _fenced_cluster(BMC + PDU.format(pdu2=""), [["network node3 off"]])
    hw.run()
    devices = hw.fencing.devices
    bmc, psu1, psu2 = (devices[(label, "node3")] for label in ("bmc", "pdu:1", "pdu:2"))
    # the BMC accepted off, but status kept saying on: 2 s of polling, then level 2
    assert bmc.off_requests == 1 and bmc.requests == 4 and not bmc.cuts
    assert psu1.cuts and psu2.cuts  # both outlets switched: only then is the node off
    lines = _lines(hw)
    off = lines.index("fence: execute power node3 off")
    recovered = next(i for i, x in enumerate(lines) if "recover service 'vm:100'" in x)
    assert off < recovered and hw.service_config["vm:100"]["node"] != "node3"
    assert checker.violations == [] and checker.recoveries == 1


def test_a_level_whose_second_outlet_is_stuck_never_counts() -> None:
    # one outlet off, the other stuck: the node keeps power from its second supply (until
    # its watchdog resets it; the stuck outlet still reads on, so nothing confirms)
    pdu = PDU.format(pdu2="fault=stuck power_timeout=5").split("\n", 1)[1]
    hw, checker = _fenced_cluster(pdu, [["network node3 off"], ["delay 300"]])
    hw.run()
    assert hw.fencing.devices[("pdu:1", "node3")].cuts  # switched, to no avail
    assert "fence: execute power node3 off" not in _lines(hw)
    assert hw.manager_status["service_status"]["vm:100"]["state"] == "fence"
    assert checker.violations == [] and checker.recoveries == 0


def test_retries_and_back_off_of_the_fencer_run_on_virtual_time() -> None:
    hw, checker = _fenced_cluster(
        "device bmc sim_power fault=fails fault_count=2\nconnect bmc node=node3 plug=node3\n",
        [["network node3 off"]],
    )
    hw.fencing.retries, hw.fencing.backoff = 2, 4.0  # attempts at t, t+4, t+4+8
    hw.run()
    bmc = hw.fencing.devices[("bmc", "node3")]
    start = next(x.time for x in hw.lines if "start hardware fence of node 'node3'" in x.msg)
    assert bmc.off_requests == 3 and bmc.cuts == [start + 12]
    assert sum("start hardware fence" in x for x in _lines(hw)) == 1  # one runner attempt
    assert checker.violations == []


def test_a_lying_bmc_is_believed_but_the_lock_still_waits_for_the_watchdog() -> None:
    hw, checker = _fenced_cluster(
        "device bmc sim_power fault=lying\nconnect bmc node=node3 plug=node3\n",
        [["network node3 off"]],
    )
    hw.run()
    lines = _lines(hw)
    reset = lines.index("hardware: server 'node3' stopped by poweroff (watchdog)")
    recovered = next(i for i, x in enumerate(lines) if "recover service 'vm:100'" in x)
    assert reset < recovered  # the agent lock outlived the watchdog: safe, if late
    assert not hw.fencing.devices[("bmc", "node3")].cuts
    assert checker.violations == []


def test_a_device_slower_than_its_timeout_fails_and_the_next_level_fences() -> None:
    hw, checker = _fenced_cluster(
        "device slow sim_power latency=30 timeout=5\nconnect slow node=node3 plug=node3\n"
        "device dead sim_power fault=unreachable timeout=3\nconnect dead node=node3 plug=node3\n"
        "device good sim_power\nconnect good node=node3 plug=node3\n",
        [["network node3 off"]],
    )
    hw.run()
    devices = hw.fencing.devices
    assert devices[("slow", "node3")].requests == 1 and not devices[("slow", "node3")].cuts
    assert devices[("dead", "node3")].failed == 1
    good = devices[("good", "node3")]
    start = next(x.time for x in hw.lines if "start hardware fence of node 'node3'" in x.msg)
    assert good.cuts == [start + 5 + 3]  # after the two time-outs, on virtual time
    assert checker.violations == [] and checker.recoveries == 1


def test_a_misconfigured_plug_is_refused_naming_the_line() -> None:
    hw = _cluster([])
    with pytest.raises(ConfigError, match="no simulated node 'node9'") as err:
        hw.fencing.set_config("device bmc sim_power\nconnect bmc node=node1 plug=node9\n")
    assert err.value.line == 2 and err.value.field == "plug"
