"""The simulator's Env: one per node and daemon, backed by :class:`~hafence.sim.hardware.Hardware`.

Each Env keeps its own clock, as a real node does: an iteration starts at the cluster's
current time and ends one second later. Shared state (locks, manager and LRM status, the
service config) lives in the hardware object and is copied on every read and write, as if
it went through a file.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from hafence.ha.env import Env
from hafence.ha.resources import ResourceType
from hafence.sim.resources import SIM_TYPES

if TYPE_CHECKING:
    from hafence.sim.hardware import Hardware

LOCK_TIMEOUT = 120  # seconds a lock lives without renewal


class SimEnv(Env):
    def __init__(self, hw: Hardware, nodename: str, role: str) -> None:
        self.hw = hw
        self.nodename = nodename
        self.role = role
        self.cur_time = 0.0
        self._types: dict[str, ResourceType] | None = None

    # -- clock and log -------------------------------------------------------------------
    def loop_start(self, now: float) -> None:
        self.cur_time = max(self.cur_time, now)

    def loop_end(self) -> None:
        self.cur_time += self.hw.iteration_seconds

    def get_time(self) -> float:
        return self.cur_time

    def log(self, level: str, msg: str) -> None:
        self.hw.log(level, msg, f"{self.nodename}/{self.role}", self.cur_time)

    # -- membership and locks ------------------------------------------------------------
    def quorate(self) -> bool:
        info, quorate = self.hw.node_info()
        return bool(info[self.nodename]["online"] and quorate)

    def get_node_info(self) -> dict[str, dict[str, Any]]:
        return self.hw.node_info()[0]

    def _lock(self, name: str, unlock: bool = False) -> bool:
        if not self.quorate() or not self.hw.cfs_rw(self.nodename):
            return False
        locks = self.hw.cluster_locks
        now = self.cur_time
        held = locks.get(name)
        if unlock:
            if held and (now - held["time"] > LOCK_TIMEOUT or held["node"] == self.nodename):
                del locks[name]
                return True
            return False
        if held is None:
            locks[name] = {"node": self.nodename, "time": now}
        elif now - held["time"] <= LOCK_TIMEOUT:
            if held["node"] != self.nodename:
                return False
            held["time"] = now
            return True
        else:
            locks[name] = {"node": self.nodename, "time": now}
        self.log("info", f"got lock '{name}'")
        return True

    def get_ha_manager_lock(self) -> bool:
        return self._lock("ha_manager_lock")

    def release_ha_manager_lock(self) -> None:
        self._lock("ha_manager_lock", unlock=True)

    def get_ha_agent_lock(self, node: str | None = None) -> bool:
        return self._lock(f"ha_agent_{node or self.nodename}_lock")

    def release_ha_agent_lock(self) -> None:
        self._lock(f"ha_agent_{self.nodename}_lock", unlock=True)

    # -- shared state --------------------------------------------------------------------
    def cluster_state_update(self) -> bool:
        return self.hw.cfs_update_ok(self.nodename)

    def read_manager_status(self) -> dict[str, Any]:
        # a failed cfs update leaves the last state readable (stale, the step skips)
        return _copy_status(self.hw.manager_status)

    def write_manager_status(self, status: dict[str, Any]) -> None:
        self.hw.manager_status = _copy_status(status)

    def read_lrm_status(self, node: str | None = None) -> dict[str, Any]:
        lrm = self.hw.lrm_status.get(node or self.nodename, {})
        results = {uid: dict(res) for uid, res in (lrm.get("results") or {}).items()}
        return {**lrm, "results": results} if "results" in lrm else dict(lrm)

    def write_lrm_status(self, status: dict[str, Any]) -> None:
        if not self.hw.cfs_rw(self.nodename):
            raise OSError("cfs connection refused - not mounted?")
        self.hw.lrm_status[self.nodename] = copy.deepcopy(status)

    def read_service_config(self) -> dict[str, dict[str, Any]]:
        return {sid: dict(cd) for sid, cd in self.hw.service_config.items()}  # flat values

    def read_groups(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.hw.groups)

    def read_rules(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.hw.rules)

    def crs_options(self) -> dict[str, Any]:
        return dict(self.hw.datacenter.get("crs") or {})

    def get_static_node_stats(self) -> dict[str, dict[str, Any]]:
        return {
            n: {k: s[k] for k in ("maxcpu", "maxmem") if k in s} for n, s in self.hw.status.items()
        }

    def get_static_service_stats(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.hw.service_stats)

    def get_dynamic_service_stats(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.hw.dynamic_stats)

    def ha_options(self) -> dict[str, Any]:
        return dict(self.hw.datacenter.get("ha") or {})

    def crm_commands_pending(self) -> bool:
        return bool(self.hw.crm_commands)

    def take_crm_commands(self) -> list[str]:
        cmds, self.hw.crm_commands = self.hw.crm_commands, []
        return cmds

    def change_service_location(self, sid: str, current_node: str, new_node: str) -> None:
        self.hw.change_service_location(sid, current_node, new_node)

    def steal_service(self, sid: str, fenced_node: str, new_node: str) -> None:
        for cb in self.hw.on_recover:  # the safety checker judges every recovery
            cb(sid, fenced_node, new_node)
        super().steal_service(sid, fenced_node, new_node)

    def update_service_config(self, sid: str, changes: dict[str, Any]) -> None:
        if sid in self.hw.service_config:
            self.hw.service_config[sid].update(changes)

    # -- fencing -------------------------------------------------------------------------
    # the real fence runner and fencer, on the hardware's virtual time (hafence.sim.power)
    def fence_start(self, node: str) -> str:
        return self.hw.fencing.start(self, node)

    def fence_poll(self, node: str) -> str:
        return self.hw.fencing.poll(self, node)

    def fence_reset(self, node: str) -> None:
        self.hw.fencing.reset(self, node)

    # -- watchdog ------------------------------------------------------------------------
    def watchdog_open(self) -> Any:
        return self.hw.watchdog_open(self.nodename)

    def watchdog_update(self, handle: Any) -> None:
        self.hw.watchdog_update(handle)

    def watchdog_close(self, handle: Any) -> None:
        self.hw.watchdog_close(handle)

    # -- LRM side ------------------------------------------------------------------------
    def is_node_shutdown(self) -> tuple[bool, bool]:
        what = self.hw.status[self.nodename].get("shutdown")
        return what in ("shutdown", "reboot"), what == "reboot"

    def resource_types(self) -> dict[str, ResourceType]:
        if self._types is None:
            self._types = {t.name: t(self.nodename, self) for t in SIM_TYPES}
        return self._types


def _copy_status(ms: dict[str, Any]) -> dict[str, Any]:
    """A copy as if through a file, fast for big clusters: per-service entries are
    copied one level deep (their only nested values are lists: failed_nodes, cmd)."""
    out = {k: copy.deepcopy(v) for k, v in ms.items() if k != "service_status"}
    if "service_status" in ms:
        out["service_status"] = {
            sid: {k: list(v) if isinstance(v, list) else v for k, v in sd.items()}
            for sid, sd in ms["service_status"].items()
        }
    return out
