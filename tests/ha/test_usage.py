"""Node usage for the schedulers: imbalance, TOPSIS scores, balancing moves, fallbacks."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hafence.ha.usage import (
    DynamicUsage,
    StaticUsage,
    make_usage,
    node_imbalance,
    topsis_scores,
    used_service_nodes,
)

GIB = 1024**3
NODES = ["node1", "node2", "node3"]


class Env:
    nodename = "node1"

    def __init__(self, **stats: Any) -> None:
        self.lines: list[str] = []
        self.stats = stats

    def log(self, level: str, msg: str) -> None:
        self.lines.append(f"{level}: {msg}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("get_"):
            return lambda: self.stats.get(name[4:], {})
        raise AttributeError(name)


def started(node: str, **extra: Any) -> dict[str, Any]:
    return {"state": "started", "node": node, "running": 1, **extra}


def test_used_service_nodes() -> None:
    online = {"node1", "node2"}
    assert used_service_nodes(online, started("node1")) == ("node1", None)
    assert used_service_nodes(online, {"state": "request_start", "node": "node1"}) == (None, None)
    mig = {"state": "migrate", "node": "node1", "target": "node2"}
    assert used_service_nodes(online, mig) == ("node1", "node2")
    assert used_service_nodes(online, {**mig, "target": "node9"}) == ("node1", None)
    bal = {"state": "request_start_balance", "node": "node1", "target": "node2"}
    assert used_service_nodes(online, bal) == (None, "node2")
    assert used_service_nodes(online, {"state": "fence", "node": "node3"}) == (None, None)


def test_imbalance_is_the_coefficient_of_variation() -> None:
    assert node_imbalance([0.5]) == 0.0
    assert node_imbalance([0.0, 0.0, 0.0]) == 0.0
    assert node_imbalance([0.3, 0.3, 0.3]) == 0.0
    assert math.isclose(node_imbalance([0.7, 0.0, 0.0]), math.sqrt(2))


def test_topsis_prefers_the_alternative_closest_to_the_best() -> None:
    scores = topsis_scores([(1.5, 1.5, 1.5, 1.5), (1.1, 1.1, 1.1, 1.1), (1.3, 1.3, 1.3, 1.3)])
    assert scores[1] == 1.0 and scores[0] == 0.0 and 0 < scores[2] < 1
    assert topsis_scores([(1.0,) * 4, (1.0,) * 4]) == [0.0, 0.0]  # all the same: no winner


def _static(ss: dict[str, dict[str, Any]], usage: dict[str, dict[str, Any]]) -> StaticUsage:
    env = Env()
    nodes = {n: {"maxcpu": 8, "maxmem": 16 * GIB} for n in NODES}
    u = StaticUsage(env, NODES, nodes, {s: {"usage": v} for s, v in usage.items()})  # type: ignore[arg-type]
    for sid in sorted(ss):
        u.add_service_usage(sid, ss[sid])
    return u


def test_static_scores_and_balancing() -> None:
    stats = {s: {"maxcpu": 2, "maxmem": 4 * GIB} for s in ("vm:101", "vm:102", "vm:103")}
    stats["vm:104"] = {"maxcpu": 1, "maxmem": GIB}
    u = _static({s: started("node1") for s in stats}, stats)
    scores = u.score_nodes_to_start_service("vm:104")
    assert scores["node2"] == scores["node3"] < scores["node1"]
    assert math.isclose(u.calculate_node_imbalance(), math.sqrt(2))
    cands = [{"leader": s, "nodes": ["node2", "node3"], "resources": [s]} for s in sorted(stats)]
    best = u.select_best_balancing_migration(cands)
    assert best is not None
    # a big one leaves, to the first node by name among equals
    assert (best.migration.sid, best.migration.source, best.migration.target) == (
        "vm:101", "node1", "node2")  # fmt: skip
    top = u.select_best_balancing_migration(cands, topsis=True)
    assert top is not None and top.migration.sid in ("vm:101", "vm:102", "vm:103")
    assert top.imbalance == best.imbalance < u.calculate_node_imbalance()


def test_a_bundle_moves_as_one() -> None:
    sids = ("vm:101", "vm:102", "vm:103", "vm:104")
    stats = {s: {"maxcpu": 1, "maxmem": 2 * GIB} for s in sids}
    u = _static({s: started("node1") for s in stats}, stats)
    alone = u.select_best_balancing_migration(
        [{"leader": "vm:103", "nodes": ["node2"], "resources": ["vm:103"]}])  # fmt: skip
    pair = u.select_best_balancing_migration(
        [{"leader": "vm:101", "nodes": ["node2"], "resources": ["vm:101", "vm:102"]}])  # fmt: skip
    # loads 3:1:0 against 2:2:0
    assert alone is not None and pair is not None and pair.imbalance < alone.imbalance


def test_dynamic_counts_a_moving_service_on_its_target() -> None:
    env = Env()
    nodes = {n: {"cpu": 1.0, "maxcpu": 8, "mem": GIB, "maxmem": 16 * GIB} for n in NODES}
    usage = {"vm:101": {"usage": {"cpu": 2.0, "maxcpu": 4, "mem": 4 * GIB, "maxmem": 8 * GIB}}}
    u = DynamicUsage(env, NODES, nodes, usage)  # type: ignore[arg-type]
    u.add_service_usage("vm:101", started("node1"))
    before = u.node_stats()
    assert before["node1"].cpu == 1.0  # what runs is in the node's own figures already
    u.remove_service_usage("vm:101")
    u.add_service_usage("vm:101", {"state": "migrate", "node": "node1", "target": "node2"})
    after = u.node_stats()
    assert after["node2"].cpu == 3.0 and after["node2"].mem == 5 * GIB


def test_missing_figures_fall_back_to_basic_and_say_why() -> None:
    env = Env(static_node_stats={"node1": {"maxcpu": 8, "maxmem": GIB}})
    usage, _ = make_usage(env, "static", NODES)  # type: ignore[arg-type]
    assert usage.mode == "basic"
    assert env.lines == ["warning: fallback to 'basic' scheduler mode, init for 'static' failed"
                         " - did not get static node usage information for 'node2'"]  # fmt: skip
    env = Env()
    assert make_usage(env, "nonsense", NODES)[0].mode == "basic"  # type: ignore[arg-type]
    assert env.lines == ["warning: got unknown scheduler mode 'nonsense', using 'basic'"]


def test_a_service_without_figures_is_left_out_with_a_warning() -> None:
    u = _static({"vm:101": started("node1")}, {})
    assert u.env.lines == [  # type: ignore[attr-defined]
        "warning: unable to add service 'vm:101' - did not get static service usage "
        "information for 'vm:101'"
    ]
    scores = u.score_nodes_to_start_service("vm:101")
    assert set(scores.values()) == {0.0}


@pytest.mark.parametrize("limit", [1, 2])
def test_bruteforce_orders_equal_moves_by_service_then_nodes(limit: int) -> None:
    stats = {s: {"maxcpu": 1, "maxmem": GIB} for s in ("vm:102", "vm:101")}
    u = _static({s: started("node1") for s in stats}, stats)
    cands = [{"leader": s, "nodes": ["node3", "node2"], "resources": [s]} for s in sorted(stats)]
    moves = u.score_best_balancing_migrations(cands, limit)
    assert [(m.migration.sid, m.migration.target) for m in moves] == [
        ("vm:101", "node2"), ("vm:101", "node3")][:limit]  # fmt: skip
