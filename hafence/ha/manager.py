"""The master CRM's decision step: one :meth:`Manager.manage` call per round.

Pure logic over the :class:`~hafence.ha.env.Env`, a port of Proxmox's ``PVE::HA::Manager``:
it reads the service config, the node membership and every LRM's results, moves each
service through its state machine, fences dead nodes and recovers their services, and
writes the manager status that the LRMs act on. Service states
(``hafence.ha.state.SERVICE_STATES``)::

    request_start -> started <-> migrate/relocate     started -> request_stop -> stopped
    request_start -> request_start_balance -> started (a balanced start elsewhere)
    started/request_stop/stopped/migrate/relocate -> fence -> recovery -> started|request_stop
    started -> error (relocate policy exhausted) -> stopped (only via requested 'disabled')
    started/stopped/request_stop -> freeze (LRM restart/reboot) -> started|request_stop

Where a service goes is ``hafence.ha.select`` over the compiled rules (``hafence.ha.rules``,
groups included as rules) and the node usage (``hafence.ha.usage``); with the ``static``
or ``dynamic`` scheduler and ``ha-auto-rebalance`` on, the master also moves running
services to even out the cluster's load. HA groups are migrated to rules for good once
every node can read rules (Proxmox 9's upgrade path).

Safety rules this module enforces:

- a service of a node that is offline goes to ``fence`` and is only moved once
  :meth:`NodeStatus.fence_node` succeeded (hardware fence confirmed, when configured, and
  the node's agent lock acquired), never earlier, whatever the config says;
- every command to an LRM carries a fresh ``uid``; results of older uids are ignored, so a
  stale command can never be mistaken for the current one.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

from hafence.ha import rules as rl
from hafence.ha import state as st
from hafence.ha.env import Env, ServiceLocationConflict
from hafence.ha.nodestatus import NodeStatus
from hafence.ha.select import (
    apply_negative_resource_affinity,
    blocking_peers,
    get_node_affinity,
    get_resource_affinity,
    select_service_node,
)
from hafence.ha.statefile import StateFileError
from hafence.ha.usage import Usage, make_usage

_uid_counter = itertools.count()  # per process: two masters here never share a prefix


# what a disarm in mode 'freeze' freezes (anything else is left as it is)
_FREEZE_ON_DISARM = frozenset(
    {"started", "stopped", "request_stop", "request_start", "request_start_balance"}
)
# leftover guest locks that are safe to drop once the guest's node was fenced (reset)
REMOVABLE_LOCKS = (
    "backup",
    "mounted",
    "migrate",
    "clone",
    "rollback",
    "snapshot",
    "snapshot-delete",
    "suspending",
    "suspended",
)
GROUP_MIGRATION_COOLDOWN = 6  # rounds between two tries to migrate groups to rules


def service_type(sid: str) -> str:
    return sid.split(":", 1)[0]


def fenced_service_count(service_status: dict[str, Any], node: str) -> int:
    """Services of ``node`` waiting in ``fence``: while any exist, the node must not work."""
    return sum(
        1 for sd in service_status.values() if sd.get("node") == node and sd.get("state") == "fence"
    )


def active_service_count(service_status: dict[str, Any], node: str) -> int:
    """Services ``node`` runs or receives (Proxmox's ``count_active_services``)."""
    count = 0
    for sd in service_status.values():
        if sd.get("node") != node and sd.get("target") != node:
            continue
        if sd.get("state") in (None, "stopped", "freeze", "error", "request_start"):
            continue
        count += 1
    return count


def has_min_version(version: str, minimum: str) -> bool:
    """``9.0.0~16`` style versions (``~N`` a pre-release revision)."""
    pat = re.compile(r"^(\d+)\.(\d+)(?:\.|-)(\d+)(?:~(\d+))?")
    have, want = pat.match(version), pat.match(minimum)
    if have is None or want is None:
        return False
    a = [int(x) for x in have.groups()[:3]]
    b = [int(x) for x in want.groups()[:3]]
    if a != b:
        return a > b
    rev, min_rev = have.group(4), int(want.group(4) or 0)
    return rev is None or int(rev) >= min_rev


def _digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class GroupMigrationError(Exception):
    pass


class Manager:
    """State of the elected master: node status, service status, pending commands."""

    def __init__(self, env: Env, fence_delay: float | None = None) -> None:
        self.env = env
        # Every command's uid is this master's prefix (from its node, the time it took
        # over and a process-wide counter) and a sequence number: unique like a hash of
        # each command, without hashing 30,000 of them every round.
        self._uid_prefix = st.new_uid(env.nodename, env.get_time(), next(_uid_counter))[:12]
        self._uid_seq = itertools.count()
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
        self.compiled: rl.CompiledRules | None = None
        self.last_digests: tuple[str | None, ...] = ()
        self.usage = Usage(env, [])
        self.online: set[str] = set()  # the usage's nodes, as a set (this round)
        self.lrm_modes: dict[str, str] = {}  # each node's LRM mode, read every round
        self.errors: dict[str, str] = {}  # what failed last round -> its error (logged once)
        self._last_lrm: dict[str, dict[str, Any]] = {}  # each node's last good LRM status
        self.crs: dict[str, Any] = {"scheduler": None}
        # rounds the imbalance stayed above the threshold (not kept across masters: the
        # usage may have changed a lot meanwhile)
        self.sustained_imbalance_round = 0
        self.group_migration_round = 3  # wait a little first
        self.all_lrms_disarmed = False
        self.update_crs_scheduler_mode()

    # -- helpers -------------------------------------------------------------------------
    def _new_uid(self) -> str:
        return f"{self._uid_prefix}{next(self._uid_seq):x}"

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
        self.usage.remove_service_usage(sid)
        self.usage.add_service_usage(sid, sd)
        sd["uid"] = self._new_uid()
        suffix = f"  ({text})" if text else ""
        self.env.log(
            "info", f"service '{sid}': state changed from '{old_state}' to '{new_state}'{suffix}"
        )

    def update_crs_scheduler_mode(self) -> None:
        crs = self.env.crs_options() or {}
        self.crs["rebalance_on_request_start"] = bool(crs.get("ha-rebalance-on-start"))
        self.crs["auto_rebalance"] = {
            "enable": bool(crs.get("ha-auto-rebalance")),
            "threshold": float(crs.get("ha-auto-rebalance-threshold", 0.3)),
            "method": crs.get("ha-auto-rebalance-method") or "bruteforce",
            "hold_duration": int(crs.get("ha-auto-rebalance-hold-duration", 3)),
            "margin": float(crs.get("ha-auto-rebalance-margin", 0.1)),
        }
        old, new = self.crs["scheduler"], crs.get("ha") or "basic"
        if old is None:
            if new != "basic":
                self.env.log("info", f"using scheduler mode '{new}'")
        elif new == old:
            return
        else:
            self.env.log("info", f"switching scheduler mode from '{old}' to '{new}'")
        self.crs["scheduler"] = new

    def recompute_online_node_usage(self) -> None:
        online = self.ns.online_nodes()
        usage, service_stats = make_usage(self.env, self.crs["scheduler"], online)
        ss, add = self.ss, usage.add_service_usage
        for sid in sorted(ss):
            add(sid, ss[sid])
        # resources HA does not manage load nodes too (their target is not known)
        for sid in sorted(service_stats.keys() - ss.keys()):
            stats = service_stats[sid]
            add(sid, {k: stats.get(k) for k in ("node", "state", "running")})
        self.usage = usage
        self.online = set(usage.list_nodes())

    def _select(self, sid: str, cd: dict[str, Any], preference: str) -> str | None:
        c = self.compiled
        assert c is not None
        if (
            preference == "none"
            and sid not in c.node_affinity
            and sid not in c.positive
            and sid not in c.negative
        ):
            # select_service_node's answer without rules, without its cost for every
            # service every round: stay, or go back to the maintenance fallback
            sd, online = self.ss[sid], self.online
            current, fallback = sd.get("node"), sd.get("maintenance_node")
            if online and not cd.get("failback", True) and current in online:
                return current
            if fallback is not None and fallback in online:
                return fallback
            if current in online:
                return current
        return select_service_node(
            self.compiled, self.usage, sid, cd, self.ss, preference, self.online
        )

    def _read_lrm_status(self) -> tuple[dict[str, Any], dict[str, str]]:
        results: dict[str, Any] = {}
        modes: dict[str, str] = {}
        reports: list[dict[str, Any]] = []
        for node in self.ns.nodes():
            what = f"lrm status of node '{node}'"
            try:
                lrm = self._last_lrm[node] = self.env.read_lrm_status(node) or {}
                self._error_gone(what)
            except StateFileError as exc:  # its LRM rewrites it every round
                self._error_once(what, f"{what}: {exc}; using its last good version")
                lrm = self._last_lrm.get(node, {})
            modes[node] = lrm.get("mode") or "active"
            reports.append(lrm.get("results") or {})
        for res in reversed(reports):  # a uid two LRMs report: the first node's result
            results.update(res)
        self.lrm_modes = modes
        return results, modes

    # -- rules ---------------------------------------------------------------------------
    def _update_rules(self, sc: dict[str, Any], has_changed_nodelist: bool) -> None:
        """Compile the rules again when they, the groups, the services or the nodes
        changed; every rule dropped as infeasible is logged with the reason."""
        raw = self.env.read_rules()
        digests = (
            _digest(raw),
            _digest(self.groups),
            self.env.service_config_digest(sc),
        )
        rl.migrate_groups_to_resources(self.groups, sc)
        changed = digests[:2] != self.last_digests[:2] or (
            digests[2] is not None and digests[2] != self.last_digests[2]
        )
        if self.compiled is not None and not has_changed_nodelist and not changed:
            return
        rules = rl.RuleSet.from_config(raw)
        rl.migrate_groups_to_rules(rules, self.groups, sc)
        nodes = self.ns.nodes()
        for msg in rl.transform(rules, nodes):
            self.env.log("info", msg)
        self.compiled = rl.compile_rules(rules, nodes)
        self.last_digests = digests

    def _have_groups_been_migrated(self) -> bool:
        return not self.env.read_groups()

    def _assert_cluster_can_migrate_groups(self) -> None:
        env, ns = self.env, self.ns
        minimum = env.rules_min_version
        if not env.quorate():
            raise GroupMigrationError("cluster is not quorate")
        nodes = ns.nodes()
        if not nodes:
            raise GroupMigrationError("node list is empty")
        for node in nodes:
            state = ns.get(node)
            env.log("notice", f"ha groups migration: node '{node}' is in state '{state}'")
            if state != "online":
                raise GroupMigrationError(f"node '{node}' is not online")
            lrm = env.read_lrm_status(node) or {}
            lrm_state, lrm_mode = lrm.get("state"), lrm.get("mode")
            if not lrm_state or not lrm_mode:
                raise GroupMigrationError(f"could not retrieve state for lrm '{node}'")
            env.log(
                "notice",
                f"ha groups migration: lrm '{node}' is in state '{lrm_state}' and mode "
                f"'{lrm_mode}'",
            )
            idle = lrm_state == "wait_for_agent_lock" and not active_service_count(self.ss, node)
            if lrm_state != "active" and not idle:
                raise GroupMigrationError(f"lrm '{node}' is not in state 'active' or 'idle'")
            if lrm_mode != "active":
                raise GroupMigrationError(f"lrm '{node}' is not in mode 'active'")
            version = env.get_node_version(node)
            if not version:
                raise GroupMigrationError(f"could not retrieve version from node '{node}'")
            env.log("notice", f"ha groups migration: node '{node}' has version '{version}'")
            if not has_min_version(version, minimum):
                raise GroupMigrationError(
                    f"node '{node}' needs at least {env.version_name} version '{minimum}'"
                )

    def _migrate_groups_persistently(self) -> bool:
        env = self.env
        try:
            self._assert_cluster_can_migrate_groups()
            resources = env.read_service_config()
            groups = env.read_groups()
            rules = rl.RuleSet.from_config(env.read_rules())
            # the rules first: an admin can edit the migrated rules whatever happens next
            rl.migrate_groups_to_rules(rules, groups, resources)
            env.write_rules(rules.to_config())
            env.log("notice", "ha groups migration: migration to rules config successful")
            rl.migrate_groups_to_resources(groups, resources)
            changes = {}
            for sid, cd in resources.items():
                if cd.get("group"):
                    change: dict[str, Any] = {"group": None}
                    if not cd.get("failback", True):
                        change["failback"] = False
                    changes[sid] = change
            env.update_service_configs(changes)
            env.log("notice", "ha groups migration: migration to resources config successful")
            env.delete_groups()
            env.log("notice", "ha groups migration: group config deletion successful")
        except Exception as exc:
            env.log("err", f"abort ha groups migration: {exc}")
            return False
        return True

    def try_persistent_group_migration(self) -> None:
        """Move HA groups into rules for good once every node reads rules."""
        if self._have_groups_been_migrated():
            return
        self.group_migration_round -= 1
        if self.group_migration_round > 0:
            return
        self.group_migration_round = GROUP_MIGRATION_COOLDOWN
        env = self.env
        env.log("notice", "start ha group migration...")
        if self._migrate_groups_persistently():
            env.log("notice", "ha groups migration successful")
        else:
            env.log("err", "ha groups migration failed")
            env.log(
                "notice",
                f"retry ha groups migration in {GROUP_MIGRATION_COOLDOWN} rounds (~ "
                f"{GROUP_MIGRATION_COOLDOWN * 10} seconds)",
            )

    # -- auto-rebalancing ----------------------------------------------------------------
    def _stationary_bundles(self) -> dict[str, list[str]]:
        """Running, non-moving services with their positive peers on the same node, by
        the bundle's first service id."""
        assert self.compiled is not None
        ss = self.ss
        bundles: dict[str, list[str]] = {}
        for sid in sorted(ss):
            if ss[sid]["state"] != "started":
                continue
            members = [sid]
            nodes = {ss[sid]["node"]}
            positive, _ = self.compiled.affinitive(sid)
            moving = False
            for csid in positive:
                csd = ss.get(csid)
                if csd is None:
                    continue
                if csd["state"] in ("migrate", "relocate"):
                    moving = True
                    break
                if csd["state"] != "started":
                    continue
                nodes.add(csd["node"])
                members.append(csid)
            if moving or len(nodes) > 1:
                continue
            members.sort()
            bundles[members[0]] = members
        return bundles

    def _migration_candidates(self) -> list[dict[str, Any]]:
        assert self.compiled is not None
        out = []
        bundles = self._stationary_bundles()
        for leader in sorted(bundles):
            current = self.ss[leader]["node"]
            _, targets = get_node_affinity(self.compiled, leader, self.online)
            targets = set(targets)
            _, separate = get_resource_affinity(self.compiled, leader, self.ss, self.online)
            apply_negative_resource_affinity(separate, targets)
            targets.discard(current)
            if targets:
                out.append(
                    {"leader": leader, "nodes": sorted(targets), "resources": bundles[leader]}
                )
        return out

    def _any_motion_queued_or_running(self) -> bool:
        for sd in self.ss.values():
            if sd["state"] in ("migrate", "relocate"):
                return True
            cmd = sd.get("cmd")
            if cmd and cmd[0] in ("migrate", "relocate"):
                return True
        return False

    def load_balance(self) -> None:
        """Queue the move that evens the cluster's load out most, once the imbalance
        stayed above the threshold for ``hold_duration`` rounds and the move improves it
        by at least ``margin`` (relative)."""
        opts = self.crs["auto_rebalance"]
        if not opts["enable"] or self.crs["scheduler"] not in ("static", "dynamic"):
            return
        if self._any_motion_queued_or_running():
            return
        imbalance = self.usage.calculate_node_imbalance()
        # '<=': a perfectly balanced cluster never triggers
        if imbalance <= opts["threshold"]:
            self.sustained_imbalance_round = 0
            return
        self.sustained_imbalance_round += 1
        if self.sustained_imbalance_round < opts["hold_duration"]:
            return
        self.sustained_imbalance_round = 0
        method = opts["method"]
        if method not in ("bruteforce", "topsis"):
            return
        best = self.usage.select_best_balancing_migration(
            self._migration_candidates(), topsis=method == "topsis"
        )
        if best is None:
            return
        if (imbalance - best.imbalance) / imbalance < opts["margin"]:
            return
        mig = best.migration
        task = "migrate" if service_type(mig.sid) == "vm" else "relocate"
        self.env.log(
            "info",
            f"auto rebalance - {task} {mig.sid} to {mig.target} (expected change for imbalance "
            f"from {imbalance:.2f} to {best.imbalance:.2f})",
        )
        self._queue_resource_motion(f"{task} {mig.sid} {mig.target}", task, mig.sid, mig.target)

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
                self._queue_resource_motion(line, cmd, sid, node)
        elif cmd == "stop":
            sid, timeout = args
            if ss.get(sid) is None:
                env.log("err", f"crm command error - no such service: {line}")
            else:
                env.log("info", f"got crm command: {line}")
                ss[sid]["cmd"] = ["stop", int(timeout)]
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
            if disarm.get("mode") == "ignore":
                # services an admin may have moved by hand while HA looked away
                sc = env.read_service_config()
                for sid in sorted(ss):
                    cd = sc.get(sid)
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

    def _queue_resource_motion(self, line: str, task: str, sid: str, target: str) -> None:
        """A migrate/relocate, checked against resource-affinity rules: refused onto a
        node a negative peer uses; positive peers move along."""
        assert self.compiled is not None
        env, ss = self.env, self.ss
        for csid in blocking_peers(self.compiled, sid, ss, target)[:1]:  # one is enough
            env.log(
                "err",
                f"crm command '{line}' error - service '{csid}' on node '{target}' in "
                f"negative affinity with service '{sid}'",
            )
            return
        together = self.compiled.affinitive(sid)[0]
        env.log("info", f"got crm command: {line}")
        ss[sid]["cmd"] = [task, target]
        for csid in sorted(together):
            csd = ss.get(csid)
            if csd is None or csd.get("state") == "ignored":
                continue
            if csd.get("node") == target or csd.get("target") == target:
                continue
            env.log(
                "info",
                f"crm command '{line}' - {task} service '{csid}' to node '{target}' (service "
                f"'{csid}' in positive affinity with service '{sid}')",
            )
            csd["cmd"] = [task, target]

    # -- the round -----------------------------------------------------------------------
    def manage(self) -> None:
        env, ns, ss = self.env, self.ns, self.ss
        node_info = env.get_node_info()
        has_changed_nodelist = ns.check_for_changed_nodelist(node_info)
        lrm_results, lrm_modes = self._read_lrm_status()
        ns.update(node_info, lrm_modes)
        if not ns.is_operational(env.nodename):
            env.log("info", "master seems offline")
            return
        self.update_crs_scheduler_mode()
        self.try_persistent_group_migration()
        self.sc = sc = env.read_service_config()
        self.groups = env.read_groups()

        # a disarmed stack adds and drops nothing: handle_disarm owns the service status
        if not self.ms.get("disarm"):
            for sid in sorted(sc.keys() - ss.keys()):
                cd = sc[sid]
                if cd.get("state") == "ignored":
                    continue
                env.log("info", f"adding new service '{sid}' on node '{cd['node']}'")
                # assume it runs: a running service is not relocated when it is added
                state = "request_start" if cd.get("state") == "started" else "request_stop"
                ss[sid] = {
                    "state": state,
                    "node": cd["node"],
                    "uid": self._new_uid(),
                }
            stale = [sid for sid in ss if sid not in sc or sc[sid].get("state") == "ignored"]
            for sid in sorted(stale):
                cd = sc.get(sid)
                reason = "ignored state requested" if cd is not None else "no config"
                env.log("info", f"removing stale service '{sid}' ({reason})")
                del ss[sid]

        self.recompute_online_node_usage()
        self._update_rules(sc, has_changed_nodelist)
        self._update_crm_commands()

        deferred: set[str] | None = None
        if self.ms.get("disarm"):
            deferred = self._handle_disarm(lrm_modes)
            if deferred is None:  # disarm in effect: no service changes at all
                return
        else:
            # no new migrations while a disarm waits for the transitions in flight
            self.load_balance()
        self.all_lrms_disarmed = False

        while True:
            repeat = False
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
            for sid in sorted(sid for sid, sd in ss.items() if sd["state"] == "fence"):
                sd = ss[sid]
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
        uid = sd.get("uid")
        lrm_res = lrm_results.get(uid) if uid else None
        last = sd["state"]
        handler = self._HANDLERS.get(last)
        if handler is not None:
            handler(self, sid, cd, sd, lrm_res)
        elif last == "freeze":
            if lrm_modes.get(sd.get("node") or "") == "active":  # unfreeze when active again
                self._change(sid, "started" if cd["state"] == "started" else "request_stop")
        elif last != "fence":  # fence: wait until the node is fenced
            self.env.log("err", f"service '{sid}': unknown service state '{last}'")
        if lrm_modes.get(sd.get("node") or "") == "restart" and sd["state"] in (
            "started",
            "stopped",
            "request_stop",
        ):
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
                ss[sid] = {"state": state, "node": cd["node"], "uid": self._new_uid()}
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

    def _handle_disarm(self, lrm_modes: dict[str, str]) -> set[str] | None:
        """Advance a requested disarm (Proxmox's ``handle_disarm``).

        While services are in fence, recovery, migrate or relocate it waits and returns
        them: their transitions must finish with the watchdogs still armed. Then it
        freezes (mode freeze) or stops tracking (mode ignore) every service, and the stack
        is fully disarmed once every online node's LRM is in disarm mode; None: skip the
        service steps (the status is written here).
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
        # runtime data (failed_nodes, cmd, target ...) dies with the disarm, so the state
        # machine starts fresh when re-armed; a service keeps where to go back to after
        # maintenance
        keep = ("state", "node", "uid", "maintenance_node")
        for sid in sorted(ss):
            sd = ss[sid]
            if mode == "freeze":
                if sd["state"] not in _FREEZE_ON_DISARM:
                    continue
                env.log("info", f"disarm: freezing service '{sid}' (was '{sd['state']}')")
                for key in [k for k in sd if k not in keep]:
                    del sd[key]
                sd["state"] = "freeze"
                sd["uid"] = self._new_uid()
            else:
                for key in [k for k in sd if k not in keep]:
                    del sd[key]
        all_disarmed = all(lrm_modes.get(n, "unknown") == "disarm" for n in self.ns.online_nodes())
        if all_disarmed and disarm["state"] != "disarmed":
            env.log("info", "all LRMs disarmed, HA stack is now fully disarmed")
            disarm["state"] = "disarmed"
        # once disarmed it stays so: a node coming back catches up within a round
        self.all_lrms_disarmed = disarm["state"] == "disarmed"
        self.flush()
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
        return True

    def _next_request_start(self, sid: str, cd: dict, sd: dict, lrm_res: dict | None) -> None:
        node = sd["node"]
        if self.crs["rebalance_on_request_start"]:
            target = self._select(sid, cd, "best-score")
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
            else:
                env.log("err", f"unknown command '{cmd[0]}' for service '{sid}'")
        if cd["state"] == "disabled":
            # the LRM keeps it stopped (also without a master); no result to wait for
            return
        if ns.offline_delayed(sd["node"]) and ns.get(sd["node"]) != "maintenance":
            self._change(sid, "fence")
            return
        if cd["state"] == "stopped":
            return  # like 'disabled', but it gets recovered
        if cd["state"] == "started":
            # next_started moves it when it is on the wrong node
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
            if code == st.EWRONG_NODE:
                self.env.log(
                    "err", f"service '{sid}' - migration failed: service registered on wrong node!"
                )
                self._change(sid, "error")
            elif code == st.IGNORED:
                self.env.log(
                    "info",
                    f"service '{sid}' - rebalance-on-start request ignored - service already "
                    "running",
                )
                self._change(sid, req_state, node=sd["node"])
            else:
                self.env.log("err", f"service '{sid}' - migration failed (exit code {code})")
                self._change(sid, req_state, node=sd["node"])
                return
        if self.ns.offline_delayed(sd["node"]):
            self._change(sid, "fence")

    def _next_started(self, sid: str, cd: dict, sd: dict, lrm_res: dict | None) -> None:
        env, ns = self.env, self.ns
        node = sd["node"]
        if ns.status.get(node) != "online":  # ns.is_online, inline: every service, every round
            if ns.offline_delayed(node):
                self._change(sid, "fence")
            if ns.get(node) != "maintenance":
                return
            # remember where to move back once maintenance ends
            sd["maintenance_node"] = node
        want = cd["state"]
        if want in ("disabled", "stopped"):
            self._change(sid, "request_stop")
            return
        if want != "started":
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
            else:
                env.log("err", f"unknown command '{cmd[0]}' for service '{sid}'")
            return

        preference = "none"
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
                sd["running"] = 1  # a successful start, valid while 'started'
            elif code in (st.ERROR, st.EWRONG_NODE):
                sd.pop("running", None)
                sd.setdefault("failed_nodes", []).append(node)
                if len(sd["failed_nodes"]) <= int(cd.get("max_relocate", 1)):
                    preference = "try-next"
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
                sd.setdefault("failed_nodes", []).append(node)
                env.log("err", f"service '{sid}' got unrecoverable error (exit code {code})")
                self._change(sid, "error")
                return

        target = self._select(sid, cd, preference)
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
        if preference == "try-next" and target is None:
            env.log(
                "warning",
                f"Start Error Recovery: Tried all available nodes for service '{sid}', retry "
                f"start on current node. Tried nodes: {', '.join(sd.get('failed_nodes') or [])}",
            )
        if sd.get("maintenance_node") and sd["maintenance_node"] == node and ns.is_online(node):
            # it never ran elsewhere since (the whole cluster went down with the 'migrate'
            # policy): the node is out of maintenance and runs it, so that is stale
            env.log(
                "info",
                f"service '{sid}': clearing stale maintenance node '{node}' setting (is current "
                "node)",
            )
            sd.pop("maintenance_node", None)
        if lrm_res is not None:
            # a new uid makes the LRM check (and restart) the service again
            sd["uid"] = self._new_uid()

    def _fence_recovery_cleanup(self, sid: str, fenced_node: str) -> None:
        """Drop a leftover guest lock that would block the start: the guest's node was
        reset, so whatever held the lock (a backup, a migration ...) is gone."""
        rtype, _, rid = sid.partition(":")
        plugin = self.env.resource_types().get(rtype)
        if plugin is None:
            raise ValueError(f"unknown resource type '{rtype}'")
        removed = plugin.remove_locks(rid, REMOVABLE_LOCKS, fenced_node)
        if removed:
            self.env.log(
                "warning",
                f"removed leftover lock '{removed}' from recovered service '{sid}' to allow "
                "its start.",
            )

    def _next_recovery(self, sid: str, cd: dict, sd: dict, lrm_res: dict | None) -> None:
        env = self.env
        fenced_node = sd["node"]
        target = self._select(sid, cd, "best-score")
        if target:
            if target == fenced_node:
                # a strict rule and the node came back fine
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
            self._fence_recovery_cleanup(sid, fenced_node)
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
        # no node now, but recovery is retried every round: it must become available
        env.log(
            "err",
            f"recovering service '{sid}' from fenced node '{fenced_node}' failed, "
            "no recovery node found",
        )
        if cd["state"] == "disabled":
            # an admin may take it out of recovery by disabling it (never via request_stop)
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
        "queued": _next_request_start,  # an old name of request_start, in old status files
        "started": _next_started,
        "stopped": _next_stopped,
        "request_stop": _next_request_stop,
        "migrate": _next_migrate_relocate,
        "relocate": _next_migrate_relocate,
        "request_start_balance": _next_migrate_relocate,
        "recovery": _next_recovery,
        "error": _next_error,
    }
