"""HA rules: Proxmox's feasibility checks, pruning, implicit rules, compile, groups."""

from __future__ import annotations

import pytest

from hafence.ha import rules as rl
from hafence.ha.config import parse_rules

NODES = ["node1", "node2", "node3"]


def ruleset(text: str) -> rl.RuleSet:
    return rl.RuleSet.from_config(parse_rules(text))


def na(rid: str, res: str, nodes: str, strict: bool = False) -> str:
    return f"node-affinity: {rid}\n\tresources {res}\n\tnodes {nodes}\n" + (
        "\tstrict 1\n" if strict else ""
    )


def ra(rid: str, res: str, affinity: str) -> str:
    return f"resource-affinity: {rid}\n\tresources {res}\n\taffinity {affinity}\n"


def transformed(*sections: str, nodes: list[str] = NODES) -> tuple[rl.RuleSet, list[str]]:
    rules = ruleset("\n".join(sections))
    return rules, rl.transform(rules, nodes)


@pytest.mark.parametrize(
    "sections,dropped",
    [
        ([na("na1", "vm:101", "node1"), na("na2", "vm:101,vm:102", "node2")],
         ["Drop rule 'na1', because resource 'vm:101' is already used in another node affinity "
          "rule.",
          "Drop rule 'na2', because resource 'vm:101' is already used in another node affinity "
          "rule."]),
        ([ra("ra1", "vm:101", "positive")],
         ["Drop rule 'ra1', because rule is ineffective as there are less than two resources."]),
        ([ra("ra1", "vm:101,vm:102,vm:103,vm:104", "negative")],
         ["Drop rule 'ra1', because rule defines more resources than available nodes."]),
        ([ra("pos", "vm:101,vm:102", "positive"), ra("neg", "vm:101,vm:102,vm:103", "negative")],
         ["Drop rule 'neg', because rule shares two or more resources with a positive "
          "resource affinity rule.",
          "Drop rule 'pos', because rule shares two or more resources with a negative "
          "resource affinity rule."]),
        ([na("na1", "vm:101", "node1:2,node2"), ra("pos", "vm:101,vm:102", "positive")],
         ["Drop rule 'na1', because resources are in a resource affinity rule and cannot be in "
          "a node affinity rule with multiple priorities.",
          "Drop rule 'pos', because resources are in node affinity rules with multiple "
          "priorities."]),
        ([na("na1", "vm:101", "node1"), na("na2", "vm:102", "node2"),
          ra("pos", "vm:101,vm:102", "positive")],
         ["Drop rule 'na1', because at least one resource is in a positive resource affinity "
          "rule and there are other resources in at least one other node affinity rule "
          "already.",
          "Drop rule 'na2', because at least one resource is in a positive resource affinity "
          "rule and there are other resources in at least one other node affinity rule "
          "already.",
          "Drop rule 'pos', because resources are in multiple node affinity rules."]),
        ([na("na1", "vm:101,vm:102", "node1", strict=True), ra("neg", "vm:101,vm:102", "negative")],
         ["Drop rule 'na1', because at least one resource is in a negative resource affinity "
          "rule and this rule would restrict these to less nodes than available to the "
          "resources.",
          "Drop rule 'neg', because two or more resources are restricted to less nodes than "
          "available to the resources."]),
    ],
)  # fmt: skip
def test_infeasible_rules_are_dropped_with_the_reason(
    sections: list[str], dropped: list[str]
) -> None:
    rules, messages = transformed(*sections)
    assert messages == dropped
    gone = {m.split("'")[1] for m in dropped}
    assert not gone & set(rules.ids)


def test_disabled_rules_are_not_applied_whatever_their_value() -> None:
    rules, messages = transformed(
        na("na1", "vm:101", "node1"), na("na2", "vm:101", "node2") + "\tdisable 0\n"
    )
    assert messages == []  # 'disable 0' disables too: a rule with 'disable' is off
    assert rl.compile_rules(rules, NODES).node_affinity == {
        "vm:101": {"node1": 0, "node2": -1, "node3": -1}
    }


def test_connected_positive_rules_merge_and_inherit_negative_and_node_affinity() -> None:
    rules, messages = transformed(
        ra("p1", "vm:101,vm:102", "positive"),
        ra("p2", "vm:102,vm:103", "positive"),
        ra("n1", "vm:101,vm:109", "negative"),
        na("na1", "vm:103", "node2", strict=True),
    )
    assert messages == []
    assert "_merged-p1-p2" in rules.ids and "p1" not in rules.ids
    c = rl.compile_rules(rules, NODES)
    assert c.positive["vm:101"] == {"vm:102", "vm:103"}
    # vm:101 must stay apart from vm:109, so its positive peers must too
    assert c.negative["vm:109"] == {"vm:101", "vm:102", "vm:103"}
    assert "_implicit-negative-_merged-p1-p2-vm:102-vm:109" in rules.ids
    # a positive group follows its members' node affinity
    assert c.node_affinity["vm:101"] == c.node_affinity["vm:103"] == {"node2": 0}


def test_groups_become_node_affinity_rules_and_set_failback() -> None:
    groups = {
        "g": {"nodes": {"node1": 2, "node2": 1}, "restricted": True, "nofailback": True,
              "comment": None},
        "unused": {"nodes": {"node3": 0}, "restricted": False, "nofailback": False,
                   "comment": None},
    }  # fmt: skip
    resources = {"vm:101": {"group": "g"}, "vm:102": {"group": "nope"}, "vm:103": {}}
    rules = ruleset(na("mine", "vm:103", "node3"))
    rl.migrate_groups_to_rules(rules, groups, resources)
    assert set(rules.ids) == {"mine", "ha-group-g"}
    assert rules.ids["ha-group-g"] == {
        "type": "node-affinity", "resources": {"vm:101": None}, "nodes": {"node1": 2, "node2": 1},
        "strict": True, "comment": "Generated from HA group 'g'.",
    }  # fmt: skip
    rl.migrate_groups_to_resources(groups, resources)
    assert resources["vm:101"]["failback"] is False and resources["vm:102"]["failback"] is True
    assert "failback" not in resources["vm:103"]


def test_format_rules_round_trips_and_refuses_what_would_not_read_back() -> None:
    text = (
        na("na1", "vm:101,vm:102", "node1:2,node2", strict=True)
        + "\n"
        + ra("ra1", "vm:101,vm:103", "negative")
    )
    parsed = parse_rules(text)
    assert parse_rules(rl.format_rules(parsed)) == parsed
    bad = {"na1": {"type": "node-affinity", "resources": ["vm:101"], "nodes": {"no de": 0}}}
    with pytest.raises(ValueError, match="refusing to write"):
        rl.format_rules(bad)
