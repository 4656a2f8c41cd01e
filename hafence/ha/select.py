"""Where a service may run and which node is best: node affinity, usage, selection.

Pure functions over plain data; the CRM (``hafence.ha.manager``) calls them.

Node affinity comes from an HA group (``groups.cfg``: ``nodes node1:2,node2``,
``restricted``, ``nofailback``) or from a Proxmox 9 ``node-affinity`` rule (``nodes``,
``strict``, ``resources``); both reduce to :class:`Affinity`. Priorities: a higher number
wins; nodes outside an unrestricted (non-strict) affinity get priority -1, so a service can
always run somewhere while its preferred nodes are down; a restricted (strict) one never
leaves its nodes.

Usage is the basic scheduler's: how many services a node carries (a service being migrated
counts on both ends). Among the online nodes of the highest priority present, the least
loaded wins, ties broken by node name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_MOVING = frozenset({"migrate", "relocate", "request_start_balance"})
# Service states that put load on the service's node.
_LOADED_STATES = frozenset(
    {"started", "request_stop", "fence", "freeze", "error", "recovery", "starting", "stopping"}
)


@dataclass
class Affinity:
    """Where a service may run: ``nodes`` maps node -> priority; ``strict`` = restricted.

    ``together`` / ``separate``: how many positively / negatively affine services use
    each node (resource-affinity rules); a service goes where most of its positive peers
    are, never where a negative peer is.
    """

    nodes: dict[str, int] = field(default_factory=dict)
    strict: bool = False
    failback: bool = True
    together: dict[str, int] = field(default_factory=dict)
    separate: dict[str, int] = field(default_factory=dict)


def parse_node_list(spec: str | Iterable[str] | Mapping[str, int]) -> dict[str, int]:
    """``"node1:2,node2"`` (or a list of such entries, or a mapping) -> ``{node: prio}``."""
    if isinstance(spec, Mapping):
        return {str(k): int(v) for k, v in spec.items()}
    entries = spec.split(",") if isinstance(spec, str) else list(spec)
    out: dict[str, int] = {}
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        node, _, prio = entry.partition(":")
        out[node] = int(prio) if prio else 0
    return out


def service_affinity(
    sid: str,
    conf: Mapping[str, Any],
    groups: Mapping[str, Mapping[str, Any]],
    rules: Mapping[str, Mapping[str, Any]] | None = None,
) -> Affinity:
    """The affinity of one service: its group, else a node-affinity rule naming it.

    ``conf["failback"]`` (default true) and a group's ``nofailback`` both decide failback.
    """
    failback = bool(conf.get("failback", True))
    group_name = conf.get("group")
    if group_name and group_name in groups:
        g = groups[group_name]
        return Affinity(
            nodes=parse_node_list(g.get("nodes") or {}),
            strict=bool(g.get("restricted")),
            failback=failback and not g.get("nofailback"),
        )
    if not rules:
        return Affinity(nodes={}, strict=False, failback=failback)
    # members of a positive resource-affinity group share a node-affinity rule
    group = [sid, *affinity_peers(sid, rules)[0]]
    for rule in (rules or {}).values():
        if rule.get("type", "node-affinity") != "node-affinity" or rule.get("disable"):
            continue
        if any(s in _as_list(rule.get("resources")) for s in group):
            return Affinity(
                nodes=parse_node_list(rule.get("nodes") or {}),
                strict=bool(int(rule.get("strict", 0) or 0)),
                failback=failback,
            )
    return Affinity(nodes={}, strict=False, failback=failback)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


class NodeUsage:
    """Online nodes and how many services each carries (the basic scheduler).

    Each service's load is kept per service, so one service's change is one
    :meth:`set_service` (the master's round stays linear in the number of services).
    """

    mode = "basic"

    def __init__(self, online_nodes: Iterable[str]) -> None:
        self._usage: dict[str, int] = {n: 0 for n in online_nodes}
        self._loads: dict[str, list[str]] = {}  # sid -> the nodes it loads
        self._groups: dict[tuple[Any, ...], dict[int, set[str]]] = {}  # priority_groups cache

    def contains(self, node: str | None) -> bool:
        return node is not None and node in self._usage

    def nodes(self) -> list[str]:
        return sorted(self._usage)

    def add(self, node: str | None, sid: str = "") -> None:
        if node in self._usage:
            self._usage[node] += 1

    def remove(self, node: str, sid: str = "") -> None:
        self._usage[node] -= 1

    def scores(self, sid: str) -> dict[str, float]:
        """Lower is better: where ``sid`` would best start."""
        return {n: float(c) for n, c in self._usage.items()}

    def loaded_nodes(self, sd: Mapping[str, Any]) -> list[str]:
        """The online nodes a service in this state loads (a moving one: both ends)."""
        state, node, target = sd.get("state"), sd.get("node"), sd.get("target")
        if self.contains(node):
            if state in _LOADED_STATES:
                return [node]  # type: ignore[list-item]
            if state in ("migrate", "relocate"):
                return [node, target] if self.contains(target) else [node]  # type: ignore[list-item]
            if state == "request_start_balance":
                return [target] if self.contains(target) else []  # not running yet
            return []
        return [target] if state in _MOVING and self.contains(target) else []  # type: ignore[list-item]

    def set_service(self, sid: str, sd: Mapping[str, Any] | None) -> None:
        """Account for ``sid`` as ``sd`` says now (None: it is gone)."""
        for node in self._loads.pop(sid, ()):
            self.remove(node, sid)
        if sd is None:
            return
        loads = self.loaded_nodes(sd)
        for node in loads:
            self.add(node, sid)
        if loads:
            self._loads[sid] = loads

    def fill(self, service_status: Mapping[str, Mapping[str, Any]]) -> NodeUsage:
        """Count every service's load, as its state implies."""
        for sid in sorted(service_status):
            self.set_service(sid, service_status[sid])
        return self

    @classmethod
    def from_service_status(
        cls, online_nodes: Iterable[str], service_status: Mapping[str, Mapping[str, Any]]
    ) -> NodeUsage:
        return cls(online_nodes).fill(service_status)


# Proxmox's static scheduler criteria (all "lower is better"), weights normalised below.
_TOPSIS_WEIGHTS = (1.0, 2.0, 5.0, 10.0)  # average CPU, highest CPU, average mem, highest mem


class StaticUsage(NodeUsage):
    """The ``static`` scheduler: nodes' CPUs/memory against services' configured maxima.

    A candidate node is judged by the cluster it would leave behind (average and highest
    CPU and memory commitment, relative to each node's size) with TOPSIS; memory weighs
    most. ``maxcpu`` 0 means "all the node's CPUs".
    """

    mode = "static"

    def __init__(
        self,
        online_nodes: Iterable[str],
        node_stats: Mapping[str, Mapping[str, Any]],
        service_stats: Mapping[str, Mapping[str, Any]],
    ) -> None:
        super().__init__(online_nodes)
        self.node_stats = node_stats
        self.service_stats = service_stats
        self.cpu: dict[str, float] = {n: 0.0 for n in self._usage}
        self.mem: dict[str, float] = {n: 0.0 for n in self._usage}
        for n in self._usage:
            stats = node_stats.get(n) or {}
            if not stats.get("maxcpu") or not stats.get("maxmem"):
                raise ValueError(f"no static stats (maxcpu, maxmem) for node '{n}'")

    def _service(self, sid: str) -> tuple[float, float]:
        st = self.service_stats.get(sid) or {}
        return float(st.get("maxcpu", 0) or 0), float(st.get("maxmem", 0) or 0)

    def _add_cpu(self, node: str, cpu: float) -> float:
        return self.cpu[node] + (cpu if cpu else float(self.node_stats[node]["maxcpu"]))

    def add(self, node: str | None, sid: str = "") -> None:
        if node in self._usage:
            super().add(node, sid)
            cpu, mem = self._service(sid)
            self.cpu[node] = self._add_cpu(node, cpu)
            self.mem[node] += mem

    def remove(self, node: str, sid: str = "") -> None:
        super().remove(node, sid)
        cpu, mem = self._service(sid)
        self.cpu[node] -= self._add_cpu(node, cpu) - self.cpu[node]
        self.mem[node] -= mem

    def scores(self, sid: str) -> dict[str, float]:
        nodes = self.nodes()
        cpu, mem = self._service(sid)
        rows = []
        for target in nodes:
            cpus, mems = [], []
            for n in nodes:
                c = self._add_cpu(n, cpu) if n == target else self.cpu[n]
                m = self.mem[n] + mem if n == target else self.mem[n]
                cpus.append(c / float(self.node_stats[n]["maxcpu"]))
                mems.append(m / float(self.node_stats[n]["maxmem"]))
            k = len(nodes)
            rows.append(
                [
                    1.0 + (sum(x * x for x in cpus) / k) ** 0.5,
                    1.0 + max(cpus),
                    1.0 + (sum(x * x for x in mems) / k) ** 0.5,
                    1.0 + max(mems),
                ]
            )
        return {n: -s for n, s in zip(nodes, _topsis(rows, _TOPSIS_WEIGHTS), strict=True)}


class DynamicUsage(StaticUsage):
    """The ``dynamic`` scheduler: like ``static``, but with what services really use
    (``cpu`` in cores, ``mem`` in bytes) instead of their configured maxima."""

    mode = "dynamic"

    def __init__(
        self,
        online_nodes: Iterable[str],
        node_stats: Mapping[str, Mapping[str, Any]],
        service_stats: Mapping[str, Mapping[str, Any]],
        dynamic_stats: Mapping[str, Mapping[str, Any]],
    ) -> None:
        super().__init__(online_nodes, node_stats, service_stats)
        self.dynamic_stats = dynamic_stats

    def _service(self, sid: str) -> tuple[float, float]:
        dyn = self.dynamic_stats.get(sid)
        if dyn is None:  # no live figures yet: assume the configured maxima
            return super()._service(sid)
        return float(dyn.get("cpu", 0) or 0), float(dyn.get("mem", 0) or 0)

    def _add_cpu(self, node: str, cpu: float) -> float:
        return self.cpu[node] + cpu


def _topsis(rows: list[list[float]], weights: tuple[float, ...]) -> list[float]:
    """TOPSIS closeness to the ideal for criteria that are all "lower is better"."""
    if not rows:
        return []
    total = sum(weights)
    cols = range(len(weights))
    norms = [sum(r[j] ** 2 for r in rows) ** 0.5 for j in cols]
    w = [[(r[j] / norms[j] if norms[j] else 0.0) * weights[j] / total for j in cols] for r in rows]
    best = [min(r[j] for r in w) for j in cols]
    worst = [max(r[j] for r in w) for j in cols]
    out = []
    for r in w:
        d_best = sum((r[j] - best[j]) ** 2 for j in cols) ** 0.5
        d_worst = sum((r[j] - worst[j]) ** 2 for j in cols) ** 0.5
        out.append(d_worst / (d_best + d_worst) if d_best + d_worst else 0.0)
    return out


def priority_groups(affinity: Affinity, usage: NodeUsage) -> dict[int, set[str]]:
    """Online nodes by priority; non-members at -1 unless the affinity is strict.

    Computed once per node affinity and round (the usage's node set is the round's); the
    caller must not change the sets it gets."""
    key = (tuple(sorted(affinity.nodes.items())), affinity.strict)
    groups = usage._groups.get(key)
    if groups is None:
        groups = usage._groups[key] = _priority_groups(affinity, usage)
    return groups


def _priority_groups(affinity: Affinity, usage: NodeUsage) -> dict[int, set[str]]:
    groups: dict[int, set[str]] = {}
    members: set[str] = set()
    if affinity.nodes:
        for node, prio in affinity.nodes.items():
            if usage.contains(node):
                groups.setdefault(prio, set()).add(node)
                members.add(node)
        if not affinity.strict:
            for node in usage.nodes():
                if node not in members:
                    groups.setdefault(-1, set()).add(node)
    else:
        # no affinity: every online node, one priority
        for node in usage.nodes():
            groups.setdefault(0, set()).add(node)
    return groups


def select_service_node(
    affinity: Affinity,
    usage: NodeUsage,
    current_node: str,
    *,
    sid: str = "",
    try_next: bool = False,
    tried_nodes: Iterable[str] = (),
    maintenance_fallback: str | None = None,
    best_scored: bool = False,
    running: bool = False,
    avoid: Iterable[str] = (),
) -> str | None:
    """The node a service should run on, or None when no node qualifies.

    - ``avoid``: nodes that may keep the service when it is on one of them, but never
      receive it (their LRM shuts down).

    - ``try_next``: the start failed on ``current_node``; skip ``tried_nodes`` and prefer
      another node (relocate policy).
    - ``best_scored``: ignore the current node's stickiness (recovery of a fenced node).
    - without either, a service stays where it is while that node is among the best
      priority, or anywhere in its affinity when failback is off.
    """
    groups = priority_groups(affinity, usage)
    shun = set(avoid) - {current_node}
    if shun:
        groups = {p: g - shun for p, g in groups.items() if g - shun}
    sticky = not try_next and not best_scored
    # a service already running keeps its node against negative peers: the newcomer moves
    keep = running and sticky and bool(groups) and current_node in groups[max(groups)]
    if affinity.separate:
        groups = {p: g - set(affinity.separate) for p, g in groups.items()}
        groups = {p: g for p, g in groups.items() if g}
    if not groups:
        return None
    if sticky and not affinity.failback and any(current_node in g for g in groups.values()):
        return current_node
    top = groups[max(groups)]
    together = {n: c for n, c in affinity.together.items() if n in top}
    if together:  # peers on the best allowed nodes pull it to where most of them are
        most = max(together.values())
        top = {n for n in top if together.get(n) == most}
    if try_next:
        top = top - set(tried_nodes)
    if maintenance_fallback is not None and maintenance_fallback in top:
        return maintenance_fallback
    if (sticky and current_node in top) or keep:
        return current_node
    scores = usage.scores(sid)
    ordered = sorted(top, key=lambda n: (scores.get(n, 0.0), n))
    if not ordered:
        return None
    if try_next and not best_scored and current_node in ordered:
        i = ordered.index(current_node)
        if i < len(ordered) - 1:
            return ordered[i + 1]
    return ordered[0]


# -- resource affinity (Proxmox 9 'resource-affinity' rules) ------------------------------
def affinity_peers(sid: str, rules: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """``(positive, negative)`` peers of ``sid``: positive rules chain (a~b, b~c: a~c)."""
    positive: set[str] = {sid}
    grew = True
    while grew:
        grew = False
        for rule in rules.values():
            if rule.get("type") != "resource-affinity" or rule.get("disable"):
                continue
            members = set(_as_list(rule.get("resources")))
            if rule.get("affinity") == "positive" and members & positive and members - positive:
                positive |= members
                grew = True
    negative: set[str] = set()
    for rule in rules.values():
        if rule.get("type") != "resource-affinity" or rule.get("disable"):
            continue
        members = set(_as_list(rule.get("resources")))
        if rule.get("affinity") == "negative" and members & positive:
            negative |= members - positive
    return sorted(positive - {sid}), sorted(negative)


def used_nodes(sd: Mapping[str, Any]) -> list[str]:
    """The nodes a service occupies now (a moving service occupies both ends)."""
    state, node, target = sd.get("state"), sd.get("node"), sd.get("target")
    if state in ("migrate", "relocate"):
        return [n for n in (node, target) if n]
    if state == "request_start_balance":
        return [target] if target else []
    if state in ("started", "starting", "request_stop", "stopping", "freeze", "error"):
        return [node] if node else []
    return []  # stopped, request_start, fence, recovery: nowhere (yet)


def resource_affinity(
    sid: str,
    rules: Mapping[str, Mapping[str, Any]],
    service_status: Mapping[str, Mapping[str, Any]],
    usage: NodeUsage,
) -> tuple[dict[str, int], dict[str, int]]:
    """``(together, separate)`` node counts for ``sid`` among the online nodes."""
    positive, negative = affinity_peers(sid, rules)
    together: dict[str, int] = {}
    separate: dict[str, int] = {}
    for peers, out in ((positive, together), (negative, separate)):
        for peer in peers:
            for n in used_nodes(service_status.get(peer) or {}):
                if usage.contains(n):
                    out[n] = out.get(n, 0) + 1
    return together, separate
