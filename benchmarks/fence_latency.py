#!/usr/bin/env python3
"""Fence latency: hafence's ``ipmi`` driver vs ClusterLabs ``fence_ipmilan``.

Starts one OpenIPMI ``ipmi_sim`` on loopback and times, several rounds each, against
that same simulated BMC:

* status;
* verified off: power off, then status polled until off (hafence: the real Fencer
  with ``poll_interval``; fence_ipmilan: its own off + ``power_wait`` + status);
* verified reboot: off, confirmed off, on, confirmed on (both tools' default method).

hafence runs with a warm session (a fencing daemon keeps its BMC sessions alive) and,
for comparison, "cold" with a fresh IPMI login every round. fence_ipmilan starts a new
process (and ipmitool processes) per call and logs in every time, as it does in
production; it runs with its defaults (power_wait=2 s after a power command) and, as
"fence_ipmilan pw0", with power_wait=0. Options reach fence_ipmilan on stdin, never
on the command line.

    python benchmarks/fence_latency.py [--rounds N] [--poll-interval S] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from hafence.fence import Fencer
from hafence.plugins import get_registry
from hafence.simdevices.ipmi_sim import IpmiSim

ACTIONS = ("status", "off", "reboot")


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


# -- hafence ---------------------------------------------------------------------------------
async def time_hafence(sim: IpmiSim, action: str, rounds: int, poll: float, cold: bool) -> list:
    from hafence_ipmi.session import SessionPool

    registry = get_registry()
    cls = registry.fence_driver("ipmi")
    pool = SessionPool()
    opts = sim.driver_options(poll_interval=poll, power_timeout=20.0, timeout=10.0)
    fencer = Fencer(registry=registry, retries=0, actor="bench")
    if not cold:  # warm-up: log in once, as a running daemon would have
        await cls(opts, pool=pool).status()
    times = []
    for _ in range(rounds):
        sim.set_power(True)
        if cold:
            await asyncio.to_thread(pool.logout_all)
            # pyghmi's logout does not wait for the reply; one landing in the middle of
            # the next login costs that login a 0.5-1 s retransmit. Not what we measure.
            await asyncio.sleep(0.05)
        drv = cls(opts, label="bench", pool=pool)
        t0 = time.perf_counter()
        res = await fencer.run_device(drv, action, record=False)
        times.append(time.perf_counter() - t0)
        want = {"status": "on", "off": "off", "reboot": "on"}[action]
        if cold and drv.logins != len(times):
            raise SystemExit(f"cold round did not log in afresh ({drv.logins} logins)")
        if not res.ok or res.state != want or sim.power != want:
            raise SystemExit(f"hafence {action} failed: {res}")
    return times


# -- fence_ipmilan ---------------------------------------------------------------------------
def time_fence_ipmilan(sim: IpmiSim, action: str, rounds: int, **extra: object) -> list[float]:
    stdin = "".join(
        f"{k}={v}\n"
        for k, v in {
            "action": action,
            "ip": sim.host,
            "ipport": sim.port,
            "username": sim.user,
            "password": sim.password,
            "lanplus": 1,
            "cipher": 3,
            **extra,
        }.items()
    )
    times = []
    for _ in range(rounds):
        sim.set_power(True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["fence_ipmilan"], input=stdin, capture_output=True, text=True, timeout=120
        )
        times.append(time.perf_counter() - t0)
        want = {"status": "on", "off": "off", "reboot": "on"}[action]
        if proc.returncode != 0 or sim.power != want:
            err = proc.stderr.replace(sim.password, "******").strip().splitlines()[-1:]
            raise SystemExit(f"fence_ipmilan {action} failed (rc {proc.returncode}): {err}")
    return times


async def bench(rounds: int, poll: float) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {a: {} for a in ACTIONS}
    with IpmiSim(password="bench-Pw-1") as sim:
        for action in ACTIONS:
            runs: dict[str, Callable[[], Awaitable[list[float]]]] = {
                "hafence": lambda a=action: time_hafence(sim, a, rounds, poll, cold=False),
                "hafence cold": lambda a=action: time_hafence(sim, a, rounds, poll, cold=True),
            }
            for name, run in runs.items():
                results[action][name] = await run()
            results[action]["fence_ipmilan"] = await asyncio.to_thread(
                time_fence_ipmilan, sim, action, rounds
            )
            if action != "status":  # without its default 2 s wait after a power command
                results[action]["fence_ipmilan pw0"] = await asyncio.to_thread(
                    time_fence_ipmilan, sim, action, rounds, power_wait=0
                )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds per action and tool")
    ap.add_argument(
        "--poll-interval", type=float, default=0.02, help="hafence status poll interval (s)"
    )
    ap.add_argument("--json", action="store_true", help="print raw timings as JSON")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    for tool in ("ipmi_sim", "fence_ipmilan", "ipmitool"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (scripts/install.sh installs it)")
    results = asyncio.run(bench(args.rounds, args.poll_interval))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"fence latency against one ipmi_sim, {args.rounds} rounds each (seconds)\n")
    print(f"{'action':<16}{'tool':<19}{'median':>9}{'p90':>9}{'vs fence_ipmilan':>19}")
    for action in ACTIONS:
        ref = statistics.median(results[action]["fence_ipmilan"])
        label = {"off": "verified off", "reboot": "verified reboot"}.get(action, action)
        for tool, times in results[action].items():
            med = statistics.median(times)
            ratio = "" if tool == "fence_ipmilan" else f"{ref / med:.1f}x faster"
            print(f"{label:<16}{tool:<19}{med:>9.3f}{p90(times):>9.3f}{ratio:>19}")
            label = ""
    off = results["off"]
    ratio = statistics.median(off["fence_ipmilan"]) / statistics.median(off["hafence"])
    verdict = "meets" if ratio >= 3 else "MISSES"
    print(
        f"\nverified off: hafence {ratio:.1f}x faster than fence_ipmilan ({verdict} the 3x target)"
    )


if __name__ == "__main__":
    main()
