"""How the master CRM's round scales with services and nodes.

    python benchmarks/crm_scale.py [--sizes 1000/16,10000/100,30000/300] [--store sim,embedded]
                                   [--rounds N] [--json]

For each size (services/nodes) and store, in a fresh process (so ``rss_mib`` is that
run's peak):

- ``mass_start_s``: the first master round after all services were added at once
  (every service goes request_start -> started);
- ``steady_round_ms``: the median of ``--rounds`` rounds once every service runs, with
  every LRM reporting a result for every service each round, as real LRMs do (so the
  master hands out a new uid per service and round); ``steady_round_min_ms`` the
  fastest of them (the one a busy machine disturbed least);
- ``store_ops_per_round``: reads, writes and listings of the store in one steady round
  (0 for the simulator, whose state is in memory);
- ``rss_mib``: peak resident memory of the run;
- ``load_1m``: the machine's load average at the end of the run (a busy machine
  stretches the wall times; the ``*_cpu_*`` figures much less).

What runs: ``hafence.ha.manager.Manager`` (the master's round) on the simulator's Env
(``sim``) or on ``RealEnv`` over an ``EmbeddedStore`` in a temporary directory
(``embedded``: resources.cfg, LRM status files and membership leases written as the
daemons write them). The LRMs are not run; their status files are written directly.
Times are wall clock (``*_cpu_*``: this process's CPU time, less sensitive to a busy
machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hafence.ha import state as st
from hafence.ha.config import default_resource
from hafence.ha.manager import Manager


def _services(services: int, nodes: list[str]) -> dict[str, dict[str, Any]]:
    return {
        f"vm:{100 + i}": {**default_resource(), "node": nodes[i % len(nodes)]}
        for i in range(services)
    }


def _report_results(m: Manager, write: Any) -> None:
    """Every LRM reports success for every command it was given (a steady cluster)."""
    by_node: dict[str, dict[str, Any]] = {}
    for sid, sd in m.ss.items():
        res = by_node.setdefault(sd["node"], {})
        res[sd["uid"]] = {"sid": sid, "state": sd["state"], "exit_code": st.SUCCESS}
    for node in m.ns.nodes():
        write(node, {"state": "active", "mode": "active", "timestamp": int(time.time()),
                     "results": by_node.get(node, {})})  # fmt: skip


def _timed(fn: Any) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def run_sim(services: int, nodes: int, rounds: int) -> dict[str, Any]:
    from hafence.sim.env import SimEnv
    from hafence.sim.hardware import Hardware

    names = [f"node{i}" for i in range(1, nodes + 1)]
    hw = Hardware(
        status={n: {"power": "on", "network": "on", "shutdown": None} for n in names},
        service_config=_services(services, names),
    )
    env = SimEnv(hw, "node1", "crm")
    env.loop_start(10)
    m = Manager(env)

    def write(node: str, status: dict[str, Any]) -> None:
        hw.lrm_status[node] = status

    return _measure(m, write, rounds, lambda: 0)


def run_embedded(services: int, nodes: int, rounds: int) -> dict[str, Any]:
    from hafence.ha.realenv import RealEnv, Timings, node_alive_lease
    from hafence.store import EmbeddedStore

    class CountingStore(EmbeddedStore):
        ops = 0

        def _get(self, name: str) -> bytes | None:
            CountingStore.ops += 1
            return super()._get(name)

        def _put(self, name: str, data: bytes) -> None:
            CountingStore.ops += 1
            super()._put(name, data)

        def _list(self, prefix: str) -> list[str]:
            CountingStore.ops += 1
            return super()._list(prefix)

    tmp = tempfile.TemporaryDirectory(prefix="hafence-crm-scale-")
    store = CountingStore(Path(tmp.name) / "ha")
    names = [f"node{i}" for i in range(1, nodes + 1)]
    store.write_resources(_services(services, names))
    for n in names:
        store.write_lrm_status(n, {"state": "wait_for_agent_lock", "mode": "active"})
        store.acquire_lease(node_alive_lease(n), n, 3600)
    env = RealEnv("node1", store, timings=Timings())
    # only the manager lock's holder may write the manager status, as a master does
    store.acquire_lease(st.MANAGER_LOCK, "node1", 3600)
    m = Manager(env)

    def write(node: str, status: dict[str, Any]) -> None:
        store.write_lrm_status(node, status)

    def ops() -> int:
        n, CountingStore.ops = CountingStore.ops, 0
        return n

    try:
        return _measure(m, write, rounds, ops)
    finally:
        env.close()
        tmp.cleanup()


def _measure(m: Manager, write: Any, rounds: int, ops: Any) -> dict[str, Any]:
    mass_wall, mass_cpu = _timed(m.manage)
    assert all(sd["state"] == "started" for sd in m.ss.values()), "mass start incomplete"
    walls, cpus, store_ops = [], [], []
    for _ in range(rounds + 1):
        _report_results(m, write)
        ops()
        wall, cpu = _timed(m.manage)
        store_ops.append(ops())
        walls.append(wall)
        cpus.append(cpu)
    walls, cpus = walls[1:], cpus[1:]  # the first one takes in the first results
    return {
        "mass_start_s": round(mass_wall, 3),
        "mass_start_cpu_s": round(mass_cpu, 3),
        "steady_round_ms": round(statistics.median(walls) * 1000, 1),
        "steady_round_min_ms": round(min(walls) * 1000, 1),  # the least disturbed round
        "steady_round_cpu_ms": round(statistics.median(cpus) * 1000, 1),
        "store_ops_per_round": statistics.median(store_ops[1:]),
    }


def one(services: int, nodes: int, store: str, rounds: int) -> dict[str, Any]:
    run = run_sim if store == "sim" else run_embedded
    res = {"nodes": nodes, "services": services, "store": store}
    res.update(run(services, nodes, rounds))
    res["rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    res["load_1m"] = round(os.getloadavg()[0], 2)  # the machine's load the figures carry
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000/16,10000/100,30000/300",
                    help="services/nodes,... (default %(default)s)")  # fmt: skip
    ap.add_argument("--store", default="sim,embedded",
                    help="sim, embedded or both: sim,embedded (default %(default)s)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # services/nodes/store: run in-process
    args = ap.parse_args()
    if args.one:
        services, nodes, store = args.one.split("/")
        print(json.dumps(one(int(services), int(nodes), store, args.rounds)))
        return 0
    stores = args.store.split(",")
    if unknown := set(stores) - {"sim", "embedded"}:
        ap.error(f"--store: unknown store {', '.join(sorted(unknown))} (sim, embedded)")
    results = []
    for size in args.sizes.split(","):
        services, nodes = size.split("/")
        for store in stores:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", f"{services}/{nodes}/{store}",
                 "--rounds", str(args.rounds)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            res = json.loads(proc.stdout)
            results.append(res)
            if not args.json:
                print(
                    f"{res['services']:>6} services / {res['nodes']:>3} nodes, {store:>8}: "
                    f"steady round {res['steady_round_ms']:7.1f} ms "
                    f"(min {res['steady_round_min_ms']:.1f}, "
                    f"cpu {res['steady_round_cpu_ms']:.1f}), mass start "
                    f"{res['mass_start_s']:.2f} s (cpu {res['mass_start_cpu_s']:.2f}), "
                    f"{res['store_ops_per_round']} store ops/round, {res['rss_mib']} MiB, "
                    f"load {res['load_1m']}",
                    flush=True,
                )
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
