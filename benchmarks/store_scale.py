#!/usr/bin/env python3
"""Manager status of large clusters on the stores, and etcd revisions in steady state.

For each size it writes a manager status of N services (the shape the CRM writes), reads
it back with a second client, then writes it again with one service changed and with
only the timestamp changed, on a real etcd started with **default settings** (1.5 MiB
request limit) and on the embedded store. It reports seconds, the etcd revisions each
write cost and the largest single value written. With ``--steady-seconds S`` it also
runs three nodes' real CRM and LRM state machines (RealEnv, dummy services) on etcd for
S seconds after they settled and counts the revisions they wrote.

    python benchmarks/store_scale.py [--services 1000,10000,30000] [--steady-seconds 30]
                                     [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from hafence.store import EmbeddedStore, Store, open_store
from hafence.store.etcd import CHUNKS, MANAGER_STATUS, EtcdStore
from tests.peers import etcd as peer


def manager_status(n: int, nodes: int, ts: int) -> dict[str, Any]:
    services = {
        f"vm:{100 + i}": {
            "node": f"node{1 + i % nodes}",
            "state": "started",
            "uid": f"{i:08x}abcdef12",
            "running": 1,
        }
        for i in range(n)
    }
    node_status = {f"node{k}": "online" for k in range(1, nodes + 1)}
    return {"master_node": "node1", "node_status": node_status, "service_status": services,
            "timestamp": ts}  # fmt: skip


def _revision(s: Store) -> int | None:
    return int(s.change_token()) if isinstance(s, EtcdStore) else None


def _largest(s: Store) -> int:
    if isinstance(s, EtcdStore):
        names = [MANAGER_STATUS] + [f"{CHUNKS}/{k}" for k in s._list(CHUNKS)]
        return max(len(s._get(n) or b"") for n in names)
    return (Path(s.path) / MANAGER_STATUS).stat().st_size  # type: ignore[attr-defined]


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(kind: str, writer: Store, reader: Store, n: int) -> dict[str, Any]:
    status = manager_status(n, max(3, n // 100), 1_000_000)
    rec: dict[str, Any] = {"store": kind, "services": n}
    r0 = _revision(writer)
    rec["write_s"], _ = _timed(lambda: writer.write_manager_status(status))
    rec["write_revisions"] = None if r0 is None else _revision(writer) - r0  # type: ignore[operator]
    rec["read_s"], got = _timed(reader.read_manager_status)
    assert got == status, "read back differs"
    status["service_status"]["vm:100"]["state"] = "stopped"
    status["timestamp"] += 10
    r0 = _revision(writer)
    rec["change_one_s"], _ = _timed(lambda: writer.write_manager_status(status))
    rec["change_one_revisions"] = None if r0 is None else _revision(writer) - r0  # type: ignore[operator]
    status["timestamp"] += 10
    r0 = _revision(writer)
    rec["steady_s"], _ = _timed(lambda: writer.write_manager_status(status))
    rec["steady_revisions"] = None if r0 is None else _revision(writer) - r0  # type: ignore[operator]
    rec["largest_value_bytes"] = _largest(writer)
    return rec


def steady_daemons(url: str, seconds: float, tmp: Path) -> dict[str, Any]:
    """Three nodes' CRM + LRM rounds (1 s interval) on etcd; revisions once settled."""
    from hafence_resources import DummyType

    from hafence.ha import config as hacfg
    from hafence.ha.crm import CRM
    from hafence.ha.lrm import LRM
    from hafence.ha.realenv import RealEnv
    from hafence.ha.timings import Timings

    t = Timings(interval=1, lease_ttl=20, watchdog_timeout=10, fence_delay=5, node_timeout=5)
    nodes = ("node1", "node2", "node3")
    stores = []
    daemons: list[tuple[RealEnv, Any]] = []
    for n in nodes:
        for role, cls in (("crm", CRM), ("lrm", LRM)):
            s = open_store(url)
            stores.append(s)
            types = {"dummy": DummyType(n, tmp / n)} if role == "lrm" else None
            env = RealEnv(n, s, role=role, timings=t, watchdog_socket=None, resource_types=types)
            daemons.append((env, cls(env)))
    admin = stores[0]
    admin.write_resources(
        {f"dummy:{i}": {**hacfg.default_resource(), "node": nodes[i % 3]} for i in range(6)}
    )

    def one_round() -> None:
        for env, d in daemons:
            env.heartbeat()
            d.do_one_iteration()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # settle: every service started
        one_round()
        ss = admin.read_manager_status().get("service_status", {})
        if len(ss) == 6 and all(v.get("state") == "started" for v in ss.values()):
            break
        time.sleep(t.interval)
    for _ in range(5):  # the last results travel once more
        one_round()
        time.sleep(t.interval)
    r0, t0, rounds = _revision(admin), time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        one_round()
        rounds += 1
        time.sleep(t.interval)
    revs = _revision(admin) - r0  # type: ignore[operator]
    elapsed = time.monotonic() - t0
    for env, _d in daemons:
        env.close(wait=False)
    for s in stores:
        s.close()
    return {"nodes": 3, "daemons": 6, "rounds": rounds, "seconds": round(elapsed, 1),
            "revisions": revs, "revisions_per_minute": round(revs * 60 / elapsed, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", default="1000,10000,30000")
    ap.add_argument("--steady-seconds", type=float, default=0.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.services.split(",") if x]
    results: list[dict[str, Any]] = []
    steady = None
    with tempfile.TemporaryDirectory() as td, peer.etcd_cluster(Path(td)) as c:
        for n in sizes:
            url = c.url(f"bench{n}")
            w, r = open_store(url), open_store(url)
            results.append(measure("etcd", w, r, n))
            w.close()
            r.close()
            d = Path(td) / f"ha{n}"
            results.append(measure("embedded", EmbeddedStore(d), EmbeddedStore(d), n))
        if args.steady_seconds:
            steady = steady_daemons(c.url("steady"), args.steady_seconds, Path(td))
    if args.json:
        print(json.dumps({"sizes": results, "steady_daemons": steady}, indent=2))
        return
    print(f"{'store':9} {'services':>8} {'write s':>8} {'read s':>7} {'1 change s':>10} "
          f"{'revs':>5} {'steady s':>8} {'revs':>5} {'largest value':>13}")  # fmt: skip
    for r in results:
        revs1 = "-" if r["change_one_revisions"] is None else r["change_one_revisions"]
        revs0 = "-" if r["steady_revisions"] is None else r["steady_revisions"]
        print(f"{r['store']:9} {r['services']:>8} {r['write_s']:>8.3f} {r['read_s']:>7.3f} "
              f"{r['change_one_s']:>10.3f} {revs1:>5} {r['steady_s']:>8.3f} {revs0:>5} "
              f"{r['largest_value_bytes']:>13}")  # fmt: skip
    if steady:
        print(f"\nsteady state, 3 nodes (CRM + LRM each) on etcd: {steady['revisions']} "
              f"revisions in {steady['rounds']} rounds / {steady['seconds']} s "
              f"({steady['revisions_per_minute']}/min)")  # fmt: skip


if __name__ == "__main__":
    main()
