"""Which node a service should run on: Proxmox's ``select_service_node``.

Pure functions over the compiled rules (``hafence.ha.rules``), the service status and the
usage of the online nodes (``hafence.ha.usage``); the CRM (``hafence.ha.manager``) calls
them. Groups reach here as node-affinity rules (``ha-group-NAME``).

- Node affinity gives the *allowed* online nodes of a service (a strict rule's nodes; any
  node otherwise) and the *preferred* ones (the online nodes of its highest priority).
- Resource affinity gives ``together`` (online nodes where positive peers run, and how
  many) and ``separate`` (online nodes a negative peer uses).
- The preference ``none`` keeps a service where it is when it may stay there; ``try-next``
  (its start failed) avoids the nodes it already failed on and takes the next-best one;
  ``best-score`` (recovery, a balanced start) takes the best-scored node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hafence.ha.rules import CompiledRules
from hafence.ha.usage import Usage, used_service_nodes

PREFERENCES = ("none", "best-score", "try-next")


def get_node_affinity(
    compiled: CompiledRules, sid: str, online: set[str]
) -> tuple[set[str], set[str]]:
    """``(allowed, preferred)`` online nodes of ``sid`` (the same set without a rule)."""
    nodes = compiled.node_affinity.get(sid)
    if nodes is None:
        return online, online
    allowed: set[str] = set()
    by_prio: dict[int, set[str]] = {}
    for node, prio in nodes.items():
        if node not in online:
            continue
        allowed.add(node)
        by_prio.setdefault(prio or 0, set()).add(node)
    preferred = by_prio[max(by_prio)] if by_prio else set()
    return allowed, preferred


def get_resource_affinity(
    compiled: CompiledRules,
    sid: str,
    ss: Mapping[str, Mapping[str, Any]],
    online: set[str],
) -> tuple[dict[str, int], dict[str, int]]:
    """``(together, separate)``: online nodes used by the positive peers (with counts;
    a moving peer counts on its target only) and by the negative ones (both ends)."""
    positive, negative = compiled.affinitive(sid)
    together: dict[str, int] = {}
    separate: dict[str, int] = {}
    for csid in positive:
        sd = ss.get(csid)
        if sd is None:
            continue
        current, target = used_service_nodes(online, sd)
        node = target if target is not None else current
        if node is not None:
            together[node] = together.get(node, 0) + 1
    for csid in negative:
        sd = ss.get(csid)
        if sd is None:
            continue
        for node in used_service_nodes(online, sd):
            if node is not None:
                separate[node] = 1
    return together, separate


def blocking_peers(
    compiled: CompiledRules, sid: str, ss: Mapping[str, Mapping[str, Any]], target: str
) -> list[str]:
    """Negative peers of ``sid`` that use ``target`` (or will): a move there is refused."""
    out = []
    for csid in sorted(compiled.affinitive(sid)[1]):
        csd = ss.get(csid)
        if csd is None or csd.get("state") == "ignored":
            continue
        if csd.get("node") and csd["node"] != target:
            continue
        if csd.get("target") and csd["target"] != target:
            continue
        out.append(csid)
    return out


def is_allowed_on_node(together: Mapping[str, int], separate: Mapping[str, int], node: str) -> bool:
    return bool(together.get(node)) or not separate.get(node)


def apply_positive_resource_affinity(together: dict[str, int], allowed: set[str]) -> None:
    """Keep only the allowed node most positive peers use (ties: by name)."""
    for node in [n for n in together if n not in allowed]:
        del together[node]
    if not together:
        return
    majority = sorted(sorted(together), key=lambda n: -together[n])[0]
    allowed.intersection_update({majority})


def apply_negative_resource_affinity(separate: Mapping[str, int], allowed: set[str]) -> None:
    allowed.difference_update(separate)


def select_service_node(
    compiled: CompiledRules,
    usage: Usage,
    sid: str,
    cd: Mapping[str, Any],
    ss: Mapping[str, Mapping[str, Any]],
    preference: str,
    online: set[str] | None = None,
) -> str | None:
    """The node ``sid`` (config ``cd``, status ``ss[sid]``) should run on, or None.

    ``online`` may pass the set of the usage's nodes when the caller keeps one per round.
    """
    if preference not in PREFERENCES:
        raise ValueError(f"'{preference}' is not a valid node preference")
    sd = ss[sid]
    current = sd.get("node")
    tried = sd.get("failed_nodes") or ()
    fallback = sd.get("maintenance_node")
    if online is None:
        online = set(usage.list_nodes())
    allowed, preferred = get_node_affinity(compiled, sid, online)
    if not preferred:
        return None
    together, separate = get_resource_affinity(compiled, sid, ss, online)
    if preference == "none" and cd.get("failback", True) and not (together or separate):
        # the common case, without copying a node set for every service every round
        if fallback is not None and fallback in preferred:
            return fallback
        if current in preferred:
            return current
    # stay on the current node when possible (avoids needless migrations)
    if (
        preference == "none"
        and not cd.get("failback", True)
        and current in allowed
        and is_allowed_on_node(together, separate, current)
    ):
        return current
    pri = set(preferred)  # never change the caller's (or the usage's) set
    if preference == "try-next":
        pri.difference_update(tried)
    apply_negative_resource_affinity(separate, pri)
    apply_positive_resource_affinity(together, pri)
    if fallback is not None and fallback in pri:
        return fallback
    if preference == "none" and current in pri:
        return current
    scores = usage.score_nodes_to_start_service(sid)
    nodes = sorted(pri, key=lambda n: (scores.get(n, 0.0), n))
    if not nodes:
        return None
    if preference == "try-next" and current in nodes:
        i = nodes.index(current)
        if i < len(nodes) - 1:
            return nodes[i + 1]
    return nodes[0]
