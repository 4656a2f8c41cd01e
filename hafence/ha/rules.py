"""HA rules: feasibility checks, pruning, the compiled form the CRM schedules with.

Proxmox 9's ``rules.cfg`` holds ``node-affinity`` rules (resources prefer, or with
``strict`` are bound to, some nodes) and ``resource-affinity`` rules (resources kept
together, ``positive``, or apart, ``negative``). ``hafence.ha.config.parse_rules`` reads
the file; this module does what Proxmox's ``PVE::HA::Rules*`` do with the result:

- :func:`check_feasibility` finds rules that cannot be applied in every state of the
  cluster (a resource in two node-affinity rules, a positive and a negative rule sharing
  two resources, more negatively affine resources than nodes ...) and says why, per rule
  and property;
- :func:`transform` drops those rules (the CRM logs one ``Drop rule`` line for each
  reason), merges positive rules that share a resource, and writes down the implicit
  rules (a positive group inherits its members' negative and node affinities);
- :func:`compile` reduces the rest to per-resource lookups (:class:`CompiledRules`).

HA groups are the older form of node affinity; :func:`migrate_groups_to_rules` turns
them into ``ha-group-NAME`` rules (in memory every round, and for good once every node
can read rules, see ``Manager``).

A :class:`RuleSet` keeps rules in their file order (``order``). A rule is disabled as soon
as it has a ``disable`` property at all, as Proxmox reads it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hafence.ha import config as hacfg

NODE_AFFINITY, RESOURCE_AFFINITY = "node-affinity", "resource-affinity"
RULE_TYPES = (NODE_AFFINITY, RESOURCE_AFFINITY)  # in the order their checks run

Errors = dict[str, dict[str, list[str]]]  # rule id -> property -> reasons


@dataclass
class RuleSet:
    """Rules by id (``resources`` as an ordered set: a dict of sid -> True) and the
    position of each in the file."""

    ids: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_config(cls, parsed: dict[str, dict[str, Any]]) -> RuleSet:
        """From ``parse_rules`` output (its dict order is the file order)."""
        rs = cls()
        for n, (rid, rule) in enumerate(parsed.items(), 1):
            r = dict(rule)
            r["resources"] = dict.fromkeys(rule.get("resources") or ())
            if r.get("type") == NODE_AFFINITY:
                r["nodes"] = dict(rule.get("nodes") or {})
                r.setdefault("strict", False)
            rs.ids[rid] = r
            rs.order[rid] = n
        return rs

    def to_config(self) -> dict[str, dict[str, Any]]:
        """Back to the ``parse_rules`` shape, in file order."""
        out: dict[str, dict[str, Any]] = {}
        for rid in sorted(self.ids, key=lambda r: (self.order.get(r, 0), r)):
            rule = dict(self.ids[rid])
            rule["resources"] = list(rule.get("resources") or ())
            out[rid] = rule
        return out

    def copy(self) -> RuleSet:
        return RuleSet(copy.deepcopy(self.ids), dict(self.order))

    def next_ordinal(self) -> int:
        """Where a new rule goes (Proxmox takes the lowest position plus one)."""
        return (min(self.order.values()) if self.order else 0) + 1

    def enabled(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {
            rid: r for rid, r in self.ids.items() if r.get("type") == rtype and "disable" not in r
        }


@dataclass
class CompiledRules:
    """Per-resource lookups: ``node_affinity[sid]`` = ``{node: priority}`` (non-members
    of a non-strict rule at -1); ``positive[sid]`` / ``negative[sid]`` = the resources
    ``sid`` must share a node with / must never share a node with."""

    node_affinity: dict[str, dict[str, int]] = field(default_factory=dict)
    positive: dict[str, set[str]] = field(default_factory=dict)
    negative: dict[str, set[str]] = field(default_factory=dict)

    def affinitive(self, sid: str) -> tuple[set[str], set[str]]:
        return self.positive.get(sid, set()), self.negative.get(sid, set())


# -- checks ---------------------------------------------------------------------------------
def _disjoint_sets(rules: dict[str, dict[str, Any]]) -> list[tuple[list[str], dict[str, Any]]]:
    """Group rules whose resources overlap, in one pass over the rules sorted by their
    lowest resource id (then rule id): ``[(rule ids, resources)]``."""
    lowest = {rid: min(r["resources"]) if r["resources"] else "" for rid, r in rules.items()}
    out: list[tuple[list[str], dict[str, Any]]] = []
    for rid in sorted(sorted(rules), key=lambda r: lowest[r]):
        res = rules[rid]["resources"]
        for ruleids, members in out:
            if any(s in members for s in res):
                ruleids.append(rid)
                members.update(dict.fromkeys(res))
                break
        else:
            out.append(([rid], dict(res)))
    return out


def _args(rules: RuleSet) -> dict[str, dict[str, dict[str, Any]]]:
    ra = rules.enabled(RESOURCE_AFFINITY)
    return {
        "node_affinity": rules.enabled(NODE_AFFINITY),
        "resource_affinity": ra,
        "positive": {rid: r for rid, r in ra.items() if r.get("affinity") == "positive"},
        "negative": {rid: r for rid, r in ra.items() if r.get("affinity") == "negative"},
    }


def _add(errors: Errors, rid: str, opt: str, msg: str) -> None:
    errors.setdefault(rid, {}).setdefault(opt, []).append(msg)


def _check_single_resource_reference(a: dict, errors: Errors) -> None:
    users: dict[str, list[str]] = {}
    for rid, rule in a["node_affinity"].items():
        for sid in rule["resources"]:
            users.setdefault(sid, []).append(rid)
    conflicts = sorted((rid, sid) for sid, rids in users.items() if len(rids) > 1 for rid in rids)
    for rid, sid in conflicts:
        _add(errors, rid, "resources", f"resource '{sid}' is already used in another node "
             "affinity rule")  # fmt: skip


def _check_resource_count(a: dict, errors: Errors) -> None:
    for rid in sorted(a["resource_affinity"]):
        if len(a["resource_affinity"][rid]["resources"]) < 2:
            _add(errors, rid, "resources", "rule is ineffective as there are less than two "
                 "resources")  # fmt: skip


def _check_negative_count(a: dict, nodes: list[str], errors: Errors) -> None:
    for rid in sorted(a["negative"]):
        if len(a["negative"][rid]["resources"]) > len(nodes):
            _add(errors, rid, "resources", "rule defines more resources than available nodes")


def _check_positive_negative(a: dict, errors: Errors) -> None:
    conflicts: list[tuple[str, str]] = []  # a rule met twice is named twice, as Proxmox does
    for ruleids, members in _disjoint_sets(a["positive"]):
        for nid, neg in a["negative"].items():
            if sum(1 for s in neg["resources"] if s in members) < 2:
                continue
            conflicts.append(("negative", nid))
            conflicts.extend(("positive", r) for r in ruleids)
    for kind, rid in sorted(conflicts):
        other = "positive" if kind == "negative" else "negative"
        _add(errors, rid, "resources", f"rule shares two or more resources with a {other} "
             "resource affinity rule")  # fmt: skip


def _multiple_priorities(rule: dict[str, Any]) -> bool:
    return len(set(rule["nodes"].values())) > 1


def _check_single_priority(a: dict, errors: Errors) -> None:
    conflicts: list[tuple[str, str]] = []
    for rid, rule in a["resource_affinity"].items():
        paired = [
            nid
            for nid, nrule in a["node_affinity"].items()
            if any(s in nrule["resources"] for s in rule["resources"])
        ]
        if any(_multiple_priorities(a["node_affinity"][nid]) for nid in paired):
            conflicts.append((RESOURCE_AFFINITY, rid))
            conflicts.extend((NODE_AFFINITY, nid) for nid in paired)
    for kind, rid in sorted(conflicts):
        if kind == NODE_AFFINITY:
            msg = ("resources are in a resource affinity rule and cannot be in a node "
                   "affinity rule with multiple priorities")  # fmt: skip
        else:
            msg = "resources are in node affinity rules with multiple priorities"
        _add(errors, rid, "resources", msg)


def _check_single_node_affinity_per_positive(a: dict, errors: Errors) -> None:
    conflicts: list[tuple[str, str]] = []
    for ruleids, members in _disjoint_sets(a["positive"]):
        paired = [
            nid
            for nid, nrule in a["node_affinity"].items()
            if any(s in members for s in nrule["resources"])
        ]
        if len(paired) > 1:
            conflicts.extend(("positive", r) for r in ruleids)
            conflicts.extend((NODE_AFFINITY, nid) for nid in paired)
    for kind, rid in sorted(conflicts):
        if kind == "positive":
            msg = "resources are in multiple node affinity rules"
        else:
            msg = ("at least one resource is in a positive resource affinity rule and there "
                   "are other resources in at least one other node affinity rule "
                   "already")  # fmt: skip
        _add(errors, rid, "resources", msg)


def _check_negative_node_affinity(a: dict, errors: Errors) -> None:
    conflicts: list[tuple[str, str]] = []
    for rid, neg in a["negative"].items():
        allowed: set[str] = set()
        located: set[str] = set()
        paired = []
        for nid, nrule in a["node_affinity"].items():
            common = {s for s in neg["resources"] if s in nrule["resources"]}
            if not common:
                continue
            located |= common
            allowed |= set(nrule["nodes"])
            paired.append(nid)
        if len(allowed) < len(located):
            conflicts.append(("negative", rid))
            conflicts.extend((NODE_AFFINITY, nid) for nid in paired)
    for kind, rid in sorted(conflicts):
        if kind == "negative":
            msg = ("two or more resources are restricted to less nodes than available to the "
                   "resources")  # fmt: skip
        else:
            msg = ("at least one resource is in a negative resource affinity rule and this "
                   "rule would restrict these to less nodes than available to the "
                   "resources")  # fmt: skip
        _add(errors, rid, "resources", msg)


def check_feasibility(rules: RuleSet, nodes: Iterable[str]) -> Errors:
    """Why each infeasible rule cannot be applied: ``{rule: {property: [reasons]}}``.

    The checks run in Proxmox's order: node affinity, resource affinity, then those
    between the two types; every check sees the whole rule set."""
    a = _args(rules)
    nodes = list(nodes)
    errors: Errors = {}
    _check_single_resource_reference(a, errors)
    _check_resource_count(a, errors)
    _check_negative_count(a, nodes, errors)
    _check_positive_negative(a, errors)
    _check_single_priority(a, errors)
    _check_single_node_affinity_per_positive(a, errors)
    _check_negative_node_affinity(a, errors)
    return errors


# -- transforms -----------------------------------------------------------------------------
def _merge_positive(rules: RuleSet) -> None:
    for ruleids, members in _disjoint_sets(_args(rules)["positive"]):
        if len(ruleids) < 2:
            continue
        new = "_merged-" + "-".join(ruleids)
        rules.ids[new] = {"type": RESOURCE_AFFINITY, "affinity": "positive", "resources": members}
        rules.order[new] = rules.order[ruleids[0]]
        for rid in ruleids:
            rules.ids.pop(rid, None)
            rules.order.pop(rid, None)


def _implicit_negative(rules: RuleSet) -> None:
    a = _args(rules)
    for pid, prule in list(a["positive"].items()):
        members = prule["resources"]
        separated: dict[str, set[str]] = {}  # resource kept apart -> members it is apart from
        for neg in a["negative"].values():
            for sid in members:
                if sid in neg["resources"]:
                    for csid in neg["resources"]:
                        if csid != sid:
                            separated.setdefault(csid, set()).add(sid)
        for csid in separated:
            for sid in members:
                if sid in separated[csid]:
                    continue
                new = f"_implicit-negative-{pid}-{sid}-{csid}"
                rules.ids[new] = {
                    "type": RESOURCE_AFFINITY,
                    "affinity": "negative",
                    "resources": {sid: None, csid: None},
                }
                rules.order[new] = rules.next_ordinal()


def _implicit_node_affinity(rules: RuleSet) -> None:
    a = _args(rules)
    for prule in a["positive"].values():
        members = prule["resources"]
        for nrule in a["node_affinity"].values():
            if any(s in nrule["resources"] for s in members):
                nrule["resources"].update(dict.fromkeys(members))
                break


def transform(rules: RuleSet, nodes: Iterable[str]) -> list[str]:
    """Drop the infeasible rules and complete the rest (see the module docstring); the
    reasons, one ``Drop rule`` line each."""
    errors = check_feasibility(rules, nodes)
    for rid in errors:
        rules.ids.pop(rid, None)
        rules.order.pop(rid, None)
    messages = [
        f"Drop rule '{rid}', because {msg}."
        for rid in sorted(errors)
        for opt in sorted(errors[rid])
        for msg in errors[rid][opt]
    ]
    _merge_positive(rules)
    _implicit_negative(rules)
    _implicit_node_affinity(rules)
    return messages


def compile_rules(rules: RuleSet, nodes: Iterable[str]) -> CompiledRules:
    """The lookups the scheduler uses (call :func:`transform` first)."""
    nodes = list(nodes)
    out = CompiledRules()
    for rule in rules.enabled(NODE_AFFINITY).values():
        effective = dict(rule["nodes"])
        if not rule.get("strict"):
            for node in nodes:
                effective.setdefault(node, -1)
        for sid in rule["resources"]:
            out.node_affinity[sid] = effective
    for rule in rules.enabled(RESOURCE_AFFINITY).values():
        target = out.positive if rule.get("affinity") == "positive" else out.negative
        for sid in rule["resources"]:
            target.setdefault(sid, set()).update(c for c in rule["resources"] if c != sid)
    return out


# -- groups -> rules ------------------------------------------------------------------------
def migrate_groups_to_resources(
    groups: dict[str, dict[str, Any]], resources: dict[str, dict[str, Any]]
) -> None:
    """A grouped resource's ``failback`` is its group's (``nofailback`` off: failback)."""
    for cd in resources.values():
        group = cd.get("group")
        if group:
            cd["failback"] = not (groups.get(group) or {}).get("nofailback")


def migrate_groups_to_rules(
    rules: RuleSet, groups: dict[str, dict[str, Any]], resources: dict[str, dict[str, Any]]
) -> None:
    """Add an ``ha-group-NAME`` node-affinity rule for every group that has resources."""
    members: dict[str, dict[str, None]] = {}
    for sid, cd in resources.items():
        if cd.get("group"):
            members.setdefault(cd["group"], {})[sid] = None
    for name, sids in members.items():
        group = groups.get(name)
        if group is None:
            continue
        rid = f"ha-group-{name}"
        rules.ids[rid] = {
            "type": NODE_AFFINITY,
            "resources": sids,
            "nodes": dict(group.get("nodes") or {}),
            "strict": bool(group.get("restricted")),
            "comment": group.get("comment") or f"Generated from HA group '{name}'.",
        }
        rules.order[rid] = rules.next_ordinal()


# -- writing rules.cfg ----------------------------------------------------------------------
_KEYS = {
    NODE_AFFINITY: ("resources", "nodes", "strict", "disable", "comment"),
    RESOURCE_AFFINITY: ("resources", "affinity", "disable", "comment"),
}


def format_rules(rules: dict[str, dict[str, Any]]) -> str:
    """``rules.cfg`` text for rules in the ``parse_rules`` shape (file order kept).

    The text is parsed back and must give the same rules: a value that would not survive
    raises ValueError instead of corrupting the file."""
    blocks = []
    for rid, rule in rules.items():
        rtype = rule["type"]
        lines = [f"{rtype}: {rid}"]
        for key in _KEYS[rtype]:
            if key not in rule or rule[key] is None:
                continue
            value = rule[key]
            if key == "resources":
                text = ",".join(sorted(value))
            elif key == "nodes":
                text = ",".join(f"{n}:{p}" if p else n for n, p in sorted(value.items()))
            elif key in ("strict", "disable"):
                if key == "strict" and not value:
                    continue
                text = "1" if value else "0"
            else:
                text = str(value)
            lines.append(f"\t{key} {text}")
        blocks.append("\n".join(lines) + "\n")
    text = "\n".join(blocks)
    try:
        back = hacfg.parse_rules(text, "<new rules.cfg>")
    except Exception as exc:
        raise ValueError(f"refusing to write invalid rules: {exc}") from None
    for rid, rule in rules.items():
        got = back.get(rid, {})
        want = {k: v for k, v in rule.items() if v is not None}
        want["resources"] = sorted(want["resources"])
        if not want.get("strict", True):
            want.pop("strict")
        if {**got, "resources": sorted(got.get("resources") or [])} != want:
            raise ValueError(f"refusing to write a rule that does not read back: {rid}")
    return text
