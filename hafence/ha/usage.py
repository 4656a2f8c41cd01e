"""How loaded each online node is, for choosing a node and for auto-rebalancing.

Proxmox's ``PVE::HA::Usage*`` with the scheduler of ``proxmox-resource-scheduling``
beneath it, in three modes (datacenter ``crs: ha=basic|static|dynamic``):

- ``basic``: a node's load is how many services it carries;
- ``static``: what services may use at most (``maxcpu`` cores, ``maxmem`` bytes, from
  their config) against each node's size;
- ``dynamic``: what the node and its services use now (``cpu`` cores, ``mem`` bytes),
  a service not running yet counted at its maxima.

A service loads the node it is on and, while it moves, its target too
(:func:`used_service_nodes`). Nodes to start a service on are ranked with TOPSIS over
four criteria (average and highest CPU and memory load across the cluster if it started
there; memory weighs most). The imbalance of the cluster is the coefficient of variation
of the node loads (load = mean of CPU and memory share); auto-rebalancing looks for the
move of a running service (with its positive-affinity peers) that lowers it most, by
exhaustive search or by TOPSIS.

Every usage keeps each service's contribution, so one state change costs one
:meth:`Usage.remove_service_usage` and one :meth:`Usage.add_service_usage`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hafence.ha.env import Env

# TOPSIS criteria of Proxmox's HA scheduler (all "lower is better"), normalised weights
_WEIGHTS = (1.0, 2.0, 5.0, 10.0)  # average CPU, highest CPU, average memory, highest memory
_W = tuple(w / sum(_WEIGHTS) for w in _WEIGHTS)

_CURRENT_STATES = frozenset(
    {"started", "request_stop", "fence", "freeze", "error", "recovery", "migrate", "relocate"}
)
_TARGET_STATES = frozenset({"migrate", "relocate", "request_start_balance"})


def used_service_nodes(
    online: Container[str], sd: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """``(current, target)``: the online nodes a service in this state puts load on."""
    state, node, target = sd.get("state"), sd.get("node"), sd.get("target")
    if state in ("stopped", "request_start"):
        return None, None
    current = node if state in _CURRENT_STATES and node in online else None
    tgt = target if state in _TARGET_STATES and target is not None and target in online else None
    return current, tgt


@dataclass
class NodeStats:
    """A node's load for the scheduler: cores and bytes used, and its size."""

    cpu: float = 0.0
    maxcpu: float = 0.0
    mem: float = 0.0
    maxmem: float = 0.0

    def add_started(self, res: Mapping[str, float]) -> None:
        """As if ``res`` started here, at its maxima (maxcpu 0: all of this node's CPUs)."""
        self.cpu += res["maxcpu"] if res["maxcpu"] else self.maxcpu
        self.mem += res["maxmem"]

    def add_running(self, res: Mapping[str, float]) -> None:
        self.cpu += res["cpu"]
        self.mem += res["mem"]

    def remove_running(self, res: Mapping[str, float]) -> None:
        self.cpu = max(0.0, self.cpu - res["cpu"])
        self.mem = max(0.0, self.mem - res["mem"])

    def cpu_load(self) -> float:
        return self.cpu / self.maxcpu

    def mem_load(self) -> float:
        return self.mem / self.maxmem

    def load(self) -> float:
        return (self.cpu_load() + self.mem_load()) / 2


def node_imbalance(loads: list[float]) -> float:
    """Coefficient of variation of the node loads (0: all equal)."""
    if len(loads) < 2:
        return 0.0
    total = sum(loads)
    if total == 0.0:
        return 0.0
    mean = total / len(loads)
    sd = math.sqrt(sum((x - mean) ** 2 for x in loads) / len(loads))
    return sd / mean


def _truncate(value: float) -> float:
    """Imbalances compare equal up to 15 significant digits (float noise aside)."""
    factor = 10.0**15
    return math.trunc(factor * value) / factor


def _alternative(stats: Iterable[NodeStats]) -> tuple[float, float, float, float]:
    stats = list(stats)
    cpus = [s.cpu_load() for s in stats]
    mems = [s.mem_load() for s in stats]
    n = len(stats)
    return (
        1.0 + math.sqrt(sum(c * c for c in cpus) / n),
        1.0 + max(cpus, default=0.0),
        1.0 + math.sqrt(sum(m * m for m in mems) / n),
        1.0 + max(mems, default=0.0),
    )


def topsis_scores(rows: list[tuple[float, ...]]) -> list[float]:
    """Closeness of each alternative to the ideal one (1.0 best), criteria all minimised."""
    if not rows:
        return []
    cols = range(len(_W))
    norms = [math.sqrt(sum(r[j] ** 2 for r in rows)) for j in cols]
    m = [[r[j] / norms[j] if norms[j] else r[j] for j in cols] for r in rows]
    best = [min(r[j] for r in m) for j in cols]
    worst = [max(r[j] for r in m) for j in cols]
    out = []
    for r in m:
        d_best = math.sqrt(sum(((r[j] - best[j]) * _W[j]) ** 2 for j in cols))
        d_worst = math.sqrt(sum(((r[j] - worst[j]) * _W[j]) ** 2 for j in cols))
        out.append(d_worst / (d_best + d_worst) if d_best + d_worst else 0.0)
    return out


@dataclass(frozen=True)
class Migration:
    sid: str  # the leading service of the moved bundle
    source: str
    target: str


@dataclass(frozen=True)
class ScoredMigration:
    migration: Migration
    imbalance: float  # of the cluster after the move


class Usage:
    """The ``basic`` usage: services per online node."""

    mode = "basic"

    def __init__(self, env: Env, nodes: Iterable[str]) -> None:
        self.env = env
        self.services: dict[str, dict[str, Any]] = {n: {} for n in nodes}
        self._placed: dict[str, tuple[str | None, str | None, bool]] = {}

    def list_nodes(self) -> list[str]:
        return list(self.services)

    def contains_node(self, node: str | None) -> bool:
        return node in self.services

    def add_service_usage(self, sid: str, sd: Mapping[str, Any]) -> None:
        if sd.get("state") in ("stopped", "request_start"):
            return  # loads no node (every service is added every round: the quick way out)
        current, target = used_service_nodes(self.services, sd)
        # a service knows it runs only in 'started' (the flag); in any other state it
        # runs where it is
        if sd.get("state") == "started":
            running = bool(sd.get("running"))
        else:
            running = current is not None
        self.add_service(sid, current, target, running)

    def add_service(self, sid: str, current: str | None, target: str | None, running: bool) -> None:
        for node in (current, target):
            if node is None:
                continue
            if node in self.services:
                self.services[node][sid] = True
            else:
                self.env.log(
                    "warning",
                    f"unable to add service '{sid}' usage to node '{node}' - node not in "
                    "usage hash",
                )
        if current is not None or target is not None:
            self._placed[sid] = (current, target, running)

    def remove_service_usage(self, sid: str) -> None:
        placed = self._placed.pop(sid, None)
        if placed is not None:
            for node in placed[:2]:
                if node is not None:
                    self.services.get(node, {}).pop(sid, None)

    def score_nodes_to_start_service(self, sid: str) -> dict[str, float]:
        """Lower is better."""
        return {n: float(len(s)) for n, s in self.services.items()}

    def calculate_node_imbalance(self) -> float:
        return 0.0

    def score_best_balancing_migrations(
        self, candidates: list[dict[str, Any]], limit: int, topsis: bool = False
    ) -> list[ScoredMigration]:
        return []

    def select_best_balancing_migration(
        self, candidates: list[dict[str, Any]], topsis: bool = False
    ) -> ScoredMigration | None:
        best = self.score_best_balancing_migrations(candidates, 1, topsis)
        return best[0] if best else None


class _SchedulerUsage(Usage):
    """What static and dynamic have in common: per-node stats and TOPSIS."""

    kind = ""

    def __init__(
        self,
        env: Env,
        nodes: Iterable[str],
        node_stats: Mapping[str, Mapping[str, Any]],
        service_stats: Mapping[str, Mapping[str, Any]],
    ) -> None:
        nodes = list(nodes)
        self.base: dict[str, NodeStats] = {}
        for n in nodes:
            stats = node_stats.get(n)
            if not stats:
                raise ValueError(f"did not get {self.kind} node usage information for '{n}'")
            if stats.get("maxcpu") is None:
                raise ValueError(f"{self.kind} node usage information for '{n}' missing cpu count")
            if stats.get("maxmem") is None:
                raise ValueError(f"{self.kind} node usage information for '{n}' missing memory")
            self.base[n] = self._node_base(stats)
        super().__init__(env, nodes)
        self.service_stats = service_stats
        self._stats: dict[str, dict[str, float]] = {}  # sid -> its resource stats

    def _node_base(self, stats: Mapping[str, Any]) -> NodeStats:
        raise NotImplementedError

    def _resource(self, usage: Mapping[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    def _usage_of(self, sid: str) -> dict[str, float]:
        usage = (self.service_stats.get(sid) or {}).get("usage")
        if not usage:
            raise ValueError(f"did not get {self.kind} service usage information for '{sid}'")
        return self._resource(usage)

    def add_service(self, sid: str, current: str | None, target: str | None, running: bool) -> None:
        if current is None and target is None:
            return  # puts no load on any node
        if current is None:  # only a target (a balanced start): it is there, not moving
            current, target = target, None
        try:
            stats = self._usage_of(sid)
        except ValueError as exc:
            self.env.log("warning", f"unable to add service '{sid}' - {exc}")
            return
        self._stats[sid] = stats
        self._placed[sid] = (current, target, running)

    def remove_service_usage(self, sid: str) -> None:
        self._placed.pop(sid, None)
        self._stats.pop(sid, None)

    def _place(self, stats: dict[str, NodeStats], sid: str, where: tuple) -> None:
        raise NotImplementedError

    def node_stats(self) -> dict[str, NodeStats]:
        """Every online node's stats with the services as they are placed now."""
        stats = {n: NodeStats(**vars(b)) for n, b in self.base.items()}
        for sid, where in self._placed.items():
            self._place(stats, sid, where)
        return stats

    def score_nodes_to_start_service(self, sid: str) -> dict[str, float]:
        try:
            res = self._usage_of(sid)
        except ValueError as exc:
            self.env.log(
                "err",
                f"unable to score nodes according to {self.kind} usage for service '{sid}' - {exc}",
            )
            return self._fallback_scores()
        stats = self.node_stats()
        nodes = list(stats)
        rows = []
        for target in nodes:
            alt = {n: NodeStats(**vars(s)) for n, s in stats.items()}
            alt[target].add_started(res)
            rows.append(_alternative(alt.values()))
        return {n: -s for n, s in zip(nodes, topsis_scores(rows), strict=True)}

    def _fallback_scores(self) -> dict[str, float]:
        return {n: 0.0 for n in self.services}

    def calculate_node_imbalance(self) -> float:
        return node_imbalance([s.load() for s in self.node_stats().values()])

    def _candidates(self, compact: list[dict[str, Any]]) -> list[tuple[Migration, dict]]:
        """Each bundle to each of its possible targets, with the bundle's summed usage."""
        out = []
        for cand in compact:
            total = {"cpu": 0.0, "maxcpu": 0.0, "mem": 0.0, "maxmem": 0.0}
            try:
                for sid in cand["resources"]:
                    for k, v in self._usage_of(sid).items():
                        total[k] += v
            except ValueError:
                continue
            source = self._placed.get(cand["leader"], (None,))[0]
            if source is None:
                continue
            for target in cand["nodes"]:
                out.append((Migration(cand["leader"], source, target), total))
        return out

    def score_best_balancing_migrations(
        self, candidates: list[dict[str, Any]], limit: int, topsis: bool = False
    ) -> list[ScoredMigration]:
        stats = self.node_stats()
        moves = self._candidates(candidates)

        def after(mig: Migration, res: dict) -> list[NodeStats]:
            out = []
            for n, s in stats.items():
                s = NodeStats(**vars(s))
                if n == mig.source:
                    s.remove_running(res)
                elif n == mig.target:
                    s.add_running(res)
                out.append(s)
            return out

        def imbalance(mig: Migration, res: dict) -> float:
            return _truncate(node_imbalance([s.load() for s in after(mig, res)]))

        if not topsis:
            scored = [ScoredMigration(m, imbalance(m, r)) for m, r in moves]
            scored.sort(key=lambda s: (s.imbalance, s.migration.sid, s.migration.source,
                                       s.migration.target))  # fmt: skip
            return scored[:limit]
        scores = topsis_scores([_alternative(after(m, r)) for m, r in moves])
        ranked = sorted(range(len(moves)), key=lambda i: -scores[i])
        return [ScoredMigration(moves[i][0], imbalance(*moves[i])) for i in ranked[:limit]]


class StaticUsage(_SchedulerUsage):
    """``static``: services at their configured maxima, nodes by their size."""

    mode = kind = "static"

    def _node_base(self, stats: Mapping[str, Any]) -> NodeStats:
        return NodeStats(0.0, float(int(stats["maxcpu"])), 0.0, float(int(stats["maxmem"])))

    def _resource(self, usage: Mapping[str, Any]) -> dict[str, float]:
        maxcpu, maxmem = float(usage.get("maxcpu") or 0), float(usage.get("maxmem") or 0)
        return {"cpu": maxcpu, "maxcpu": maxcpu, "mem": maxmem, "maxmem": maxmem}

    def _place(self, stats: dict[str, NodeStats], sid: str, where: tuple) -> None:
        for node in where[:2]:
            if node in stats:
                stats[node].add_started(self._stats[sid])

    def _fallback_scores(self) -> dict[str, float]:
        return {n: 0.0 for n in self.services}


class DynamicUsage(_SchedulerUsage):
    """``dynamic``: what nodes use now (their services' usage included); a moving
    service also loads its target."""

    mode = kind = "dynamic"

    def _node_base(self, stats: Mapping[str, Any]) -> NodeStats:
        return NodeStats(
            float(stats.get("cpu") or 0.0),
            float(int(stats["maxcpu"])),
            float(int(stats.get("mem") or 0)),
            float(int(stats["maxmem"])),
        )

    def _resource(self, usage: Mapping[str, Any]) -> dict[str, float]:
        return {
            "cpu": float(usage.get("cpu") or 0.0),
            "maxcpu": float(usage.get("maxcpu") or 0.0),
            "mem": float(int(usage.get("mem") or 0)),
            "maxmem": float(int(usage.get("maxmem") or 0)),
        }

    def _place(self, stats: dict[str, NodeStats], sid: str, where: tuple) -> None:
        # the node figures hold what runs where it runs (a service still starting too)
        target = where[1]
        if target in stats:
            stats[target].add_running(self._stats[sid])


def make_usage(env: Env, mode: str, nodes: list[str]) -> tuple[Usage, dict[str, dict[str, Any]]]:
    """The usage for ``mode`` (``basic`` when the mode's figures are missing, logged), and
    the service stats it was built from."""
    service_stats: dict[str, dict[str, Any]] = {}
    usage: Usage | None = None
    factory: Callable[[], Usage] | None = None
    if mode == "static":

        def factory() -> Usage:
            nonlocal service_stats
            service_stats = env.get_static_service_stats()
            return StaticUsage(env, nodes, env.get_static_node_stats(), service_stats)

    elif mode == "dynamic":

        def factory() -> Usage:
            nonlocal service_stats
            service_stats = env.get_dynamic_service_stats()
            return DynamicUsage(env, nodes, env.get_dynamic_node_stats(), service_stats)

    elif mode != "basic":
        env.log("warning", f"got unknown scheduler mode '{mode}', using 'basic'")
    if factory is not None:
        try:
            usage = factory()
        except Exception as exc:
            env.log("warning", f"fallback to 'basic' scheduler mode, init for '{mode}' failed - "
                    f"{exc}")  # fmt: skip
    if usage is None:
        service_stats = env.get_basic_service_stats()
        usage = Usage(env, nodes)
    return usage, service_stats
