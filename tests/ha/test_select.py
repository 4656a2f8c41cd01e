"""Node selection (Proxmox's select_service_node): affinity, failback, usage, relocate
policy, resource affinity."""

from __future__ import annotations

from typing import Any

from hafence.ha import rules as rl
from hafence.ha.config import parse_rules
from hafence.ha.select import select_service_node
from hafence.ha.usage import Usage

NODES = ["node1", "node2", "node3"]


class _Log:
    nodename = "node1"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, level: str, msg: str) -> None:
        self.lines.append(f"{level}: {msg}")


def compiled(text: str = "", groups: dict | None = None, sc: dict | None = None,
             nodes: list[str] = NODES) -> rl.CompiledRules:  # fmt: skip
    rules = rl.RuleSet.from_config(parse_rules(text))
    rl.migrate_groups_to_rules(rules, groups or {}, sc or {})
    assert rl.transform(rules, nodes) == []
    return rl.compile_rules(rules, nodes)


def usage(ss: dict[str, dict[str, Any]], online: list[str] = NODES) -> Usage:
    u = Usage(_Log(), online)  # type: ignore[arg-type]
    for sid in sorted(ss):
        u.add_service_usage(sid, ss[sid])
    return u


def select(c: rl.CompiledRules, ss: dict, sid: str, pref: str = "none",
           online: list[str] = NODES, **cd: Any) -> str | None:  # fmt: skip
    return select_service_node(c, usage(ss, online), sid, {"failback": True, **cd}, ss, pref)


def started(node: str, **extra: Any) -> dict[str, Any]:
    return {"state": "started", "node": node, **extra}


PREFER1 = "node-affinity: r1\n\tresources vm:100\n\tnodes node1:2,node2:1\n"


def test_highest_priority_online_node_wins_and_failback() -> None:
    c = compiled(PREFER1)
    ss = {"vm:100": started("node3")}
    assert select(c, ss, "vm:100") == "node1"  # failback to the preferred node
    assert select(c, ss, "vm:100", online=["node2", "node3"]) == "node2"
    # no preferred node online: a non-strict rule lets it run anywhere
    assert select(c, ss, "vm:100", online=["node3"]) == "node3"
    # failback off: it stays where it is allowed to be
    assert select(c, ss, "vm:100", failback=False) == "node3"


def test_a_strict_rule_never_leaves_its_nodes() -> None:
    c = compiled(PREFER1 + "\tstrict 1\n")
    ss = {"vm:100": started("node1")}
    assert select(c, ss, "vm:100", online=["node3"]) is None
    assert select(c, ss, "vm:100", "best-score", online=["node2", "node3"]) == "node2"


def test_least_loaded_then_name_and_sticky_current_node() -> None:
    c = compiled()
    ss = {"vm:1": started("node1"), "vm:2": started("node1"), "vm:3": started("node2"),
          "vm:100": started("node1")}  # fmt: skip
    assert select(c, ss, "vm:100", "best-score") == "node3"
    ss["vm:4"] = started("node3")
    assert select(c, ss, "vm:100", "best-score") == "node2"  # node2: 1, node3: 1 -> name
    assert select(c, ss, "vm:100") == "node1"  # 'none' stays on the current node


def test_relocate_policy_skips_tried_nodes_and_takes_the_next() -> None:
    c = compiled()
    ss = {"vm:1": started("node1"), "vm:2": started("node1"), "vm:3": started("node2"),
          "vm:100": started("node3", failed_nodes=["node3"])}  # fmt: skip
    assert select(c, ss, "vm:100", "try-next") == "node2"
    ss["vm:100"] = started("node2", failed_nodes=["node3", "node2"])
    assert select(c, ss, "vm:100", "try-next") == "node1"
    ss["vm:100"] = started("node1", failed_nodes=["node3", "node2", "node1"])
    assert select(c, ss, "vm:100", "try-next") is None


def test_maintenance_fallback_node_comes_first() -> None:
    c = compiled()
    ss = {"vm:100": started("node2", maintenance_node="node3")}
    assert select(c, ss, "vm:100") == "node3"
    assert select(c, ss, "vm:100", online=["node1", "node2"]) == "node2"


def test_groups_are_node_affinity_rules() -> None:
    groups = {"g": {"nodes": {"node2": 0}, "restricted": True, "nofailback": False}}
    sc = {"vm:100": {"node": "node1", "group": "g"}}
    c = compiled(groups=groups, sc=sc)
    assert c.node_affinity["vm:100"] == {"node2": 0}
    assert select(c, {"vm:100": started("node1")}, "vm:100") == "node2"


def test_resource_affinity_together_and_apart() -> None:
    c = compiled(
        "resource-affinity: keep\n\tresources vm:100,vm:101\n\taffinity positive\n\n"
        "resource-affinity: apart\n\tresources vm:100,vm:102\n\taffinity negative\n"
    )
    ss = {"vm:100": started("node1"), "vm:101": started("node2"), "vm:102": started("node3")}
    # a positive peer pulls it to its node; a negative one keeps it off node3
    assert select(c, ss, "vm:100", "best-score") == "node2"
    # the positive peer on the negative peer's node: the negative rule wins, the positive
    # one cannot be kept (the least loaded allowed node)
    ss["vm:101"] = started("node3")
    assert select(c, ss, "vm:100", "best-score") == "node2"
    # a moving positive peer counts on its target only
    ss["vm:101"] = {"state": "migrate", "node": "node3", "target": "node1"}
    assert select(c, ss, "vm:100", "best-score") == "node1"


def test_usage_counts_both_ends_of_a_migration() -> None:
    u = usage({
        "vm:1": {"state": "migrate", "node": "node1", "target": "node2"},
        "vm:2": started("node1"),
        "vm:3": {"state": "stopped", "node": "node3"},
        "vm:4": {"state": "request_start", "node": "node3"},
    })  # fmt: skip
    assert u.score_nodes_to_start_service("vm:9") == {"node1": 2.0, "node2": 1.0, "node3": 0.0}
    u.remove_service_usage("vm:1")
    assert u.score_nodes_to_start_service("vm:9")["node2"] == 0.0
