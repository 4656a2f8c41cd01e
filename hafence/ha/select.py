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

# Service states that put load on the service's node.
_LOADED_STATES = frozenset(
    {"started", "request_stop", "fence", "freeze", "error", "recovery", "starting", "stopping"}
)


@dataclass
class Affinity:
    """Where a service may run: ``nodes`` maps node -> priority; ``strict`` = restricted."""

    nodes: dict[str, int] = field(default_factory=dict)
    strict: bool = False
    failback: bool = True


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
    for rule in (rules or {}).values():
        if rule.get("type", "node-affinity") != "node-affinity" or rule.get("disable"):
            continue
        if sid in _as_list(rule.get("resources")):
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
    """Online nodes and how many services each carries (the basic scheduler)."""

    def __init__(self, online_nodes: Iterable[str]) -> None:
        self._usage: dict[str, int] = {n: 0 for n in online_nodes}

    def contains(self, node: str | None) -> bool:
        return node is not None and node in self._usage

    def nodes(self) -> list[str]:
        return sorted(self._usage)

    def add(self, node: str | None) -> None:
        if node in self._usage:
            self._usage[node] += 1

    def score(self, node: str) -> int:
        return self._usage.get(node, 0)

    @classmethod
    def from_service_status(
        cls, online_nodes: Iterable[str], service_status: Mapping[str, Mapping[str, Any]]
    ) -> NodeUsage:
        usage = cls(online_nodes)
        for sid in sorted(service_status):
            sd = service_status[sid]
            state, node, target = sd.get("state"), sd.get("node"), sd.get("target")
            if usage.contains(node):
                if state in _LOADED_STATES or state == "request_start":
                    usage.add(node)
                elif state in ("migrate", "relocate"):
                    usage.add(node)  # load on both ends while moving
                    usage.add(target)
            elif state in ("migrate", "relocate") and usage.contains(target):
                usage.add(target)
        return usage


def priority_groups(affinity: Affinity, usage: NodeUsage) -> dict[int, set[str]]:
    """Online nodes by priority; non-members at -1 unless the affinity is strict."""
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
    try_next: bool = False,
    tried_nodes: Iterable[str] = (),
    maintenance_fallback: str | None = None,
    best_scored: bool = False,
) -> str | None:
    """The node a service should run on, or None when no node qualifies.

    - ``try_next``: the start failed on ``current_node``; skip ``tried_nodes`` and prefer
      another node (relocate policy).
    - ``best_scored``: ignore the current node's stickiness (recovery of a fenced node).
    - without either, a service stays where it is while that node is among the best
      priority, or anywhere in its affinity when failback is off.
    """
    groups = priority_groups(affinity, usage)
    if not groups:
        return None
    sticky = not try_next and not best_scored
    if sticky and not affinity.failback and any(current_node in g for g in groups.values()):
        return current_node
    top = groups[max(groups)]
    if try_next:
        top = top - set(tried_nodes)
    if maintenance_fallback is not None and maintenance_fallback in top:
        return maintenance_fallback
    if sticky and current_node in top:
        return current_node
    ordered = sorted(top, key=lambda n: (usage.score(n), n))
    if not ordered:
        return None
    if try_next and not best_scored and current_node in ordered:
        i = ordered.index(current_node)
        if i < len(ordered) - 1:
            return ordered[i + 1]
    return ordered[0]
