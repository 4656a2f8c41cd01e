"""How fast the HA core decides: simulator throughput and the cost of one CRM round.

    python benchmarks/ha_core.py [--scenarios DIR] [--seeds N] [--services N] [--nodes N]

1. runs every in-scope reference scenario (tests/ha/scenarios) and reports the time per
   scenario and per simulated CRM/LRM iteration;
2. runs N random safety seeds (hafence.sim.safety) and reports the time per seed;
3. times one master CRM round (Manager.manage) on a large cluster: --nodes nodes,
   --services services all started, steady state (the round every 10 s in production).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from hafence.sim.hardware import Hardware
from hafence.sim.safety import check_seed
from hafence.sim.scenario import load

ROOT = Path(__file__).resolve().parents[1]


def bench_scenarios(base: Path) -> None:
    dirs = sorted(base.glob("test-*"))
    iterations = 0
    t0 = time.perf_counter()
    for d in dirs:
        hw = load(d)
        hw.run()
        iterations += sum(1 for line in hw.lines if line.tag.endswith("/crm")) or 1
    dt = time.perf_counter() - t0
    print(f"reference scenarios: {len(dirs)} in {dt:.2f} s ({dt / len(dirs) * 1000:.1f} ms each)")


def bench_seeds(n: int) -> None:
    times = []
    for seed in range(n):
        t0 = time.perf_counter()
        check_seed(seed)
        times.append(time.perf_counter() - t0)
    print(
        f"safety seeds: {n} in {sum(times):.2f} s (median {statistics.median(times) * 1000:.1f} ms,"
        f" max {max(times) * 1000:.1f} ms per seed)"
    )


def bench_round(nodes: int, services: int, rounds: int = 20) -> None:
    names = [f"node{i}" for i in range(1, nodes + 1)]
    hw = Hardware(
        status={n: {"power": "off", "network": "off", "shutdown": None} for n in names},
        service_config={
            f"vm:{100 + i}": {"node": names[i % nodes], "state": "started"} for i in range(services)
        },
        cmdlist=[[f"power {n} on" for n in names]],
        # a loop over every node's CRM and LRM stays within 20 s, far inside the 60 s
        # watchdog, however many nodes (1 s per iteration would outlast it at 30 nodes)
        iteration_seconds=min(1.0, 20 / (2 * nodes)),
    )
    # bring the cluster up to steady state: every service running where it belongs
    for _ in range(100):
        hw.step()
        if sum(len(r) for r in hw.running.values()) == services:
            break
    for _ in range(2):
        hw.step()
    down = [n for n, s in hw.status.items() if s["power"] != "on"]
    if down:
        raise SystemExit(f"not a steady state: {len(down)} nodes powered off (watchdog?)")
    master = next(d for d in hw.nodes.values() if d.crm and d.crm.manager)
    manager = master.crm.manager
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        manager.manage()
        times.append(time.perf_counter() - t0)
    running = sum(len(r) for r in hw.running.values())
    print(
        f"CRM round, {nodes} nodes / {services} services ({running} running): median "
        f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=Path, default=ROOT / "tests/ha/scenarios")
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--services", type=int, default=1000)
    args = ap.parse_args()
    bench_scenarios(args.scenarios)
    bench_seeds(args.seeds)
    bench_round(args.nodes, args.services)


if __name__ == "__main__":
    main()
