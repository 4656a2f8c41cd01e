"""Fencing before recovery, through the simulator's fence devices and watchdogs."""

from __future__ import annotations

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
    assert dev.attempts == 3 and dev.last_ok is not None
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
