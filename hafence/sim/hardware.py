"""A whole cluster in one process: power, network, watchdogs, fence devices, services.

:class:`Hardware` runs the real CRM and LRM code (``hafence.ha.crm`` / ``hafence.ha.lrm``)
of every powered node on a virtual clock, following the rhythm of Proxmox's regression
harness so its logs compare line by line:

- a loop visits the nodes in name order; each powered node runs one CRM iteration, then one
  LRM iteration; an iteration starts at the cluster time and ends one second later
  (``iteration_seconds``: less for clusters so big that a loop would outlast a watchdog);
- after each node, every node's watchdogs are checked; one not fed for 60 s powers its
  node off;
- a loop lasts at least 20 s; every 5th loop applies the next entry of the command list
  (``power node1 off``, ``network node2 off``, ``service vm:100 migrate node3`` ...);
- the run ends 500 s after the last command once the list is empty.

Everything the cluster shares (locks, manager/LRM status, service config, CRM commands)
lives here in memory; :class:`~hafence.sim.env.SimEnv` copies it on every access.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hafence.errors import HafenceError
from hafence.ha.crm import CRM
from hafence.ha.env import ServiceLocationConflict
from hafence.ha.lrm import LRM
from hafence.sim.env import SimEnv
from hafence.sim.power import DeviceState, SimFencing

WATCHDOG_TIMEOUT = 60
MAX_SIM_TIME = 100_000


class SimError(HafenceError):
    """A scenario asked for something the simulator cannot do."""


@dataclass
class SimNode:
    name: str
    crm_env: SimEnv
    lrm_env: SimEnv
    crm: CRM | None = None
    lrm: LRM | None = None
    crm_stop: bool = False
    lrm_restart: bool = False


@dataclass
class LogLine:
    level: str
    time: int
    tag: str
    msg: str

    def __str__(self) -> str:
        return f"{self.level[:4]:<5} {self.time:5d} {self.tag:>12}: {self.msg}"


@dataclass
class Hardware:
    status: dict[str, dict[str, Any]]  # node -> {"power", "network", "shutdown"}
    service_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    datacenter: dict[str, Any] = field(default_factory=dict)
    manager_status: dict[str, Any] = field(default_factory=dict)
    service_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    dynamic_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    cmdlist: list[list[str]] = field(default_factory=list)
    echo: Callable[[str], None] | None = None
    # how far one daemon iteration advances its clock (Proxmox's harness: 1 s). Big
    # clusters want less: a loop over all nodes must stay well within the watchdog.
    iteration_seconds: float = 1.0
    # a real watchdog resets its node up to this long after its timeout (the mux stops
    # feeding the hardware watchdog, which then counts its own timeout down); drawn per
    # arming. Proxmox's harness: 0, the reset comes at the timeout exactly.
    watchdog_slack: float = 0.0

    def __post_init__(self) -> None:
        self.cur_time = 0.0
        self.lines: list[LogLine] = []
        self.lrm_status: dict[str, dict[str, Any]] = {}
        self.crm_commands: list[str] = []
        self.cluster_locks: dict[str, dict[str, Any]] = {}
        self.watchdogs: dict[int, dict[str, Any]] = {}
        self._wd_ids = 0
        self.running: dict[str, set[str]] = {n: set() for n in self.status}
        self.service_locks: dict[str, str] = {}
        # fence.cfg, simulated fence devices and each CRM's fence runner (hafence.sim.power)
        self.fencing = SimFencing(self)
        self.cfs: dict[str, dict[str, bool]] = {
            n: {"rw": True, "update": True} for n in self.status
        }
        # fa: guests' failed attempts so far, cluster-wide: {"start"|"migrate": {rid: n}}
        self.fail_tries: dict[str, dict[str, int]] = {"start": {}, "migrate": {}}
        self.nodes = {
            n: SimNode(n, SimEnv(self, n, "crm"), SimEnv(self, n, "lrm"))
            for n in sorted(self.status)
        }
        self.loop_count = 0
        self.skip_crm_rounds = 0
        self.next_cmd_at = 0.0
        self.last_command_time = 0.0
        # observers (the safety checker): called after every change of running services
        self.on_service_change: list[Callable[[str, str, bool], None]] = []
        self.on_recover: list[Callable[[str, str, str], None]] = []  # (sid, fenced, target)
        # when each node last dropped out (power or network off) and last lost power:
        # a recovery from a node is safe only if it lost power after it dropped out
        self.last_down: dict[str, float] = {}
        self.last_poweroff: dict[str, float] = {}
        self.out_since: dict[str, float] = {}  # nodes out of the cluster: since when
        self.last_live: dict[str, float] = {}  # when each node last could run services
        # fence-acks given: node -> (when, whether the node really was off then)
        self.fence_acks: dict[str, tuple[float, bool]] = {}
        for cd in self.service_config.values():
            normalize_service(cd)

    # -- log -----------------------------------------------------------------------------
    def log(self, level: str, msg: str, tag: str = "hardware", time: float | None = None) -> None:
        line = LogLine(level, int(self.cur_time if time is None else time), tag, msg)
        self.lines.append(line)
        if self.echo is not None:
            self.echo(str(line))

    def log_text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)

    # -- membership ----------------------------------------------------------------------
    def node_info(self) -> tuple[dict[str, dict[str, Any]], bool]:
        info = {
            n: {"online": s["power"] == "on" and s["network"] == "on"}
            for n, s in self.status.items()
        }
        online = sum(1 for d in info.values() if d["online"])
        return info, online * 2 > len(info)

    def cfs_rw(self, node: str) -> bool:
        return self.cfs[node]["rw"]

    def cfs_update_ok(self, node: str) -> bool:
        return self.cfs[node]["update"]

    # -- services ------------------------------------------------------------------------
    def start_service(self, node: str, sid: str) -> None:
        self.running[node].add(sid)
        self._mark_live(node)
        for cb in self.on_service_change:
            cb(node, sid, True)

    def stop_service(self, node: str, sid: str) -> None:
        if sid in self.running[node]:
            self._mark_live(node)
            self.running[node].discard(sid)
            for cb in self.on_service_change:
                cb(node, sid, False)

    def change_service_location(self, sid: str, current: str, new: str) -> None:
        cd = self.service_config.get(sid)
        if cd is None:
            raise SimError(f"service '{sid}' is not configured")
        if cd["node"] == new:
            return
        if cd["node"] != current:
            raise ServiceLocationConflict(sid, cd["node"], current)
        cd["node"] = new

    # -- watchdogs -----------------------------------------------------------------------
    def watchdog_open(self, node: str) -> int:
        self._wd_ids += 1
        slack = self.fencing.rng.uniform(0, self.watchdog_slack) if self.watchdog_slack else 0.0
        self.watchdogs[self._wd_ids] = {"node": node, "update_time": self.cur_time, "slack": slack}
        self._mark_live(node)
        return self._wd_ids

    def watchdog_update(self, handle: int) -> None:
        wd = self.watchdogs.get(handle)
        if wd is None:
            raise SimError(f"no such watchdog handle '{handle}'")
        wd["update_time"] = self.cur_time
        self._mark_live(wd["node"])

    def watchdog_close(self, handle: int) -> None:
        if handle in self.watchdogs:
            self._mark_live(self.watchdogs[handle]["node"])
        self.watchdogs.pop(handle, None)

    def _watchdog_ok(self, node: str) -> bool:
        ok = True
        for handle, wd in list(self.watchdogs.items()):
            late = self.cur_time - wd["update_time"] - wd["slack"]
            if wd["node"] == node and late > WATCHDOG_TIMEOUT:
                self._mark_live(node)
                del self.watchdogs[handle]
                ok = False
        return ok

    def is_live(self, node: str) -> bool:
        """Whether ``node`` could run services now: powered, and running some or holding
        an armed watchdog (an LRM or CRM that holds, or held, its lock)."""
        if self.status[node]["power"] != "on":
            return False
        return bool(self.running[node]) or any(wd["node"] == node for wd in self.watchdogs.values())

    def _mark_live(self, node: str) -> None:
        if self.is_live(node):
            self.last_live[node] = self.cur_time

    # -- fencing -------------------------------------------------------------------------
    def add_fence_device(self, node: str, fails: int = 0, **options: Any) -> DeviceState:
        """A fence device of its own for ``node`` (one more level of its chain); see
        :meth:`hafence.sim.power.SimFencing.add_device`."""
        return self.fencing.add_device(node, fails, **options)

    # -- power ---------------------------------------------------------------------------
    def power_off(self, node: str, why: str) -> None:
        self.cmd(f"power {node} off", why)

    def _power(self, node: str, action: str) -> None:
        st = self.status[node]
        d = self.nodes[node]
        if st["power"] != action:
            if action == "on":
                self.fencing.powered_on(node)
                if d.crm is None:
                    d.crm = CRM(d.crm_env)
                if d.lrm is None:
                    d.lrm = LRM(d.lrm_env)
                d.lrm_restart = False
            else:
                self._mark_live(node)
                self.last_down[node] = self.last_poweroff[node] = self.cur_time
                self.out_since.setdefault(node, self.cur_time)
                if d.crm is not None:
                    d.crm_env.log("info", "killed by poweroff")
                    d.crm = None
                self.fencing.crashed(node)  # its fences die with its CRM
                if d.lrm is not None:
                    d.lrm_env.log("info", "killed by poweroff")
                    d.lrm = None
                for handle in [h for h, wd in self.watchdogs.items() if wd["node"] == node]:
                    del self.watchdogs[handle]
                for sid in sorted(self.running[node]):
                    self.stop_service(node, sid)
            st["shutdown"] = None  # a pending shutdown/reboot is over once power changes
        st["power"] = action
        st["network"] = action
        if action == "on":
            self.out_since.pop(node, None)

    # -- commands ------------------------------------------------------------------------
    def cmd(self, cmdstr: str, source: str = "cmdlist") -> None:
        """Apply one hardware/admin command, logged as ``<source>: execute <cmd>``."""
        words = shlex.split(cmdstr)
        if len(words) < 2:
            raise SimError(f"bad command '{cmdstr}'")
        what, obj, *rest = words
        if what not in ("service", "delay", "skip-round") and obj not in self.nodes:
            raise SimError(f"no such node '{obj}' in command '{cmdstr}'")
        self.log("info", f"execute {cmdstr}", source)
        action = rest[0] if rest else None
        if what == "power":
            if action not in ("on", "off"):
                raise SimError(f"unknown power action in '{cmdstr}'")
            self._power(obj, action)
        elif what == "network":
            if action not in ("on", "off"):
                raise SimError(f"unknown network action in '{cmdstr}'")
            st = self.status[obj]
            if action == "off" and st["network"] == "on" and st["power"] == "on":
                self.last_down[obj] = self.out_since[obj] = self.cur_time
            self.status[obj]["network"] = action
            if action == "on" and st["power"] == "on":
                self.out_since.pop(obj, None)
        elif what == "delay":
            self.next_cmd_at = self.cur_time + int(obj)
        elif what == "skip-round":
            if obj != "crm":
                raise SimError(f"cannot skip rounds of '{obj}'")
            self.skip_crm_rounds = int(action or 1)
        elif what == "cfs":
            if action not in ("rw", "update") or len(rest) < 2 or rest[1] not in ("work", "fail"):
                raise SimError(f"bad cfs command '{cmdstr}'")
            self.cfs[obj][action] = rest[1] == "work"
        elif what in ("reboot", "shutdown"):
            self.status[obj]["shutdown"] = what
            d = self.nodes[obj]
            if d.lrm is not None:
                d.lrm.shutdown_request()
        elif what == "restart-lrm":
            d = self.nodes[obj]
            if d.lrm is not None:
                d.lrm_restart = True
                d.lrm.shutdown_request()
        elif what == "crm":
            self._crm_cmd(obj, action, rest[1:], cmdstr)
        elif what == "service":
            self._service_cmd(obj, action, rest[1:], cmdstr)
        elif what == "pve-manager-version":
            pass  # node software versions only matter to group->rule migration
        else:
            raise SimError(f"unknown command '{cmdstr}'")

    def _crm_cmd(self, node: str, action: str | None, args: list[str], cmdstr: str) -> None:
        d = self.nodes[node]
        if action == "stop":
            if d.crm is not None:
                d.crm_stop = True
                d.crm.shutdown_request()
        elif action == "start":
            if d.crm is None:
                d.crm = CRM(d.crm_env)
        elif action in ("enable-node-maintenance", "disable-node-maintenance"):
            self.crm_commands.append(f"{action} {node}")
        elif action == "disarm-ha":
            self.crm_commands.append(f"disarm-ha {args[0] if args else 'freeze'}")
        elif action == "arm-ha":
            self.crm_commands.append("arm-ha")
        elif action == "fence-ack":  # an admin confirms the node is off (truthfully or not)
            self.fence_acks[node] = (self.cur_time, self.status[node]["power"] == "off")
            self.crm_commands.append(f"fence-ack {node} admin {int(self.cur_time)}")
        else:
            raise SimError(f"unsupported crm command '{cmdstr}'")

    def _service_cmd(self, sid: str, action: str | None, args: list[str], cmdstr: str) -> None:
        if action in ("started", "disabled", "stopped", "ignored", "enabled"):
            if sid not in self.service_config:
                raise SimError(f"no such service '{sid}'")
            self.service_config[sid]["state"] = "started" if action == "enabled" else action
        elif action in ("migrate", "relocate"):
            if not args:
                raise SimError(f"missing target node in '{cmdstr}'")
            self.crm_commands.append(f"{action} {sid} {args[0]}")
        elif action == "stop":
            if not args:
                raise SimError(f"missing timeout in '{cmdstr}'")
            self.crm_commands.append(f"stop {sid} {args[0]}")
        elif action == "add":
            if not args:
                raise SimError(f"missing node in '{cmdstr}'")
            cd = {"node": args[0], "state": args[1] if len(args) > 1 else "started"}
            if len(args) > 2:
                cd["failback"] = bool(int(args[2]))
            self.service_config[sid] = normalize_service(cd)
        elif action == "manual-migrate":
            # an admin moves a guest by hand (HA disarmed): it arrives stopped
            cd = self.service_config.get(sid)
            if cd is None or not args:
                raise SimError(f"bad command '{cmdstr}'")
            self.stop_service(cd["node"], sid)
            cd["node"] = args[0]
        elif action == "delete":
            self.service_config.pop(sid, None)
        elif action == "lock":
            self.service_locks[sid] = args[0] if args else "backup"
        elif action == "unlock":
            self.service_locks.pop(sid, None)
        elif action in ("set-static-stats", "set-dynamic-stats"):
            # "maxcpu 2 maxmem 1024" / "cpu 5.9 mem 2744": figures for the CRS schedulers
            stats = self.service_stats if action == "set-static-stats" else self.dynamic_stats
            if len(args) % 2:
                raise SimError(f"bad stats in '{cmdstr}'")
            entry = stats.setdefault(sid, {})
            for key, value in zip(args[::2], args[1::2], strict=True):
                entry[key] = float(value)
        else:
            raise SimError(f"unsupported service command '{cmdstr}'")

    # -- the run loop --------------------------------------------------------------------
    def _iterate(self, env: SimEnv, daemon: CRM | LRM) -> bool:
        """One iteration on the daemon's own clock; the cluster clock follows it."""
        env.loop_start(self.cur_time)
        alive = daemon.do_one_iteration()
        env.loop_end()
        self.cur_time = max(self.cur_time, env.cur_time)
        return alive

    def _run_node(self, d: SimNode, skip_crm: bool = False) -> None:
        if d.crm is not None and not skip_crm and not self._iterate(d.crm_env, d.crm):
            d.crm_env.log("info", "exit (loop end)")
            d.crm = None
            self.fencing.crashed(d.name)
            shutdown = self.status[d.name].get("shutdown")
            if shutdown in ("reboot", "shutdown"):
                self._power_cycle(d.name, shutdown)
            elif not d.crm_stop:
                raise SimError(f"unexpected CRM exit on {d.name}")
            d.crm_stop = False
        if d.lrm is not None:
            alive = self._iterate(d.lrm_env, d.lrm)
            if not alive:
                d.lrm_env.log("info", "exit (loop end)")
                d.lrm = None
                shutdown = self.status[d.name].get("shutdown")
                if d.lrm_restart:
                    d.lrm_restart = False
                    d.lrm = LRM(d.lrm_env)
                elif shutdown in ("reboot", "shutdown"):
                    if d.crm is not None:
                        d.crm_stop = True
                        self.cmd(f"crm {d.name} stop", shutdown)
                    else:
                        self._power_cycle(d.name, shutdown)
                else:
                    raise SimError(f"unexpected LRM exit on {d.name}")

    def _power_cycle(self, node: str, shutdown: str) -> None:
        """The end of a node shutdown (power off) or reboot (off, then on again)."""
        self.cmd(f"power {node} off", shutdown)
        if shutdown == "reboot":
            self.cmd(f"power {node} on", shutdown)

    def step(self) -> bool:
        """One loop over all nodes plus the command list; False when the run is over."""
        start = self.cur_time
        names = sorted(self.nodes)
        looptime = max(20, 2 * len(names) * self.iteration_seconds)
        skip_crm = self.skip_crm_rounds > 0
        if skip_crm:
            self.skip_crm_rounds -= 1
            self.log("info", "skipping CRM round", "run-loop")
        for name in names:
            self._run_node(self.nodes[name], skip_crm)
            self.fencing.advance(self.cur_time)
            for n in names:
                if not self._watchdog_ok(n):
                    self.cmd(f"power {n} off", "watchdog")
                    self.log("info", f"server '{n}' stopped by poweroff (watchdog)")
        if self.cur_time - start < looptime:
            self.fencing.advance(start + looptime)  # devices act at their own times
            self.cur_time = start + looptime
        if self.cur_time > MAX_SIM_TIME:
            raise SimError("simulation took too long")
        for d in self.nodes.values():  # idle nodes' clocks follow the cluster
            d.crm_env.loop_start(self.cur_time)
            d.lrm_env.loop_start(self.cur_time)
        if self.cur_time < self.next_cmd_at:
            return True
        if self.loop_count % 5 == 0:
            if not self.cmdlist:
                if self.cur_time - self.last_command_time > 500:
                    return False
            else:
                for c in self.cmdlist.pop(0):
                    self.last_command_time = self.cur_time
                    self.cmd(c)
        self.loop_count += 1
        return True

    def run(self) -> str:
        self.log("info", "starting simulation")
        while self.step():
            pass
        self.fencing.close()
        self.log("info", "exit simulation - done")
        return self.log_text()


def normalize_service(cd: dict[str, Any]) -> dict[str, Any]:
    """Fill the simulator's defaults (as Proxmox's harness: no state = disabled)."""
    state = cd.get("state") or "disabled"
    cd["state"] = "started" if state == "enabled" else state
    cd["max_restart"] = int(cd.get("max_restart", 1))
    cd["max_relocate"] = int(cd.get("max_relocate", 1))
    return cd
