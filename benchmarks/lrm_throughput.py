"""How fast one node's LRM starts many services, and whether it starts them all.

    python benchmarks/lrm_throughput.py [--services N] [--max-worker N] [--interval S] [--json]

What runs: a real CRM and a real LRM of one node (``hafence.ha.crm`` / ``hafence.ha.lrm``
on ``RealEnv``) on a fresh embedded store in a temporary directory, in this process,
round after round like the daemons (one round per ``--interval``). The N services are
``dummy:`` resources (one ``sleep`` process each), all configured on the node at once.
It reports how many run and the seconds from the first round until all ran; it gives up
when ``--stall-rounds`` rounds in a row start nothing more (then ``started`` < N and
``seconds_to_all_started`` is null). Every process is killed at the end.

``--json`` prints ``{"services", "started", "seconds_to_all_started"}`` (plus ``rounds``
and ``max_worker``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hafence.ha.config import default_resource
from hafence.ha.crm import CRM
from hafence.ha.lrm import LRM
from hafence.ha.realenv import RealEnv, Timings
from hafence.store import EmbeddedStore


def run(
    services: int, max_worker: int, interval: float, stall_rounds: int, workdir: Path
) -> dict[str, Any]:
    timings = Timings(interval=interval, lease_ttl=max(10.0, 20 * interval),
                      watchdog_timeout=max(5.0, 10 * interval), fence_delay=60,
                      node_timeout=max(5.0, 10 * interval))  # fmt: skip
    store = EmbeddedStore(workdir / "ha")
    store.write_datacenter({"ha": {"max_worker": max_worker}})
    sids = [f"dummy:s{i:05d}" for i in range(services)]
    store.write_resources({sid: {**default_resource(), "node": "node1"} for sid in sids})
    crm_env = RealEnv("node1", store, role="crm", timings=timings)
    lrm_env = RealEnv("node1", store, role="lrm", timings=timings, state_dir=workdir / "state")
    crm, lrm = CRM(crm_env), LRM(lrm_env)
    dummy = lrm_env.resource_types()["dummy"]
    running = best = stalled = rounds = 0
    t0 = time.monotonic()
    try:
        while running < services and stalled < stall_rounds:
            started = time.monotonic()
            crm_env.heartbeat()
            crm.do_one_iteration()
            lrm.do_one_iteration()
            rounds += 1
            running = sum(1 for sid in sids if dummy.pid(sid.partition(":")[2]))
            stalled = 0 if running > best else stalled + 1
            best = max(best, running)
            if running < services:
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
        elapsed = time.monotonic() - t0
    finally:
        lrm_env.close()
        crm_env.close()
        for pidfile in (workdir / "state" / "dummy").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
    return {
        "services": services,
        "started": running,
        "seconds_to_all_started": round(elapsed, 3) if running == services else None,
        "rounds": rounds,
        "max_worker": max_worker,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--max-worker", type=int, default=4)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds per round")
    ap.add_argument("--stall-rounds", type=int, default=50,
                    help="give up after this many rounds without progress")  # fmt: skip
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hafence-lrm-bench-") as tmp:
        res = run(args.services, args.max_worker, args.interval, args.stall_rounds, Path(tmp))
    if args.json:
        print(json.dumps(res))
    else:
        took = res["seconds_to_all_started"]
        print(
            f"{res['started']} of {res['services']} services started "
            f"(max_worker {res['max_worker']}, {res['rounds']} rounds"
            + (f", all in {took:.2f} s)" if took is not None else ", NOT all)")
        )
    return 0 if res["started"] == res["services"] else 1


if __name__ == "__main__":
    sys.exit(main())
