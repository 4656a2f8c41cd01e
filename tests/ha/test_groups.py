"""HA groups end to end on the simulator: restricted, priorities, nofailback."""

from __future__ import annotations

from hafence.sim.hardware import Hardware
from hafence.sim.safety import SafetyChecker

NODES = ("node1", "node2", "node3")


def run(group: dict, cmds: list[list[str]]) -> Hardware:
    hw = Hardware(
        status={n: {"power": "off", "network": "off", "shutdown": None} for n in NODES},
        service_config={"vm:100": {"node": "node1", "state": "started", "group": "g"}},
        groups={"g": group},
        cmdlist=[[f"power {n} on" for n in NODES], *cmds],
    )
    checker = SafetyChecker(hw)
    hw.run()
    assert checker.violations == []
    return hw


def where(hw: Hardware) -> str:
    return hw.service_config["vm:100"]["node"]


def test_priority_decides_recovery_target_and_failback() -> None:
    g = {"nodes": {"node1": 3, "node3": 2, "node2": 1}, "restricted": False, "nofailback": False}
    hw = run(g, [["network node1 off"], ["delay 300"], ["power node1 on"]])
    text = hw.log_text()
    assert "recover service 'vm:100' from fenced node 'node1' to node 'node3'" in text
    assert "migrate service 'vm:100' to node 'node1' (running)" in text  # failback
    assert where(hw) == "node1" and "vm:100" in hw.running["node1"]


def test_nofailback_keeps_the_service_where_it_was_recovered() -> None:
    g = {"nodes": {"node1": 3, "node3": 2}, "restricted": False, "nofailback": True}
    hw = run(g, [["network node1 off"], ["delay 300"], ["power node1 on"]])
    assert where(hw) == "node3" and "vm:100" in hw.running["node3"]


def test_restricted_group_waits_for_its_own_nodes() -> None:
    g = {"nodes": {"node1": 0}, "restricted": True, "nofailback": False}
    hw = run(g, [["network node1 off"], ["delay 300"], ["power node1 on"]])
    text = hw.log_text()
    assert "no recovery node found" in text
    assert "recover service 'vm:100' to previous failed and fenced node 'node1' again" in text
    assert where(hw) == "node1"
    assert not hw.running["node2"] and not hw.running["node3"]
