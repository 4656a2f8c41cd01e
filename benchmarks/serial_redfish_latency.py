#!/usr/bin/env python3
"""Fence latency of the ``serial`` and ``redfish`` drivers against their test peers.

* serial: a power switch played on a pty (``tests.peers.serial_device``),
  with a password login before every command, and the same switch behind an RFC 2217
  terminal server on loopback;
* redfish: sushy-tools' emulator (``tests.peers.redfish``) over HTTP with
  basic auth and over HTTPS with a Redfish session, and, for comparison, ClusterLabs'
  ``fence_redfish`` (HTTPS, a new process per call, options on stdin) if installed.

Times status and verified off (off, then status polled until off, through the real
Fencer with ``poll_interval`` 0.02 s). Every round checks the peer's power state.

    python benchmarks/serial_redfish_latency.py [--rounds N] [--json]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from hafence.fence import Fencer
from hafence.plugins import get_registry
from tests.peers.redfish import RedfishEmulator
from tests.peers.serial_device import SerialDevice

FENCER = {"power_timeout": 10.0, "poll_interval": 0.02}


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


async def time_driver(
    name: str, options: dict[str, Any], reset: Callable[[], None], check: Callable[[], str],
    rounds: int,
) -> dict[str, list[float]]:  # fmt: skip
    registry = get_registry()
    fencer = Fencer(registry=registry, retries=0, actor="bench")
    driver = registry.fence_driver(name)({**options, **FENCER}, label=name)
    out: dict[str, list[float]] = {"status": [], "off": []}
    try:
        for _ in range(rounds):
            reset()
            t0 = time.perf_counter()
            res = await fencer.run_device(driver, "status", record=False)
            out["status"].append(time.perf_counter() - t0)
            assert res.ok and res.state == "on", res
            t0 = time.perf_counter()
            res = await fencer.run_device(driver, "off", record=False)
            out["off"].append(time.perf_counter() - t0)
            assert res.ok and check() == "off", res
    finally:
        await driver.close()
    return out


def fence_redfish_path() -> str | None:
    for path in (shutil.which("fence_redfish"), "/usr/sbin/fence_redfish"):
        if path and Path(path).exists():
            return path
    return None


def time_fence_redfish(bmc: RedfishEmulator, rounds: int) -> dict[str, list[float]]:
    agent = fence_redfish_path()
    assert agent
    opts = "".join(f"{k}={v}\n" for k, v in bmc.agent_options().items())
    out: dict[str, list[float]] = {"status": [], "off": []}
    for _ in range(rounds):
        bmc.set_power(True)
        for action, ok in (("status", (0,)), ("off", (0,))):
            t0 = time.perf_counter()
            r = subprocess.run([agent], input=f"action={action}\n{opts}", capture_output=True,
                               text=True, check=False)  # fmt: skip
            out[action].append(time.perf_counter() - t0)
            assert r.returncode in ok, r.stderr
        assert bmc.power() == "off"
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, dict[str, list[float]]] = {}

    for transport in ("pty", "rfc2217"):
        with SerialDevice(outlets=2, password="bench-Pw1", transport=transport) as dev:
            results[f"serial {transport}"] = await time_driver(
                "serial", {**dev.driver_options(2), "timeout": 5.0},
                lambda dev=dev: dev.set_power(True, 2), lambda dev=dev: dev.power(2),
                args.rounds,
            )  # fmt: skip
    with RedfishEmulator() as bmc:
        results["redfish http basic"] = await time_driver(
            "redfish", {**bmc.driver_options(), "auth": "basic", "timeout": 5.0},
            lambda: bmc.set_power(True), bmc.power, args.rounds,
        )  # fmt: skip
    with RedfishEmulator(tls=True) as bmc:
        results["redfish https session"] = await time_driver(
            "redfish", {**bmc.driver_options(), "auth": "session", "timeout": 5.0},
            lambda: bmc.set_power(True), bmc.power, args.rounds,
        )  # fmt: skip
        if fence_redfish_path():
            results["fence_redfish https"] = time_fence_redfish(bmc, args.rounds)

    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"{'tool':24} {'action':13} {'median':>8} {'p90':>8}   (seconds, {args.rounds} rounds)")
    for tool, actions in results.items():
        for action, values in actions.items():
            label = "verified off" if action == "off" else action
            med, top = statistics.median(values), p90(values)
            print(f"{tool:24} {label:13} {med:8.3f} {top:8.3f}")


if __name__ == "__main__":
    asyncio.run(main())
