"""Checks of the cluster state files the HA core reads: ``manager_status``, ``lrm_status``.

Every reader validates what it reads, so a damaged or hand-edited file is one clear error
naming the file and the field (``manager_status: node_status: expected an object, got a
list``), never a crash deep inside the CRM or the LRM. What a reader does about it is its
own choice (hafence.ha.realenv keeps the last good version, the master rebuilds the
manager status from the service config and the LRM statuses).
"""

from __future__ import annotations

from typing import Any

from hafence.errors import HafenceError
from hafence.ha import state as st

LRM_MODES = (*st.LRM_MODES, "unknown")
DISARM_STATES = ("disarming", "disarmed")


class StateFileError(HafenceError):
    """A state file does not have the shape the HA core relies on."""

    def __init__(self, where: str, field: str, message: str) -> None:
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")
        self.where, self.field = where, field


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, message: str) -> None:
        raise StateFileError(self.where, field, message)

    def obj(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, f"expected an object, got {_kind(value)}")
        return value

    def text(self, value: Any, field: str, choices: tuple[str, ...] = ()) -> None:
        if not isinstance(value, str):
            self.fail(field, f"expected a string, got {_kind(value)}")
        if choices and value not in choices:
            self.fail(field, f"unknown value '{value}' (expected one of {', '.join(choices)})")

    def number(self, value: Any, field: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field, f"expected a number, got {_kind(value)}")

    def optional(self, d: dict[str, Any], key: str, field: str, check: Any, *a: Any) -> None:
        if d.get(key) is not None:
            check(d[key], f"{field}.{key}" if field else key, *a)

    def texts(self, value: Any, field: str) -> None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(field, f"expected a list of strings, got {_kind(value)}")


def check_manager_status(data: Any, where: str) -> dict[str, Any]:
    """The manager status shape (hafence.ha.state); returns it with the keys filled."""
    c = _Checker(where)
    ms = c.obj(data, "")
    for node, state in c.obj(ms.get("node_status", {}), "node_status").items():
        c.text(state, f"node_status.{node}", st.NODE_STATES)
    for sid, sd in c.obj(ms.get("service_status", {}), "service_status").items():
        f = f"service_status.{sid}"
        c.obj(sd, f)
        c.text(sd.get("state"), f"{f}.state", st.SERVICE_STATES)
        c.text(sd.get("node"), f"{f}.node")
        c.optional(sd, "uid", f, c.text)
        c.optional(sd, "target", f, c.text)
        c.optional(sd, "maintenance_node", f, c.text)
        c.optional(sd, "failed_nodes", f, c.texts)
        c.optional(sd, "running", f, c.number)
        if sd.get("cmd") is not None and not isinstance(sd["cmd"], list):
            c.fail(f"{f}.cmd", f"expected a list, got {_kind(sd['cmd'])}")
    c.optional(ms, "master_node", "", c.text)
    c.optional(ms, "timestamp", "", c.number)
    for key in ("node_request", "fence_ack", "fencing"):
        for node, req in c.obj(ms.get(key) or {}, key).items():
            c.obj(req, f"{key}.{node}")
    if ms.get("disarm") is not None:
        disarm = c.obj(ms["disarm"], "disarm")
        c.text(disarm.get("mode"), "disarm.mode", st.DISARM_MODES)
        c.text(disarm.get("state"), "disarm.state", DISARM_STATES)
    return st.normalize_manager_status(ms)


def check_lrm_status(data: Any, where: str) -> dict[str, Any]:
    """One LRM status (hafence.ha.state); returns it unchanged."""
    c = _Checker(where)
    lrm = c.obj(data, "")
    c.optional(lrm, "state", "", c.text, st.LRM_STATES)
    c.optional(lrm, "mode", "", c.text, LRM_MODES)
    c.optional(lrm, "timestamp", "", c.number)
    results = c.obj(lrm.get("results") or {}, "results")
    # the common case first, as one quick test per result (10,000 of them a round): the
    # checks below name the field only once one fails
    for res in results.values():
        if (
            type(res) is not dict
            or type(res.get("sid")) is not str
            or type(res.get("state")) is not str
            or type(res.get("exit_code")) is not int
        ):
            break
    else:
        return lrm
    for uid, res in results.items():
        f = f"results.{uid}"
        c.obj(res, f)
        c.text(res.get("sid"), f"{f}.sid")
        c.text(res.get("state"), f"{f}.state")
        if isinstance(res.get("exit_code"), bool) or not isinstance(res.get("exit_code"), int):
            c.fail(f"{f}.exit_code", f"expected an integer, got {_kind(res.get('exit_code'))}")
    return lrm
