"""The master CRM's decision step: one :meth:`Manager.manage` call per round.

Pure logic over the :class:`~hafence.ha.env.Env`: it reads the service config, the node
membership and every LRM's results, moves each service through its state machine, fences
dead nodes and recovers their services, and writes the manager status that the LRMs act
on. Service states (``hafence.ha.state.SERVICE_STATES``)::

    request_start -> started <-> migrate/relocate     started -> request_stop -> stopped
    started/request_stop/stopped/migrate/relocate -> fence -> recovery -> started|request_stop
    started -> error (relocate policy exhausted) -> stopped (only via requested 'disabled')
    started/stopped/request_stop -> freeze (LRM restart/reboot) -> started|request_stop

Safety rules this module enforces:

- a service of a node that is offline goes to ``fence`` and is only moved once
  :meth:`NodeStatus.fence_node` succeeded (hardware fence confirmed, when configured, and
  the node's agent lock acquired), never earlier, whatever the config says;
- every command to an LRM carries a fresh ``uid``; results of older uids are ignored, so a
  stale command can never be mistaken for the current one.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

from hafence.ha import state as st
from hafence.ha.env import Env, ServiceLocationConflict
from hafence.ha.nodestatus import NodeStatus
from hafence.ha.select import (
    DynamicUsage,
    NodeUsage,
    StaticUsage,
    affinity_peers,
    resource_affinity,
    select_service_node,
    service_affinity,
    used_nodes,
)
from hafence.ha.statefile import StateFileError

_uid_counter = itertools.count()


def _new_uid(sid: str, state: str, now: float) -> str:
    return st.new_uid(sid, state, now, next(_uid_counter))


# what a disarm in mode 'freeze' freezes (anything else is left as it is)
_FREEZE_ON_DISARM = frozenset(
    {"started", "stopped", "request_stop", "request_start", "request_start_balance"}
)


def service_type(sid: str) -> str:
    return sid.split(":", 1)[0]


def fenced_service_count(service_status: dict[str, Any], node: str) -> int:
    """Services of ``node`` waiting in ``fence``: while any exist, the node must not work."""
    return sum(
        1 for sd in service_status.values() if sd.get("node") == node and sd.get("state") == "fence"
    )


class Manager:
    """State of the elected master: node status, service status, pending commands."""

    def __init__(self, env: Env, fence_delay: float | None = None) -> None:
        self.env = env
        try:
            old = env.read_manager_status() or {}
        except StateFileError as exc:
            env.log("err", f"manager status damaged: {exc}")
            old = self._rebuilt_status()
        self.ns = NodeStatus(env, old.get("node_status") or {})
        if fence_delay is not None:
            self.ns.fence_delay = fence_delay
        self.ns.acked = dict(old.get("fence_ack") or {})
        self.ss: dict[str, dict[str, Any]] = old.get("service_status") or {}
        self.ms: dict[str, Any] = {"master_node": env.nodename}
        # a node in (manual) maintenance stays there when the master changes
        if old.get("node_request"):
            self.ms["node_request"] = old["node_request"]
        if old.get("disarm"):
            self.ms["disarm"] = old["disarm"]
        self.sc: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, Any] = {}
        self.rules: dict[str, Any] = {}
        self.usage = NodeUsage([])
        self._stays: set[tuple[Any, ...]] = set()
        self.lrm_states: dict[str, str] = {}  # each node's LRM state, read every round
        self.lrm_modes: dict[str, str] = {}  # and its mode (active, shutdown, restart ...)
        self.lrm_times: dict[str, float] = {}  # and when its LRM wrote that status
        self.closing: set[str] = set()  # nodes that receive no service (this round)
        self.errors: dict[str, str] = {}  # what failed last round -> its error (logged once)
        self._last_lrm: dict[str, dict[str, Any]] = {}  # each node's last good LRM status
        self.crs_mode = "basic"
        self._update_crs_mode()

    # -- helpers -------------------------------------------------------------------------
    def _change(self, sid: str, new_state: str, **params: Any) -> None:
        """Move ``sid`` to ``new_state`` with a fresh uid; log one line (Proxmox format)."""
        sd = self.ss[sid]
        old_state = sd["state"]
        assert old_state != new_state, f"no state change for {sid}"
        keep = {k: sd[k] for k in ("node", "failed_nodes", "maintenance_node") if k in sd}
        sd.clear()
        sd.update(keep)
        sd["state"] = new_state
        text = ", ".join(f"{k} = {params[k]}" for k in sorted(params))
        sd.update(params)
        if self.usage.mode == "basic":  # exact counts: only this service's load changes
            self.usage.set_service(sid, sd)
        else:  # float sums: recounted, so the scores never drift from a fresh count
            self._recompute_usage()
        sd["uid"] = _new_uid(sid, new_state, self.env.get_time())
        suffix = f"  ({text})" if text else ""
        self.env.log(
            "info", f"service '{sid}': state changed from '{old_state}' to '{new_state}'{suffix}"
        )

    def _update_crs_mode(self) -> None:
        mode = (self.env.crs_options() or {}).get("ha") or "basic"
        if mode not in ("basic", "static", "dynamic"):
            mode = "basic"
        if mode != self.crs_mode:
            self.env.log("info", f"using scheduler mode '{mode}'")
            self.crs_mode = mode
        crs = self.env.crs_options() or {}
        self.rebalance_on_start = bool(int(crs.get("ha-rebalance-on-start", 0) or 0))

    def _recompute_usage(self) -> None:
        online = self.ns.online_nodes()
        if self.crs_mode in ("static", "dynamic"):
            env = self.env
            try:
                if self.crs_mode == "dynamic":
                    usage: NodeUsage = DynamicUsage(
                        online,
                        env.get_static_node_stats(),
                        env.get_static_service_stats(),
                        env.get_dynamic_service_stats(),
                    )
                else:
                    usage = StaticUsage(
                        online, env.get_static_node_stats(), env.get_static_service_stats()
                    )
            except ValueError as exc:
                self.env.log("err", f"static scheduler unusable, counting services - {exc}")
                usage = NodeUsage(online)
        else:
            usage = NodeUsage(online)
        self.usage = usage.fill(self.ss)
        self._stays: set[tuple[Any, ...]] = set()  # (group, failback, node) that keep theirs

    def _select(self, sid: str, cd: dict[str, Any], sd: dict[str, Any], **kw: Any) -> str | None:
        # Without rules, a service that stays put stays for its group and node alone
        # (usage only matters for a move): decided once per round, not per service.
        key = None
        if not (self.rules or kw.get("try_next") or kw.get("best_scored")):
            if kw.get("maintenance_fallback") is None:
                key = (cd.get("group"), cd.get("failback", True), sd["node"])
                if key in self._stays:
                    return sd["node"]
        target = self._select_node(sid, cd, sd, **kw)
        if key is not None and target == sd["node"]:
            self._stays.add(key)
        return target

    def _select_node(
        self, sid: str, cd: dict[str, Any], sd: dict[str, Any], **kw: Any
    ) -> str | None:
        aff = service_affinity(sid, cd, self.groups, self.rules)
        if self.rules:
            aff.together, aff.separate = resource_affinity(sid, self.rules, self.ss, self.usage)
        kw.setdefault("running", bool(sd.get("running")))
        return select_service_node(aff, self.usage, sd["node"], sid=sid, avoid=self.closing, **kw)

    def _closing_nodes(self) -> set[str]:
        """Nodes whose LRM shuts down or restarts: they keep what they have (their LRM
        stops or freezes it) but never receive a service, which would arrive at an LRM
        that no longer starts anything. A node that came back since its LRM said so (a
        reboot) is not closing: that status is from before."""
        return {
            n
            for n, mode in self.lrm_modes.items()
            if mode in ("shutdown", "restart")
            and self.lrm_times.get(n, 0) >= self.ns.online_since.get(n, 0)
        }

    def _read_lrm_status(self) -> tuple[dict[str, Any], dict[str, str]]:
        results: dict[str, Any] = {}
        modes: dict[str, str] = {}
        self.lrm_states, self.lrm_modes = {}, modes
        for node in self.ns.nodes():
            what = f"lrm status of node '{node}'"
            try:
                lrm = self._last_lrm[node] = self.env.read_lrm_status(node) or {}
                self._error_gone(what)
            except StateFileError as exc:  # its LRM rewrites it every round
                self._error_once(what, f"{what}: {exc}; using its last good version")
                lrm = self._last_lrm.get(node, {})
            modes[node] = lrm.get("mode") or "active"
            self.lrm_times[node] = float(lrm.get("timestamp") or 0)
            self.lrm_states[node] = lrm.get("state") or "unknown"
            for uid, res in (lrm.get("results") or {}).items():
                results.setdefault(uid, res)
        return results, modes

    # -- CRM commands --------------------------------------------------------------------
    def _update_crm_commands(self) -> None:
        for line in self.env.take_crm_commands():
            line = line.strip()
            if line:
                with self._isolated(f"crm command '{line}'", "while applying it"):
                    self._crm_command(line)

    def _crm_command(self, line: str) -> None:
        env, ns, ss = self.env, self.ns, self.ss
        try:
            cmd, args = st.parse_crm_command(line)
        except st.CrmCommandError:
            env.log("err", f"unable to parse crm command: {line}")
            return
        if cmd in ("migrate", "relocate"):
            sid, node = args
            sd = ss.get(sid)
            if sd is None:
                env.log("err", f"crm command error - no such service: {line}")
            elif not ns.is_online(node):
                env.log("err", f"crm command error - node not online: {line}")
            elif node == sd.get("node"):
                env.log("info", f"ignore crm command - service already on target node: {line}")
            else:
                self._queue_move(line, cmd, sid, node)
        elif cmd == "stop":
            sid, timeout = args
            sd = ss.get(sid)
            if sd is None:
                env.log("err", f"crm command error - no such service: {line}")
            else:
                env.log("info", f"got crm command: {line}")
                sd["cmd"] = ["stop", int(timeout)]
        elif cmd == "enable-node-maintenance":
            node = args[0]
            state = ns.get(node)
            if self.ms.get("disarm"):
                env.log(
                    "warning",
                    f"ignoring maintenance command for node {node} - HA stack is disarmed",
                )
            elif state == "online":
                self.ms.setdefault("node_request", {}).setdefault(node, {})["maintenance"] = 1
            elif state == "maintenance":
                env.log(
                    "info",
                    f"ignoring crm command - node {node} is already in maintenance state",
                )
            else:
                env.log("err", f"crm command error - node not online: {line}")
        elif cmd == "disarm-ha":
            disarm = self.ms.get("disarm")
            if disarm:
                env.log(
                    "notice",
                    f"ignoring disarm-ha command - already in disarm state ({disarm['state']})",
                )
            else:
                env.log("info", f"got crm command: {line}")
                if args[0] == "ignore":
                    for sid in sorted(ss):
                        env.log("info", f"disarm: suspending HA tracking for service '{sid}'")
                self.ms["disarm"] = {"mode": args[0], "state": "disarming"}
        elif cmd == "arm-ha":
            disarm = self.ms.get("disarm")
            if not disarm:
                env.log("notice", "ignoring arm-ha command - HA stack is not disarmed")
                return
            env.log("info", f"got crm command: {line}")
            if disarm.get("applied") and disarm["mode"] == "ignore":
                # services an admin moved by hand while HA looked away
                for sid in sorted(ss):
                    cd = self.sc.get(sid)
                    if cd and cd.get("node") and cd["node"] != ss[sid].get("node"):
                        env.log(
                            "info",
                            f"service '{sid}': updating node '{ss[sid]['node']}' => "
                            f"'{cd['node']}' (changed while disarmed)",
                        )
                        ss[sid]["node"] = cd["node"]
            del self.ms["disarm"]
        elif cmd == "fence-ack":
            node, by, at = args
            self.ns.acknowledge(node, by, int(at))
        elif cmd == "disable-node-maintenance":
            node = args[0]
            state = ns.get(node)
            if state != "maintenance":
                env.log(
                    "warning",
                    f"clearing maintenance of node {node} requested, but it's in state {state}",
                )
            req = self.ms.get("node_request", {}).get(node)
            if req:
                req.pop("maintenance", None)

    def _queue_move(self, line: str, cmd: str, sid: str, node: str) -> None:
        """A migrate/relocate command, checked against resource-affinity rules: refused
        onto a node a negative peer uses; positive peers move along."""
        env, ss = self.env, self.ss
        positive, negative = affinity_peers(sid, self.rules)
        for peer in negative:
            if node in used_nodes(ss.get(peer) or {}):
                env.log(
                    "err",
                    f"crm command '{line}' error - service '{peer}' on node '{node}' in "
                    f"negative affinity with service '{sid}'",
                )
                return
        env.log("info", f"got crm command: {line}")
        ss[sid]["cmd"] = [cmd, node]
        for peer in positive:
            psd = ss.get(peer)
            if psd is None or psd.get("node") == node:
                continue
            env.log(
                "info",
                f"crm command '{line}' - {cmd} service '{peer}' to node '{node}' (service "
                f"'{peer}' in positive affinity with service '{sid}')",
            )
            psd["cmd"] = [cmd, node]

    # -- the round -----------------------------------------------------------------------
    def manage(self) -> None:
        env, ns, ss = self.env, self.ns, self.ss
        node_info = env.get_node_info()
        lrm_results, lrm_modes = self._read_lrm_status()
        ns.update(node_info, lrm_modes)
        self.closing = self._closing_nodes()
        if not ns.is_operational(env.nodename):
            env.log("info", "master seems offline")
            return
        self._update_crs_mode()
        self.sc = sc = env.read_service_config()
        self.groups = env.read_groups()
        self.rules = env.read_rules()

        for sid in sorted(sc):
            if sid in ss:
                continue
            cd = sc[sid]
            if cd.get("state") == "ignored":
                continue
            env.log("info", f"adding new service '{sid}' on node '{cd['node']}'")
            state = "request_start" if cd.get("state") == "started" else "request_stop"
            ss[sid] = {
                "state": state,
                "node": cd["node"],
                "uid": _new_uid(sid, "started", env.get_time()),
            }
        for sid in sorted(ss):
            cd = sc.get(sid)
            if cd is not None and cd.get("state") != "ignored":
                continue
            reason = "ignored state requested" if cd is not None else "no config"
            env.log("info", f"removing stale service '{sid}' ({reason})")
            del ss[sid]

        self._update_crm_commands()
        deferred: set[str] | None = None
        if self.ms.get("disarm"):
            deferred = self._handle_disarm()
            if deferred is None:  # disarm in effect: no service changes at all
                self.flush()
                return

        while True:
            repeat = False
            self._recompute_usage()
            for sid in sorted(ss):
                sd = ss[sid]
                last = sd["state"]
                if deferred is not None and sid not in deferred:
                    continue  # a deferred disarm lets only the transitions in flight finish
                try:  # (inline: this runs for every service, every round)
                    self._step_service(sid, sd, sc, lrm_results, lrm_modes)
                except Exception as exc:
                    self._failed(f"service '{sid}'", f"in state '{last}'", exc)
                else:
                    if self.errors:
                        self._error_gone(f"service '{sid}'")
                if sd["state"] != last:
                    repeat = True

            fenced: dict[str, bool] = {}
            for sid in sorted(ss):
                sd = ss[sid]
                if sd["state"] != "fence":
                    continue
                node = sd["node"]
                if node not in fenced:
                    fenced[node] = False
                    with self._isolated(f"node '{node}'", "while fencing"):
                        fenced[node] = ns.fence_node(node)
                if not fenced[node]:
                    continue
                self._change(sid, "recovery")
                repeat = True
            # a node marked for fencing whose services all left: nothing to wait for
            for node in ns.nodes():
                if ns.get(node) == "fence" and node not in fenced:
                    env.log(
                        "notice",
                        f"node '{node}' in fence state but no services to-fence! "
                        "admin interference?!",
                    )
                    with self._isolated(f"node '{node}'", "while fencing"):
                        if ns.fence_node(node):
                            repeat = True
            if not repeat:
                break
        self.flush()

    def _step_service(
        self,
        sid: str,
        sd: dict[str, Any],
        sc: dict[str, Any],
        lrm_results: dict[str, Any],
        lrm_modes: dict[str, str],
    ) -> None:
        """One service's state machine step (Proxmox's loop body in ``manage``)."""
        cd = sc.get(sid) or {"state": "disabled", "node": sd.get("node")}
        lrm_res = lrm_results.get(sd["uid"]) if sd.get("uid") else None
        last = sd["state"]
        handler = self._HANDLERS.get(last)
        if handler is not None:
            handler(self, sid, cd, sd, lrm_res)
        elif last == "freeze":
            if lrm_modes.get(sd.get("node") or "") == "active":
                self._change(sid, "started" if cd["state"] == "started" else "request_stop")
        elif last != "fence":
            self.env.log("err", f"service '{sid}': unknown service state '{last}'")
        mode = lrm_modes.get(sd.get("node") or "")
        if mode == "restart" and sd["state"] in ("started", "stopped", "request_stop"):
            self._change(sid, "freeze")

    @contextlib.contextmanager
    def _isolated(self, what: str, where: str) -> Iterator[None]:
        """Run one service's (or node's) step; an error skips it for this round, logged
        once per episode, and never stops the others or the status write."""
        try:
            yield
        except Exception as exc:
            self._failed(what, where, exc)
            return
        self._error_gone(what)

    def _failed(self, what: str, where: str, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self._error_once(what, f"{what}: error {where}, skipped this round: {text}")

    def _error_once(self, what: str, msg: str) -> None:
        if self.errors.get(what) != msg:
            self.errors[what] = msg
            self.env.log("err", msg)

    def _error_gone(self, what: str) -> None:
        if self.errors.pop(what, None) is not None:
            self.env.log("info", f"{what}: fine again")

    def _rebuilt_status(self) -> dict[str, Any]:
        """A manager status from what can be trusted: the service config (where each
        service is) and each LRM's status (maintenance, disarm). Every service restarts
        its state machine where its config puts it: 'started' makes its LRM check it (and
        start it when it is not running), a node that is down gets fenced after the fence
        delay, as with any new master."""
        env = self.env
        now = env.get_time()
        nodes = env.get_node_info()
        lrms: dict[str, dict[str, Any]] = {}
        for node in sorted(nodes):
            try:
                lrms[node] = env.read_lrm_status(node) or {}
            except StateFileError:
                lrms[node] = {}
        ss: dict[str, dict[str, Any]] = {}
        for sid, cd in sorted(env.read_service_config().items()):
            if cd.get("state") != "ignored" and cd.get("node"):
                state = "started" if cd.get("state") == "started" else "request_stop"
                ss[sid] = {"state": state, "node": cd["node"], "uid": _new_uid(sid, state, now)}
        ms: dict[str, Any] = {
            "node_status": {
                n: "online" if i.get("online") else "unknown" for n, i in nodes.items()
            },
            "service_status": ss,
        }
        maint = {
            n: {"maintenance": 1} for n, lrm in lrms.items() if lrm.get("mode") == "maintenance"
        }
        if maint:
            ms["node_request"] = maint
            env.log("warning", f"rebuilt: kept {', '.join(maint)} in maintenance (as its LRM is)")
        if any(lrm.get("mode") == "disarm" for lrm in lrms.values()):
            ms["disarm"] = {"mode": "freeze", "state": "disarming"}
            env.log("warning", "rebuilt: the HA stack was being disarmed: disarming (freeze)")
        env.log(
            "notice",
            f"rebuilt the manager status from the service config ({len(ss)} services) and "
            f"the LRM status of {len(lrms)} nodes",
        )
        return ms

    def _handle_disarm(self) -> set[str] | None:
        """Advance a requested disarm (Proxmox's ``handle_disarm``).

        While services are in fence, recovery, migrate or relocate it waits and returns
        them: their transitions must finish with the watchdogs still armed. Then it
        freezes (mode freeze) or stops tracking (mode ignore) every service, and the stack
        is fully disarmed once no LRM is active any more; None: skip the service steps.
        """
        disarm = self.ms["disarm"]
        env, ss = self.env, self.ss
        mode = disarm.get("mode")
        if mode not in st.DISARM_MODES:
            env.log("err", f"unknown disarm-mode '{mode}', ignoring")
            return None
        deferred: set[str] = set()
        for sid in sorted(ss):
            state = ss[sid]["state"]
            if state in ("fence", "recovery", "migrate", "relocate"):
                level = "warning" if state in ("fence", "recovery") else "info"
                env.log(level, f"deferring disarm - service '{sid}' is in '{state}' state")
                deferred.add(sid)
        if deferred:
            return deferred
        # runtime data (failed_nodes, cmd, target ...) dies with the disarm; a service
        # keeps where to go back to after maintenance
        keep = ("state", "node", "uid", "maintenance_node")
        for sid in sorted(ss):
            sd = ss[sid]
            if mode == "freeze" and sd["state"] in _FREEZE_ON_DISARM:
                env.log("info", f"disarm: freezing service '{sid}' (was '{sd['state']}')")
                sd["state"] = "freeze"
                sd["uid"] = _new_uid(sid, "freeze", env.get_time())
            for key in [k for k in sd if k not in keep]:
                del sd[key]
        disarm["applied"] = True
        if disarm["state"] == "disarming":
            active = [
                n
                for n in self.ns.nodes()
                if self.ns.is_operational(n) and self.lrm_states.get(n) == "active"
            ]
            if not active:
                env.log("info", "all LRMs disarmed, HA stack is now fully disarmed")
                disarm["state"] = "disarmed"
        return None

    def flush(self) -> None:
        self.ms["node_status"] = dict(self.ns.status)
        if self.ns.acked:  # survives a change of master
            self.ms["fence_ack"] = dict(self.ns.acked)
        else:
            self.ms.pop("fence_ack", None)
        fencing = {n: f for n, f in self.ns.fencing.items() if self.ns.get(n) == "fence"}
        if fencing:  # progress for ha-manager status
            self.ms["fencing"] = fencing
        else:
            self.ms.pop("fencing", None)
        self.ms["service_status"] = self.ss
        self.ms["timestamp"] = int(self.env.get_time())
        self.env.write_manager_status(self.ms)

    # -- per-state steps -----------------------------------------------------------------
    def _move_allowed(self, sid: str, sd: dict, what: str, target: str) -> bool:
        """Whether a queued migrate/relocate of ``sid`` to ``target`` can go ahead."""
        if not self.ns.is_online(target):
            self.env.log(
                "err", f"ignore service '{sid}' {what} request - node '{target}' not online"
            )
            return False
        if sd["node"] == target:
            self.env.log(
                "info",
                f"ignore service '{sid}' {what} request - service already on node '{target}'",
            )
            return False
        if target in self.closing:
            self.env.log(
                "err", f"ignore service '{sid}' {what} request - node '{target}' is shutting down"
            )
            return False
        return True

    def _next_request_start(self, sid: str, cd: dict, sd: dict, lrm_res: dict | None) -> None:
        node = sd["node"]
        if self.rebalance_on_start:
            target = self._select(
                sid,
                cd,
                sd,
                tried_nodes=sd.get("failed_nodes") or [],
                maintenance_fallback=sd.get("maintenance_node"),
                best_scored=True,
            )
            if target:
                which = "new" if target != node else "current"
                self.env.log(
                    "info", f"service {sid}: re-balance selected {which} node {target} for startup"
                )
                if target != node:
                    self._change(sid, "request_start_balance", node=node, target=target)
                    return
        self._change(sid, "started", node=node)

    def _next_stopped(self, sid: str, cd: dict, sd: dict, lrm_res: dict | None) -> None:
        env, ns = self.env, self.ns
        if cd.get("node") and sd["node"] != cd["node"]:
            # a node was fenced during a migration: the config is the truth
            env.log("info", f"fixup service '{sid}' location ({sd['node']} => {cd['node']})")
            sd["node"] = cd["node"]
        cmd = sd.pop("cmd", None)
        if cmd:
            if cmd[0] in ("migrate", "relocate"):
                if self._move_allowed(sid, sd, cmd[0], cmd[1]):
                    self._change(sid, cmd[0], node=sd["node"], target=cmd[1])
                    return
            elif cmd[0] == "stop":
                env.log("info", f"ignore service '{sid}' stop request - service already stopped")
        if cd["state"] == "disabled":
            return  # the LRM keeps it stopped; no result to wait for
        if ns.offline_delayed(sd["node"]) and ns.get(sd["node"]) != "maintenance":
            self._change(sid, "fence")
            return
        if cd["state"] == "stopped":
            return
        if cd["state"] == "started":
            self._change(sid, "request_start", node=sd["node"])
            return
        env.log("err", f"service '{sid}' - unknown state '{cd['state']}' in service configuration")

    def _next_request_stop(self, sid: str, cd: dict, sd: dict, lrm_res: dict | None) -> None:
        if lrm_res:
            code = lrm_res.get("exit_code")
            if code == st.SUCCESS:
                self._change(sid, "stopped")
            else:
                self.env.log("err", f"service '{sid}' stop failed (exit code {code})")
                self._change(sid, "error")
            return
        if self.ns.offline_delayed(sd["node"]):
            self._change(sid, "fence")

    def _next_migrate_relocate(self, sid: str, cd: dict, sd: dict, lrm_res: dict | None) -> None:
        if lrm_res:
            code = lrm_res.get("exit_code")
            req_state = "started" if cd["state"] == "started" else "request_stop"
            if code == st.SUCCESS:
                self._change(sid, req_state, node=sd["target"])
                return
            if code == st.IGNORED:
                self.env.log(
                    "info",
                    f"service '{sid}' - rebalance-on-start request ignored - service already "
                    "running",
                )
                self._change(sid, req_state, node=sd["node"])
                return
            if code == st.EWRONG_NODE:
                self.env.log(
                    "err", f"service '{sid}' - migration failed: service registered on wrong node!"
                )
                self._change(sid, "error")
            else:
                self.env.log("err", f"service '{sid}' - migration failed (exit code {code})")
                self._change(sid, req_state, node=sd["node"])
                return
        if self.ns.offline_delayed(sd["node"]):
            self._change(sid, "fence")

    def _next_started(self, sid: str, cd: dict, sd: dict, lrm_res: dict | None) -> None:
        env, ns = self.env, self.ns
        node = sd["node"]
        if not ns.is_online(node):
            if ns.offline_delayed(node):
                self._change(sid, "fence")
            if ns.get(node) != "maintenance":
                return
            # remember where to move back once maintenance ends
            sd["maintenance_node"] = node
        if cd["state"] in ("disabled", "stopped"):
            self._change(sid, "request_stop")
            return
        if cd["state"] != "started":
            env.log(
                "err", f"service '{sid}' - unknown state '{cd['state']}' in service configuration"
            )
            return
        if sd.get("cmd"):
            cmd = sd.pop("cmd")
            if cmd[0] in ("migrate", "relocate"):
                if self._move_allowed(sid, sd, cmd[0], cmd[1]):
                    env.log("info", f"{cmd[0]} service '{sid}' to node '{cmd[1]}'")
                    self._change(sid, cmd[0], node=node, target=cmd[1])
            elif cmd[0] == "stop":
                timeout = cmd[1]
                if timeout == 0:
                    env.log("info", f"request immediate service hard-stop for service '{sid}'")
                else:
                    env.log(
                        "info",
                        f"request graceful stop with timeout '{timeout}' for service '{sid}'",
                    )
                self._change(sid, "request_stop", timeout=timeout)
                env.update_service_config(sid, {"state": "stopped"})
            return

        try_next = False
        if lrm_res:
            code = lrm_res.get("exit_code")
            if code == st.SUCCESS:
                if sd.get("failed_nodes") is not None:
                    env.log(
                        "info",
                        f"relocation policy successful for '{sid}' on node '{node}', "
                        f"failed nodes: {', '.join(sd['failed_nodes'])}",
                    )
                sd.pop("failed_nodes", None)
                sd["running"] = 1
            elif code in (st.ERROR, st.EWRONG_NODE):
                sd.pop("running", None)
                sd.setdefault("failed_nodes", []).append(node)
                if len(sd["failed_nodes"]) <= int(cd.get("max_relocate", 1)):
                    try_next = True
                    env.log(
                        "warning",
                        f"starting service {sid} on node '{node}' failed, relocating service.",
                    )
                else:
                    env.log(
                        "err",
                        f"recovery policy for service {sid} failed, entering error state. "
                        f"Failed nodes: {', '.join(sd['failed_nodes'])}",
                    )
                    self._change(sid, "error")
                    return
            else:
                env.log("err", f"service '{sid}' got unrecoverable error (exit code {code}))")
                self._change(sid, "error")
                return

        target = self._select(
            sid,
            cd,
            sd,
            try_next=try_next,
            tried_nodes=sd.get("failed_nodes") or [],
            maintenance_fallback=sd.get("maintenance_node"),
        )
        if target and target != node:
            fallback = sd.get("maintenance_node")
            if fallback is not None:
                if target == fallback:
                    env.log(
                        "info",
                        f"moving service '{sid}' back to '{fallback}', node came back from "
                        "maintenance.",
                    )
                    sd.pop("maintenance_node", None)
                elif node != fallback:
                    env.log("info", f"dropping maintenance fallback node '{fallback}' for '{sid}'")
                    sd.pop("maintenance_node", None)
            if service_type(sid) == "vm":
                env.log("info", f"migrate service '{sid}' to node '{target}' (running)")
                self._change(sid, "migrate", node=node, target=target)
            else:
                env.log("info", f"relocate service '{sid}' to node '{target}'")
                self._change(sid, "relocate", node=node, target=target)
            return
        if try_next and target is None:
            env.log(
                "warning",
                f"Start Error Recovery: Tried all available nodes for service '{sid}', retry "
                f"start on current node. Tried nodes: {', '.join(sd.get('failed_nodes') or [])}",
            )
        if sd.get("maintenance_node") and sd["maintenance_node"] == node and ns.is_online(node):
            env.log(
                "info",
                f"service '{sid}': clearing stale maintenance node '{node}' setting (is current "
                "node)",
            )
            sd.pop("maintenance_node", None)
        if lrm_res is not None:
            # a new uid makes the LRM check (and restart) the service again
            sd["uid"] = _new_uid(sid, sd["state"], env.get_time())

    def _next_recovery(self, sid: str, cd: dict, sd: dict, lrm_res: dict | None) -> None:
        env = self.env
        fenced_node = sd["node"]
        target = self._select(sid, cd, sd, best_scored=True)
        if target:
            if target == fenced_node:
                env.log(
                    "info",
                    f"recover service '{sid}' to previous failed and fenced node '{fenced_node}' "
                    "again",
                )
            else:
                env.log(
                    "info",
                    f"recover service '{sid}' from fenced node '{fenced_node}' to node '{target}'",
                )
            try:
                env.steal_service(sid, fenced_node, target)
            except ServiceLocationConflict as exc:
                self._recover_where_configured(sid, cd, sd, exc.actual)
                return
            sd["node"] = target
            if sid in self.sc:
                self.sc[sid]["node"] = target
            self._change(
                sid, "started" if cd["state"] == "started" else "request_stop", node=target
            )
            return
        env.log(
            "err",
            f"recovering service '{sid}' from fenced node '{fenced_node}' failed, "
            "no recovery node found",
        )
        if cd["state"] == "disabled":
            sd.pop("failed_nodes", None)
            self._change(sid, "stopped")

    def _recover_where_configured(self, sid: str, cd: dict, sd: dict, actual: str) -> None:
        """The config moved on before the fenced node failed (a finished migration or an
        earlier master's recovery): the service belongs where its config is. Start it
        there, or fence that node first when it is down too."""
        env, fenced_node = self.env, sd["node"]
        sd["node"] = actual
        if sid in self.sc:
            self.sc[sid]["node"] = actual
        if self.ns.is_operational(actual):
            env.log(
                "info",
                f"service '{sid}': config already on node '{actual}', not on fenced node "
                f"'{fenced_node}': recovering it there",
            )
            self._change(
                sid, "started" if cd["state"] == "started" else "request_stop", node=actual
            )
        else:
            env.log(
                "warning",
                f"service '{sid}': config already on node '{actual}', not on fenced node "
                f"'{fenced_node}', and '{actual}' is down too: fencing it first",
            )
            self._change(sid, "fence")

    def _next_error(self, sid: str, cd: dict, sd: dict, lrm_res: dict | None) -> None:
        if cd["state"] == "disabled":
            sd.pop("failed_nodes", None)
            self._change(sid, "stopped")

    _HANDLERS = {
        "request_start": _next_request_start,
        "queued": _next_request_start,
        "started": _next_started,
        "stopped": _next_stopped,
        "request_stop": _next_request_stop,
        "migrate": _next_migrate_relocate,
        "relocate": _next_migrate_relocate,
        "request_start_balance": _next_migrate_relocate,
        "recovery": _next_recovery,
        "error": _next_error,
    }
