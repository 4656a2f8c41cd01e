"""The manager and LRM status checks: every damage is one error naming file and field."""

from __future__ import annotations

from typing import Any

import pytest

from hafence.ha.statefile import StateFileError, check_lrm_status, check_manager_status

GOOD_MS = {
    "master_node": "node1",
    "timestamp": 1700000000,
    "node_status": {"node1": "online", "node2": "fence"},
    "service_status": {
        "vm:100": {"state": "migrate", "node": "node1", "uid": "u1", "target": "node2",
                   "failed_nodes": ["node3"], "running": 1, "cmd": ["stop", 0]},
    },
    "disarm": {"mode": "freeze", "state": "disarming"},
}  # fmt: skip


def test_good_statuses_pass() -> None:
    assert check_manager_status(GOOD_MS, "ms") == GOOD_MS
    assert check_manager_status({}, "ms") == {"node_status": {}, "service_status": {}}
    lrm = {"state": "active", "mode": "disarm", "timestamp": 1.5,
           "results": {"u1": {"sid": "vm:100", "state": "started", "exit_code": 0}}}  # fmt: skip
    assert check_lrm_status(lrm, "lrm") == lrm


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"node_status": 5}, "node_status", "expected an object, got a number"),
        ({"node_status": {"node1": "up"}}, "node_status.node1", "unknown value 'up'"),
        ({"service_status": []}, "service_status", "expected an object, got a list"),
        ({"service_status": {"vm:1": "x"}}, "service_status.vm:1", "expected an object"),
        ({"service_status": {"vm:1": {"node": "n"}}}, "service_status.vm:1.state",
         "expected a string"),
        ({"service_status": {"vm:1": {"state": "bogus", "node": "n"}}},
         "service_status.vm:1.state", "unknown value 'bogus'"),
        ({"service_status": {"vm:1": {"state": "started", "node": "n", "uid": 7}}},
         "service_status.vm:1.uid", "expected a string"),
        ({"master_node": ["x"]}, "master_node", "expected a string"),
        ({"disarm": {"mode": "later", "state": "disarming"}}, "disarm.mode", "unknown value"),
    ],
)  # fmt: skip
def test_damaged_manager_status_names_the_field(change: dict, field: str, message: str) -> None:
    with pytest.raises(StateFileError) as ei:
        check_manager_status({**GOOD_MS, **change}, "/etc/hafence/ha/manager_status")
    assert ei.value.field == field
    assert str(ei.value).startswith(f"/etc/hafence/ha/manager_status: {field}: {message}")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], ""),
        ({"mode": "sleeping"}, "mode"),
        ({"results": {"u1": {"sid": "vm:1", "state": "started", "exit_code": "0"}}},
         "results.u1.exit_code"),
        ({"results": {"u1": {"state": "started", "exit_code": 0}}}, "results.u1.sid"),
    ],
)  # fmt: skip
def test_damaged_lrm_status_names_the_field(data: Any, field: str) -> None:
    with pytest.raises(StateFileError) as ei:
        check_lrm_status(data, "lrm_status/node1")
    assert ei.value.field == field and str(ei.value).startswith("lrm_status/node1: ")
