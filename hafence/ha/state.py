"""Data shapes shared by the CRM, the LRM, the store, the CLI and the simulator.

Everything here is plain JSON-able dicts (as Proxmox keeps them in ``/etc/pve/ha``), so the
store can persist them unchanged. The TypedDicts document the keys; code uses plain dicts.

Service config (from ``resources.cfg`` / a scenario's ``service_config``)::

    {sid: {"node": str, "state": "started|stopped|disabled|ignored", "group": str|None,
           "max_restart": int, "max_relocate": int, "failback": bool, "comment": str|None}}

Groups (``groups.cfg``)::

    {name: {"nodes": {node: priority}, "restricted": bool, "nofailback": bool}}

Manager status (written by the master CRM, read by every LRM and ``ha-manager status``)::

    {"master_node": str, "timestamp": int,
     "node_status": {node: "online|unknown|fence|maintenance|gone"},
     "service_status": {sid: {"state": SERVICE_STATE, "node": str, "uid": str,
                              "target": str,            # migrate/relocate destination
                              "failed_nodes": [str],    # nodes tried by relocate policy
                              "maintenance_node": str,  # where to move back after maintenance
                              "running": 1, ...}},
     "relocate_trial": {sid: int}}                      # unused by hafence, kept if present

LRM status (one per node, written by that node's LRM)::

    {"state": LRM_STATE, "mode": LRM_MODE, "timestamp": int,
     "results": {uid: {"sid": str, "exit_code": int, "state": str}}}

CRM commands (queued by ``ha-manager crm-command`` / ``migrate`` / ``relocate``), one text
line each, see :func:`parse_crm_command`::

    migrate vm:100 node2
    relocate vm:100 node2
    stop vm:100 0
    enable-node-maintenance node1
    disable-node-maintenance node1
    disarm-ha freeze|ignore      # HA-stack maintenance: LRMs and CRM drop their watchdogs
    arm-ha
    fence-ack node1 root@node2 1700000000   # an admin confirms node1 is off (who, when)
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, NotRequired, TypedDict

# Service states of the CRM's service_status.
SERVICE_STATES = (
    "request_start",  # Proxmox 8 name of "queued"
    "queued",
    "started",
    "starting",
    "request_stop",
    "stopping",
    "stopped",
    "fence",
    "recovery",
    "freeze",
    "migrate",
    "relocate",
    "request_start_balance",  # rebalance on start: moved before its first start
    "error",
    "disabled",
    "ignored",
)
NODE_STATES = ("online", "unknown", "fence", "maintenance", "gone")
CRM_STATES = ("startup", "wait_for_quorum", "master", "slave", "lost_manager_lock")
LRM_STATES = ("startup", "wait_for_agent_lock", "active", "lost_agent_lock", "maintenance")
LRM_MODES = ("active", "restart", "shutdown", "maintenance", "disarm")

# Exit codes of a resource command as the LRM reports them (Proxmox's values).
SUCCESS = 0  # done as asked
ERROR = 1  # failed
ETRY_AGAIN = 2  # failed, the LRM tries again (restart policy)
EWRONG_NODE = 3  # the service's config names another node
EUNKNOWN_SERVICE_TYPE = 4  # no resource type for the SID's prefix
EUNKNOWN_COMMAND = 5
EINVALID_PARAMETER = 6  # e.g. a move without a target
EUNKNOWN_SERVICE = 7  # no config for the service
IGNORED = 8  # not done for a good reason (a balanced start of a running service)

MANAGER_LOCK = "ha_manager_lock"


def agent_lock_name(node: str) -> str:
    """The per-node agent lock the LRM holds while active (``ha_agent_node1_lock``)."""
    return f"ha_agent_{node}_lock"


class ServiceConf(TypedDict):
    node: str
    state: str
    group: str | None
    max_restart: int
    max_relocate: int
    failback: NotRequired[bool]
    comment: NotRequired[str | None]


class GroupConf(TypedDict):
    nodes: dict[str, int]
    restricted: bool
    nofailback: bool


class ServiceStatus(TypedDict):
    state: str
    node: str
    uid: str
    target: NotRequired[str]
    failed_nodes: NotRequired[list[str]]
    maintenance_node: NotRequired[str]
    running: NotRequired[int]


class ManagerStatus(TypedDict, total=False):
    master_node: str
    timestamp: int
    node_status: dict[str, str]
    service_status: dict[str, ServiceStatus]
    relocate_trial: dict[str, Any]


class LrmResult(TypedDict):
    sid: str
    exit_code: int
    state: str


class LrmStatus(TypedDict, total=False):
    state: str
    mode: str
    timestamp: int
    results: dict[str, LrmResult]


def empty_manager_status() -> dict[str, Any]:
    return {"node_status": {}, "service_status": {}}


def normalize_manager_status(data: dict[str, Any] | None) -> dict[str, Any]:
    """Fill the keys a reader may rely on; keep anything else untouched."""
    ms = dict(data or {})
    ms.setdefault("node_status", {})
    ms.setdefault("service_status", {})
    return ms


def new_uid(*parts: Any) -> str:
    """A short deterministic id for a service command (Proxmox uses an md5 in base64).

    Callers pass something that changes with every new command (sid, state, time, counter)
    so an LRM result can never be mistaken for the result of a later command.
    """
    digest = hashlib.md5(repr(parts).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode().rstrip("=")


class CrmCommandError(ValueError):
    pass


CRM_COMMANDS = {
    "migrate": 2,
    "relocate": 2,
    "stop": 2,
    "enable-node-maintenance": 1,
    "disable-node-maintenance": 1,
    "disarm-ha": 1,  # freeze|ignore: release every watchdog for HA-stack maintenance
    "arm-ha": 0,
    "fence-ack": 3,  # NODE BY AT: confirmed off by hand (Pacemaker's stonith_admin --confirm)
}
DISARM_MODES = ("freeze", "ignore")


def parse_crm_command(line: str) -> tuple[str, list[str]]:
    """``"migrate vm:100 node2"`` -> ``("migrate", ["vm:100", "node2"])``; raises on junk."""
    words = line.split()
    if not words:
        raise CrmCommandError("empty command")
    cmd, args = words[0], words[1:]
    want = CRM_COMMANDS.get(cmd)
    if want is None:
        raise CrmCommandError(f"unknown command '{cmd}'")
    if len(args) != want:
        raise CrmCommandError(f"'{cmd}' takes {want} argument(s), got {len(args)}")
    if cmd == "disarm-ha" and args[0] not in DISARM_MODES:
        raise CrmCommandError(f"invalid disarm mode '{args[0]}' (freeze or ignore)")
    if cmd == "stop":
        try:
            if int(args[1]) < 0:
                raise ValueError
        except ValueError:
            raise CrmCommandError(f"invalid timeout '{args[1]}'") from None
    if cmd == "fence-ack" and not args[2].isdigit():
        raise CrmCommandError(f"invalid time '{args[2]}'")
    return cmd, args


def format_crm_command(cmd: str, *args: Any) -> str:
    line = " ".join([cmd, *(str(a) for a in args)])
    parse_crm_command(line)
    return line
