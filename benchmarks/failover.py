"""Failover time on a real cluster: from a node's power loss to its service running again.

    python benchmarks/failover.py [--runs N] [--json] [--cases power,power-master,...]
                                  [--nodes 3] [--state-dir DIR]

Runs on ``hafence lab`` (docs/lab.md: every node its own network namespace with an
etcd member, a watchdog-mux on a fake device, hafence-lrm and hafence-crm, and an
ipmi_sim BMC; needs root). For each case it brings a lab up, and N times: puts one
``dummy:`` service on the victim node, kills that node (every process of it at once, a
crash: its BMC still says on until the master's fence cuts the power), and samples the
service's processes in every node's namespace every 50 ms until one runs on another
node. It then heals the victim (power on, boot) and waits until the cluster is ready
again. The victim also holds the lab's service address (``ocf:vip``, IPaddr2) with a
TCP service behind it (:mod:`hafence.lab.web`); from the host, a client connects to it
every 50 ms throughout. Cases:

- ``power``: the lab's ``fast`` timings, IPMI fencing (the lab's fence.cfg: BMC, then
  the switch port), the victim is not the master;
- ``power-master``: the same, the victim is the master's own node;
- ``watchdog``: the ``fast`` timings without fence devices (an empty fence.cfg): the
  master waits for the victim's agent lock to expire (its watchdog reset it);
- ``pve-defaults``: Proxmox's timings (10 s rounds, 60 s fence delay, 120 s locks)
  without fence devices, as Proxmox runs: the reference.

Each run is split, from the CRM logs (one line per decision), into phases:
``detection`` (kill to the node marked offline: ``state changed ... => 'unknown'``, or
for the master's node the first CRM that saw it offline), ``fence`` (to the confirmed
power-off; none without fence devices), ``lock_takeover`` (to ``acknowledged - got agent
lock``: at once after a power-off, the lease's expiry without one), ``recovery_decision``
(to ``recover service ... from fenced node``) and ``start`` (to the service's process
seen running on its new node). A **double run** is a sample with two copies of the
service, or two nodes holding the address. The **client outage** of a run is the time
from the client's last answer before the kill to its first answer after it (from the
new node): what a user of the address sees; ``address_moved_s`` is from the kill to
another node holding the address (IPaddr2's start), the rest is the client's reconnect.

``--json`` prints one object: per case ``runs``, ``median_s``, ``max_s``, ``double_runs``,
``phases`` (per-phase medians) and ``client_outage_s`` (median, max); without it a table
and the phase split as a bar chart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hafence.lab import etcd
from hafence.lab.checker import running_copies
from hafence.lab.control import Lab
from hafence.lab.layout import VIP_SERVICE
from hafence.lab.web import Client

CASES = ("power", "power-master", "watchdog", "pve-defaults")
LAB_TIMINGS = {"power": "fast", "power-master": "fast", "watchdog": "fast",
               "pve-defaults": "pve"}  # fmt: skip
WITH_FENCING = {"power", "power-master"}
PHASES = ("detection", "fence", "lock_takeover", "recovery_decision", "start")
SID = "dummy:bench"
SERVICES = (SID, VIP_SERVICE)
SAMPLE = 0.05  # seconds between two looks at the service's processes (and two connects)


@dataclass
class Run:
    victim: str
    killed: float
    total: float | None = None  # None: the service never ran again within the bound
    phases: dict[str, float] = field(default_factory=dict)
    double: bool = False
    outage: float | None = None  # None: the client got no answer again within the bound
    address: float | None = None  # kill -> the service address held by another node
    etcd_leader: bool = False  # the victim's etcd member led the store's cluster


# -- one run ---------------------------------------------------------------------------------


def place(lab: Lab, node: str, timeout: float) -> None:
    """The services on ``node``, running there once, the cluster ready."""
    view = lab.cluster()
    for sid in SERVICES:
        where = (view["service_status"].get(sid) or {}).get("node")
        if where is None:
            lab.ha_manager("add", sid, "--node", node)
        elif where != node:
            lab.ha_manager("migrate", sid, node)
    deadline = time.monotonic() + timeout

    def settled() -> bool:
        copies = running_copies(lab.layout)
        return all(copies.get(sid) == [node] for sid in SERVICES) and lab.not_ready() is None

    while not settled():
        if time.monotonic() > deadline:
            raise SystemExit(f"{SERVICES} did not settle on {node}: {lab.not_ready()}")
        time.sleep(0.5)


def kill_and_watch(lab: Lab, victim: str, bound: float) -> Run:
    """Kill ``victim``; watch until the service runs elsewhere and the client is answered
    from elsewhere (or ``bound`` has passed)."""
    with Client(lab.layout.vip_addr, interval=SAMPLE) as client:
        deadline = time.monotonic() + 10
        while not any(a.node == victim for a in client.snapshot()):
            if time.monotonic() > deadline:
                raise SystemExit(f"{lab.layout.vip_addr}: no answer from {victim} before the kill")
            time.sleep(SAMPLE)
        led = etcd.leader(lab.layout) == victim
        run = Run(victim, time.time(), etcd_leader=led)
        lab.fault(victim, "kill")
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            copies = running_copies(lab.layout)
            if any(len(copies.get(sid, [])) > 1 for sid in SERVICES):
                run.double = True
            where = copies.get(SID, [])
            if run.total is None and any(n != victim for n in where):
                run.total = time.time() - run.killed
                run.phases = phases(lab, victim, run.killed, run.total)
            if run.address is None and any(n != victim for n in copies.get(VIP_SERVICE, [])):
                run.address = time.time() - run.killed
            run.outage = client.outage(run.killed, victim)
            if None not in (run.total, run.outage, run.address):
                break
            time.sleep(SAMPLE)
    return run


def crm_lines(lab: Lab, since: float) -> list[tuple[float, str]]:
    """Every CRM log line of the lab written since ``since``, by time."""
    out = []
    for node in lab.layout.nodes:
        path = lab.layout.log_dir(node) / "crm.log"
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            t = _stamp(line)
            if t is not None and t >= since - 0.001:
                out.append((t, line))
    return sorted(out)


def _stamp(line: str) -> float | None:
    """The epoch time of a daemon log line (``2026-12-02 02:38:24,183 INFO ...``)."""
    try:
        stamp, _, ms = line[:23].partition(",")
        return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000
    except ValueError:
        return None


def phases(lab: Lab, victim: str, killed: float, total: float) -> dict[str, float]:
    """The run split at the CRMs' decisions (see the module docstring)."""
    lines = crm_lines(lab, killed)

    def first(*needles: str) -> float | None:
        return next((t for t, ln in lines if any(n in ln for n in needles)), None)

    marks = {
        "detection": first(f"node '{victim}': state changed from 'online' => 'unknown'",
                           f"master node '{victim}' is offline"),
        "fence": first(f"fencing: node '{victim}' confirmed off by level"),
        "lock_takeover": first(f"acknowledged - got agent lock for node '{victim}'"),
        "recovery_decision": first(f"recover service '{SID}' from fenced node '{victim}'"),
        "start": killed + total,
    }  # fmt: skip
    out: dict[str, float] = {}
    last = killed
    for name in PHASES:
        t = marks[name]
        if t is None:  # no such step (no fence device): it took no time
            out[name] = 0.0
            continue
        t = max(t, last)
        out[name] = round(t - last, 3)
        last = t
    return out


# -- one case --------------------------------------------------------------------------------


def run_case(case: str, runs: int, nodes: int, state_dir: Path, say: Any) -> list[Run]:
    lab = Lab(state_dir / case)
    say(f"{case}: bringing a {nodes}-node lab up ({LAB_TIMINGS[case]} timings)")
    lab.up(nodes=nodes, timings=LAB_TIMINGS[case], services=())
    fence_cfg = lab.layout.fence_cfg
    kept = fence_cfg.read_bytes()
    if case not in WITH_FENCING:  # watchdog fencing only: no device in fence.cfg
        fence_cfg.write_bytes(b"")
    t = lab.timings
    settle = t.settle_bound() + 60
    out: list[Run] = []
    try:
        for i in range(runs):
            victim = pick(lab, case == "power-master", settle)
            run = kill_and_watch(lab, victim, t.recovery_bound() + 60)
            out.append(run)
            total = f"{run.total:.1f}s" if run.total is not None else "not recovered"
            outage = f"{run.outage:.1f}s" if run.outage is not None else "no answer"
            if run.address is not None:
                outage += f" (address moved after {run.address:.1f}s)"
            say(f"{case} run {i + 1}/{runs}: {victim} killed, {SID} running again after "
                f"{total}, client outage {outage}"
                f"{' (it led etcd)' if run.etcd_leader else ''} {run.phases}"
                f"{' DOUBLE RUN' if run.double else ''}")  # fmt: skip
            lab.heal([victim])
            lab.wait_ready(settle)
    finally:
        fence_cfg.write_bytes(kept)
        keep_logs(lab, state_dir / f"{case}-logs")
        lab.down()
    return out


def keep_logs(lab: Lab, dest: Path) -> None:
    """The nodes' daemon logs and the lab's event log, before ``lab down`` removes them."""
    for node in lab.layout.nodes:
        if lab.layout.log_dir(node).is_dir():
            shutil.copytree(lab.layout.log_dir(node), dest / node, dirs_exist_ok=True)
    for f in (lab.layout.events_file, lab.layout.supervisor_log):
        if f.exists():
            shutil.copy2(f, dest / f.name)


def pick(lab: Lab, master_node: bool, settle: float) -> str:
    """Put the service on the master's node (``master_node``) or on another one; that
    node. An idle lab has no master yet: the service's first node gets one elected."""
    for _ in range(5):
        master = lab.cluster()["master"]
        if master is None:
            place(lab, lab.layout.nodes[0], settle)
            continue
        want = master if master_node else next(n for n in lab.layout.nodes if n != master)
        place(lab, want, settle)
        if (lab.cluster()["master"] == want) == master_node:
            return want
    raise SystemExit("the master kept moving while the service was placed")


def summary(runs: list[Run]) -> dict[str, Any]:
    done = [r.total for r in runs if r.total is not None]
    outages = [r.outage for r in runs if r.outage is not None]
    moved = [r.address for r in runs if r.address is not None]
    med = {p: round(statistics.median(r.phases[p] for r in runs if r.total is not None), 3)
           for p in PHASES} if done else {}  # fmt: skip
    return {
        "runs": len(runs),
        "recovered": len(done),
        "median_s": _median(done),
        "max_s": _max(done),
        "double_runs": sum(r.double for r in runs),
        "victim_led_etcd": sum(r.etcd_leader for r in runs),
        "phases": med,
        "samples_s": [round(r.total, 3) if r.total is not None else None for r in runs],
        "detection_samples_s": [r.phases.get("detection") for r in runs],
        "client_outage_s": {"median": _median(outages), "max": _max(outages),
                            "answered": len(outages)},
        "address_moved_s": {"median": _median(moved), "max": _max(moved)},
        "outage_samples_s": [round(r.outage, 3) if r.outage is not None else None
                             for r in runs],
    }  # fmt: skip


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def _max(xs: list[float]) -> float | None:
    return round(max(xs), 3) if xs else None


# -- output ----------------------------------------------------------------------------------

BARS = {"detection": "█", "fence": "▓", "lock_takeover": "▒", "recovery_decision": "░",
        "start": "·"}  # fmt: skip


def table(result: dict[str, dict[str, Any]], width: int = 60) -> str:
    def sec(x: float | None) -> str:
        return f"{x:.1f}s" if x is not None else "-"

    rows = [f"{'case':<14}{'runs':>5}{'median':>9}{'max':>9}{'double':>8}"
            f"{'outage med':>12}{'outage max':>12}"]  # fmt: skip
    for case, s in result.items():
        out = s["client_outage_s"]
        rows.append(
            f"{case:<14}{s['runs']:>5}{sec(s['median_s']):>9}{sec(s['max_s']):>9}"
            f"{s['double_runs']:>8}{sec(out['median']):>12}{sec(out['max']):>12}"
        )
    longest = max((sum(s["phases"].values()) for s in result.values() if s["phases"]),
                  default=1.0) or 1.0  # fmt: skip
    rows += ["", "phase split (medians; " + "  ".join(f"{c} {p}" for p, c in BARS.items())
             + ")"]  # fmt: skip
    for case, s in result.items():
        if not s["phases"]:
            rows.append(f"{case:<14}(no recovery)")
            continue
        bar = "".join(BARS[p] * round(s["phases"][p] / longest * width) for p in PHASES)
        split = " + ".join(f"{s['phases'][p]:.1f}" for p in PHASES)
        rows.append(f"{case:<14}{bar} {split} s")
    rows += ["", "outage: the client's last answer before the kill to its first one after,"
             " connecting to the service address every 50 ms"]  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated, of: {', '.join(CASES)}")  # fmt: skip
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--state-dir", type=Path, help="where the labs live (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad or a.runs < 1:
        ap.error(f"unknown case(s) {', '.join(bad)}" if bad else "--runs must be >= 1")
    if os.geteuid() != 0:
        ap.error("hafence lab needs root (network namespaces)")
    base = a.state_dir or Path(tempfile.mkdtemp(prefix="hafence-failover-"))

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = {c: summary(run_case(c, a.runs, a.nodes, base, say)) for c in cases}
    print(json.dumps(result, indent=2) if a.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
