#!/usr/bin/env python3
"""Fence latency of the ``snmp_ifmib`` driver against the simulated switch (snmpsim).

Times status (read ifAdminStatus) and verified off (set ifAdminStatus down, then read it
until down, through the real Fencer with ``poll_interval`` 0.02 s), over SNMP v2c and
v3 (SHA/AES), with one warm driver as a running daemon holds it. Every round checks the
agent's own record of the port.

    python benchmarks/snmp_latency.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from hafence.fence import Fencer
from hafence.plugins import get_registry
from hafence.simdevices.snmp_agent import snmp_agent

FENCER = {"power_timeout": 10.0, "poll_interval": 0.02, "timeout": 5.0}


async def bench(agent: object, version: str, rounds: int) -> dict[str, list[float]]:
    registry = get_registry()
    fencer = Fencer(registry=registry, retries=0, actor="bench")
    opts = {**agent.driver_options("Gi1/0/1", version=version), **FENCER}  # type: ignore[attr-defined]
    driver = registry.fence_driver("snmp_ifmib")(opts, label=f"v{version}")
    out: dict[str, list[float]] = {"status": [], "verified off": []}
    try:
        for _ in range(rounds):
            assert (await fencer.run_device(driver, "on", record=False)).ok
            t0 = time.perf_counter()
            res = await fencer.run_device(driver, "status", record=False)
            out["status"].append(time.perf_counter() - t0)
            assert res.ok and res.state == "on", res
            t0 = time.perf_counter()
            res = await fencer.run_device(driver, "off", record=False)
            out["verified off"].append(time.perf_counter() - t0)
            assert res.ok and agent.get_admin_status(1) == 2, res  # type: ignore[attr-defined]
    finally:
        await driver.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    with snmp_agent() as agent:
        results = {f"snmp v{v}": await bench(agent, v, args.rounds) for v in ("2c", "3")}
    print(
        f"{'driver':<10} {'action':<13} {'median':>8} {'max':>8}   (seconds, {args.rounds} rounds)"
    )
    for name, actions in results.items():
        for action, times in actions.items():
            print(f"{name:<10} {action:<13} {statistics.median(times):8.4f} {max(times):8.4f}")


if __name__ == "__main__":
    asyncio.run(main())
