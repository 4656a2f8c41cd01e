"""Node selection: priority, restricted groups, failback, least loaded, relocate policy."""

from __future__ import annotations

from hafence.ha.select import (
    Affinity,
    NodeUsage,
    parse_node_list,
    select_service_node,
    service_affinity,
)

GROUPS = {
    "prefer1": {"nodes": {"node1": 2, "node2": 1}, "restricted": False, "nofailback": False},
    "only12": {"nodes": {"node1": 0, "node2": 0}, "restricted": True, "nofailback": False},
    "sticky": {"nodes": {"node1": 2, "node2": 1}, "restricted": False, "nofailback": True},
}


def usage(online=("node1", "node2", "node3"), **load: int) -> NodeUsage:
    u = NodeUsage(online)
    for node, n in load.items():
        for _ in range(n):
            u.add(node)
    return u


def aff(group: str | None) -> Affinity:
    return service_affinity("vm:100", {"group": group} if group else {}, GROUPS)


def test_parse_node_list() -> None:
    assert parse_node_list("node1:2, node2") == {"node1": 2, "node2": 0}
    assert parse_node_list(["node3:1"]) == {"node3": 1}


def test_highest_priority_online_node_wins() -> None:
    assert select_service_node(aff("prefer1"), usage(), "node3") == "node1"
    # node1 down: next priority
    assert select_service_node(aff("prefer1"), usage(("node2", "node3")), "node3") == "node2"
    # both preferred down: unrestricted groups fall back to any node
    assert select_service_node(aff("prefer1"), usage(("node3",)), "node1") == "node3"


def test_restricted_group_never_leaves_its_nodes() -> None:
    assert select_service_node(aff("only12"), usage(("node3",)), "node1") is None
    assert select_service_node(aff("only12"), usage(), "node3") in ("node1", "node2")


def test_least_loaded_then_name() -> None:
    a = aff(None)
    assert select_service_node(a, usage(node1=2, node2=1), "node1", best_scored=True) == "node3"
    assert select_service_node(a, usage(node1=1, node3=1), "node1", best_scored=True) == "node2"
    assert select_service_node(a, usage(), "node2", best_scored=True) == "node1"


def test_stays_on_current_node_when_it_is_among_the_best() -> None:
    assert select_service_node(aff(None), usage(node2=5), "node2") == "node2"


def test_failback_and_nofailback() -> None:
    # failback: back to node1 when it returns
    assert select_service_node(aff("prefer1"), usage(), "node2") == "node1"
    # nofailback: stay on node2
    assert select_service_node(aff("sticky"), usage(), "node2") == "node2"


def test_relocate_policy_skips_tried_nodes() -> None:
    a = aff(None)
    u = usage(node1=3, node2=2, node3=1)
    assert select_service_node(a, u, "node3", try_next=True, tried_nodes=["node3"]) == "node2"
    got = select_service_node(a, u, "node2", try_next=True, tried_nodes=["node3", "node2"])
    assert got == "node1"
    all_tried = ["node3", "node2", "node1"]
    assert select_service_node(a, u, "node1", try_next=True, tried_nodes=all_tried) is None


def test_node_affinity_rule() -> None:
    rules = {
        "r": {
            "type": "node-affinity",
            "nodes": {"node3": 0},
            "resources": ["vm:100"],
            "strict": True,
        }
    }
    a = service_affinity("vm:100", {}, {}, rules)
    assert a.strict and a.nodes == {"node3": 0}
    assert select_service_node(a, usage(("node1", "node2")), "node3") is None
    assert service_affinity("vm:101", {}, {}, rules).nodes == {}


def test_usage_counts_both_ends_of_a_migration() -> None:
    ss = {
        "vm:1": {"state": "migrate", "node": "node1", "target": "node2"},
        "vm:2": {"state": "started", "node": "node1"},
        "vm:3": {"state": "stopped", "node": "node3"},
    }
    u = NodeUsage.from_service_status(["node1", "node2", "node3"], ss)
    scores = u.scores("vm:4")
    assert (scores["node1"], scores["node2"], scores["node3"]) == (2, 1, 0)
