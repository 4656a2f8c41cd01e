"""One service's trouble never stalls the others: idempotent moves, isolated errors.

The master recovers a fenced node's service by moving its config. That config may
already name another node: the master died after moving it but before writing its
status, or the fenced node's LRM moved it for a relocate just before it died. The move is
idempotent, a config at a third node is where the service belongs, and any other error of
one service is logged once and skipped, never stopping the round or the status write.
"""

from __future__ import annotations

from typing import Any

import pytest

from hafence.ha.manager import Manager
from hafence.sim.hardware import Hardware
from hafence.sim.safety import SafetyChecker

NODES = ("node1", "node2", "node3")


def _cluster(config_node: str, **extra: Any) -> Hardware:
    """node1 died while vm:100 and vm:101 ran there; vm:100's config names ``config_node``."""
    return Hardware(
        status={n: {"power": "off", "network": "off", "shutdown": None} for n in NODES},
        service_config={
            "vm:100": {"node": config_node, "state": "started"},
            "vm:101": {"node": "node1", "state": "started"},
        },
        manager_status={
            "master_node": "node1",
            "node_status": {"node1": "fence", "node2": "online", "node3": "online"},
            "service_status": {
                "vm:100": {"state": "fence", "node": "node1", "uid": "u100"},
                "vm:101": {"state": "fence", "node": "node1", "uid": "u101"},
            },
        },
        cmdlist=[["power node2 on", "power node3 on"]],
        **extra,
    )


def _where(hw: Hardware, sid: str) -> list[str]:
    return [n for n, run in hw.running.items() if sid in run]


@pytest.mark.parametrize("config_node", ["node2", "node3"])
def test_recovery_when_the_config_already_moved(config_node: str) -> None:
    hw = _cluster(config_node)
    checker = SafetyChecker(hw)
    hw.run()
    assert checker.violations == []
    log = hw.log_text()
    assert "got unexpected error" not in log
    assert _where(hw, "vm:100") == [config_node]  # where its config (and maybe it) already is
    assert hw.service_config["vm:100"]["node"] == config_node
    assert _where(hw, "vm:101") in (["node2"], ["node3"])  # the other one recovers too
    ss = hw.manager_status["service_status"]
    assert ss["vm:100"]["state"] == ss["vm:101"]["state"] == "started"


def test_one_services_error_is_logged_once_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Manager._next_request_start

    def broken(self: Manager, sid: str, *a: Any) -> None:
        if sid == "vm:100":
            raise KeyError("something this service's data lacks")
        real(self, sid, *a)

    monkeypatch.setitem(Manager._HANDLERS, "request_start", broken)
    hw = Hardware(
        status={n: {"power": "off", "network": "off", "shutdown": None} for n in NODES},
        service_config={f"vm:{i}": {"node": "node2", "state": "started"} for i in (100, 101)},
        cmdlist=[[f"power {n} on" for n in NODES]],
    )
    hw.run()
    log = hw.log_text()
    assert log.count("service 'vm:100': error in state 'request_start'") == 1, log
    assert "vm:101" in hw.running["node2"] and "vm:100" not in hw.running["node2"]
    ss = hw.manager_status["service_status"]
    assert ss["vm:101"]["state"] == "started" and ss["vm:100"]["state"] == "request_start"


def test_a_master_whose_store_fails_keeps_its_lock_and_changes_nothing() -> None:
    """As Proxmox's CRM with pmxcfs down: it renews its lock (and feeds its watchdog),
    logs the failure every round, and the cluster goes on once the store is back."""
    hw = Hardware(
        status={n: {"power": "off", "network": "off", "shutdown": None} for n in NODES},
        service_config={"vm:100": {"node": "node3", "state": "started"}},
        cmdlist=[[f"power {n} on" for n in NODES], ["cfs node1 rw fail"],
                 ["service vm:100 stopped"], ["cfs node1 rw work"]],
    )  # fmt: skip
    checker = SafetyChecker(hw)
    hw.run()
    log = hw.log_text()
    assert log.count("node1/crm: could not read manager status: cfs connection refused") >= 9
    assert log.count("node1/crm: got unexpected error - cfs connection refused") >= 9
    assert "node1/lrm: unable to write lrm status file - cfs connection refused" in log
    assert "status change master =>" not in log and "watchdog:" not in log
    assert hw.manager_status["master_node"] == "node1"
    # the stop asked for while the store failed happens once it works again
    lines = log.splitlines()
    back = next(i for i, ln in enumerate(lines) if "execute cfs node1 rw work" in ln)
    assert any("'vm:100': state changed from 'started' to 'request_stop'" in ln
               for ln in lines[back:])  # fmt: skip
    assert "vm:100" not in hw.running["node3"]
    assert checker.violations == []
