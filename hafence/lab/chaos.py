"""``hafence lab chaos``: random fault schedules against a running lab, judged from outside.

A schedule is a few overlapping *episodes* on random nodes, spread over its first
seconds: crashes (with the BMC healthy, dead, stuck or flaky), power loss, freezes
(whole node as a hung kernel, one daemon as a GC pause; short ones the watchdog must
tolerate, long ones it must end), partitions (one node isolated, one-way, a minority
against a majority, a non-transitive bridge), lossy or slow links, etcd member loss, a
switch port shut, LRM/CRM kills and restarts, and admin commands in the middle of it
all (migrate, relocate, node maintenance). Then every fault is healed and the cluster
must come back clean - every node up and online, every service running once - within
the stated bound. The :class:`~hafence.lab.checker.Checker` judges each schedule.

Schedule ``k`` of a run with ``--seed S`` has seed ``S + k``; ``--seed S+k
--schedules 1`` replays it (the same faults at the same offsets; the cluster's own
timing is real, so it varies).
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hafence.lab.checker import Checker, Verdict
from hafence.lab.control import Lab
from hafence.lab.layout import LabError
from hafence.lab.timings import LabTimings


@dataclass
class Step:
    at: float  # seconds after the schedule starts
    action: str  # a fault kind, "heal", or "ha-manager"
    node: str | None = None
    opts: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = " ".join(
            f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in self.opts.items()
        )
        return f"+{self.at:.1f}s {self.action} {self.node or ''} {extra}".rstrip()


@dataclass
class Schedule:
    seed: int
    episodes: list[str]
    steps: list[Step]
    length: float  # chaos lasts this long, then everything is healed

    def describe(self) -> str:
        return " + ".join(self.episodes)


def services_for(nodes: int) -> list[str]:
    """The services a chaos run watches: writers (shared storage) and a dummy."""
    n = max(3, nodes)
    return [f"writer:w{i}" for i in range(1, n)] + ["dummy:d1"]


def make_schedule(seed: int, nodes: list[str], services: list[str], t: LabTimings) -> Schedule:
    """A random schedule, the same for the same seed, nodes and services."""
    rng = random.Random(seed)
    reset = t.watchdog_timeout + t.mux_timeout  # a node that stops feeding is gone by then
    steps: list[Step] = []
    names: list[str] = []

    ends: list[float] = []

    def ep(name: str, *new: Step, until: float = 0.0) -> None:
        """An episode; ``until``: it lasts at least that long (a dead node stays dead)."""
        names.append(name)
        steps.extend(new)
        ends.append(max([until, *(st.at for st in new)]))

    def held(name: str, fault: Step, hold: float) -> None:
        """A fault that lasts ``hold`` seconds, then its node is healed."""
        assert fault.node is not None
        ep(f"{name} {hold}s", fault, Step(fault.at + hold, "heal", fault.node))

    for _ in range(rng.choice([1, 1, 2, 2, 3])):
        at = round(rng.uniform(0, 8), 1)
        node = rng.choice(nodes)
        # long enough, often, for a dead node to be fenced and its services recovered
        hold = round(rng.uniform(2, t.recovery_bound()), 1)
        kind = rng.choice(
            [
                "crash",
                "crash-bmc",
                "power-loss",
                "freeze-short",
                "freeze-long",
                "pause",
                "isolate",
                "one-way",
                "split",
                "bridge",
                "lossy",
                "etcd-stop",
                "link-down",
                "daemon-kill",
                "daemon-restart",
                "admin",
            ]
        )
        if kind == "crash":
            ep(f"crash {node} {hold}s", Step(at, "kill", node), until=at + hold)
        elif kind == "crash-bmc":
            mode = rng.choice(["bmc-dead", "bmc-stuck", "bmc-flaky"])
            ep(
                f"crash {node} with {mode} {hold}s",
                Step(at, mode, node),
                Step(at + 0.5, "kill", node),
                until=at + hold,
            )
        elif kind == "power-loss":
            ep(f"power loss {node} {hold}s", Step(at, "power-off", node), until=at + hold)
        elif kind == "freeze-short":
            d = round(rng.uniform(0.5, max(1.0, t.watchdog_timeout / 3)), 1)
            ep(f"freeze {node} {d}s", Step(at, "freeze", node), Step(at + d, "thaw", node))
        elif kind == "freeze-long":
            d = round(rng.uniform(reset, reset + t.lease_ttl), 1)
            ep(f"freeze {node} {d}s", Step(at, "freeze", node), Step(at + d, "thaw", node))
        elif kind == "pause":
            daemon = rng.choice(["lrm", "crm", "etcd", "mux"])
            d = round(rng.uniform(1, reset + 2), 1)
            ep(
                f"pause {daemon}@{node} {d}s",
                Step(at, "freeze", node, {"daemon": daemon}),
                Step(at + d, "thaw", node),
            )
        elif kind == "isolate":
            held(f"isolate {node}", Step(at, "partition", node), hold)
        elif kind == "one-way":
            direction = rng.choice(["in", "out"])
            fault = Step(at, "partition", node, {"direction": direction})
            held(f"one-way({direction}) {node}", fault, hold)
        elif kind == "split":
            minority = rng.sample(nodes, max(1, (len(nodes) - 1) // 2))
            majority = [n for n in nodes if n not in minority]
            ep(
                f"split {','.join(minority)} | {','.join(majority)} {hold}s",
                *[Step(at, "partition", m, {"peers": majority}) for m in minority],
                *[Step(at + hold, "heal", m) for m in minority],
            )
        elif kind == "bridge":
            a, c = rng.sample(nodes, 2)
            held(f"bridge {a}-x-{c}", Step(at, "partition", a, {"peers": [c]}), hold)
        elif kind == "lossy":
            loss = rng.choice([10, 20, 30, 50])
            delay = rng.choice([50, 200, 500])
            fault = Step(at, "slow-net", node, {"loss": loss, "delay": delay})
            held(f"lossy {node} {loss}%", fault, hold)
        elif kind in ("etcd-stop", "link-down"):
            held(f"{kind} {node}", Step(at, kind, node), hold)
        elif kind == "daemon-kill":
            daemon = rng.choice(["lrm", "crm"])
            ep(f"kill {daemon}@{node}", Step(at, "kill-daemon", node, {"daemon": daemon}))
        elif kind == "daemon-restart":
            daemon = rng.choice(["lrm", "crm"])
            ep(f"restart {daemon}@{node}", Step(at, "restart", node, {"daemon": daemon}))
        else:
            sid = rng.choice(services)
            cmd = rng.choice(["migrate", "relocate", "maintenance"])
            if cmd == "maintenance":
                ep(
                    f"maintenance {node} {hold}s",
                    Step(
                        at,
                        "ha-manager",
                        node,
                        {"args": ["crm-command", "node-maintenance", "enable", node]},
                    ),
                    Step(
                        at + hold,
                        "ha-manager",
                        node,
                        {"args": ["crm-command", "node-maintenance", "disable", node]},
                    ),
                )
            else:
                ep(
                    f"{cmd} {sid} to {node}",
                    Step(at, "ha-manager", node, {"args": [cmd, sid, node]}),
                )
    steps.sort(key=lambda s: s.at)
    length = max(8.0, max(ends) + 2.0)
    return Schedule(seed, names, steps, round(length, 1))


@dataclass
class Result:
    schedule: Schedule
    verdict: Verdict
    unrecovered: list[str]
    notes: list[str]
    seconds: float
    settle: float | None  # seconds from the heal to a clean cluster
    log_sizes: dict[Path, int] = field(default_factory=dict, repr=False)  # at its start

    @property
    def ok(self) -> bool:
        return not self.verdict.findings and not self.unrecovered


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


class ChaosRun:
    def __init__(self, lab: Lab, logs_dir: Path, echo: Callable[[str], None]) -> None:
        self.lab = lab
        self.layout = lab.layout
        self.timings = lab.timings
        self.logs_dir = logs_dir
        self.echo = echo
        self.services = services_for(len(self.layout.nodes))
        self.results: list[Result] = []
        self.rebuilds = 0
        self.checker = Checker(self.layout, self.timings)

    # -- the clean state between schedules -------------------------------------------------
    def not_clean(self) -> str | None:
        phys = self.lab.status()["nodes"]
        # Fenced after the heal (it came back mid-fence): the admin powers it on, or
        # turns its switch port on again (unfencing a fabric fence is always by hand).
        # Every fault was healed already, so a link down without a fault is the switch.
        fenced = [
            name
            for name, n in phys.items()
            if n["power"] == "off" or (n["link"] != "up" and not n["faults"])
        ]
        if fenced:
            self.lab.heal(fenced)
        for name, n in phys.items():
            if n["state"] != "up" or n["link"] != "up" or n["faults"] or n["power"] != "on":
                return f"{name}: machine {n['state']}, link {n['link']}, faults {n['faults']}"
        return self.lab.not_ready(master=True)

    def wait_clean(self, bound: float) -> str | None:
        """None once clean and still clean two rounds later (a cluster that settles and
        falls over again is not clean); else what was not, after ``bound`` seconds."""
        deadline = time.monotonic() + bound
        steady = 2 * self.timings.interval + self.timings.feed_interval
        since = None
        while True:
            try:
                why = self.not_clean()
            except LabError as exc:
                why = str(exc)
            now = time.monotonic()
            if why is None:
                since = since or now
                if now - since >= steady:
                    return None
            else:
                since = None
            if now > deadline:
                return why or "clean only for a moment"
            time.sleep(0.5)

    def rebuild(self) -> None:
        self.rebuilds += 1
        nodes, timings = len(self.layout.nodes), self.timings.name
        self.checker.stop()
        self.lab.down()
        self.lab.up(nodes, timings, services=self.services)
        self.layout = self.lab.layout
        self.checker = Checker(self.layout, self.timings).start()

    # -- one schedule ------------------------------------------------------------------------
    def _do(self, step: Step) -> str | None:
        try:
            if step.action == "heal":
                self.lab.heal([step.node] if step.node else None)
            elif step.action == "ha-manager":
                self.lab.ha_manager(*step.opts["args"])
            else:
                assert step.node is not None
                info = self.lab.fault(step.node, step.action, **step.opts)
                return info.get("note")
        except LabError as exc:  # e.g. pausing a daemon the chaos already killed
            return f"{step}: {exc}"
        return None

    def run_one(self, seed: int) -> Result:
        return self.run_schedule(
            make_schedule(seed, list(self.layout.nodes), self.services, self.timings)
        )

    def run_schedule(self, s: Schedule, until: Callable[[], bool] | None = None) -> Result:
        """Play ``s``, heal everything, wait for a clean cluster; judge the whole time.
        ``until``: before healing, also wait (up to the recovery bound) for this."""
        sizes = self._log_sizes()
        t0 = time.time()
        start = time.monotonic()
        notes = []
        for step in s.steps:
            time.sleep(max(0.0, start + step.at - time.monotonic()))
            if (note := self._do(step)) is not None:
                notes.append(note)
        time.sleep(max(0.0, start + s.length - time.monotonic()))
        deadline = time.monotonic() + self.timings.recovery_bound()
        while until is not None and not until() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.lab.heal()
        for step in s.steps:  # an admin's maintenance left on is no fault to recover from
            if step.action == "ha-manager" and "node-maintenance" in step.opts["args"]:
                self._do(
                    Step(
                        0,
                        "ha-manager",
                        step.node,
                        {"args": ["crm-command", "node-maintenance", "disable", str(step.node)]},
                    )
                )
        healed = time.monotonic()
        why = self.wait_clean(self.timings.settle_bound())
        settle = None if why else time.monotonic() - healed
        unrecovered = [why] if why else []
        verdict = self.checker.judge(t0, time.time())
        result = Result(s, verdict, unrecovered, notes, time.monotonic() - start, settle, sizes)
        if not result.ok:
            self._keep_logs(result)
        self.checker.forget_before(time.time() - 60)
        return result

    def _log_sizes(self) -> dict[Path, int]:
        files = [self.layout.events_file, *self.layout.writer_dir.glob("*.log")]
        for node in self.layout.nodes:
            files += list(self.layout.log_dir(node).glob("*.log"))
            files.append(self.layout.node_dir(node) / "fence-history.jsonl")
        return {f: f.stat().st_size if f.exists() else 0 for f in files}

    def _keep_logs(self, r: Result) -> None:
        """The schedule's share of every log, its steps and the checker's findings."""
        out = self.logs_dir / f"schedule-{r.schedule.seed}"
        out.mkdir(parents=True, exist_ok=True)
        for path, offset in r.log_sizes.items():
            if not path.exists():
                continue
            rel = path.relative_to(self.layout.state_dir)
            dest = out / str(rel).replace("/", "_")
            with open(path, "rb") as src, open(dest, "wb") as dst:
                src.seek(offset)
                shutil.copyfileobj(src, dst)
        report = {
            "seed": r.schedule.seed,
            "episodes": r.schedule.episodes,
            "steps": [asdict(st) for st in r.schedule.steps],
            "length": r.schedule.length,
            "findings": [str(f) for f in r.verdict.findings],
            "unrecovered": r.unrecovered,
            "notes": r.notes,
            "replay": f"hafence lab chaos --seed {r.schedule.seed} --schedules 1",
        }
        (out / "schedule.json").write_text(json.dumps(report, indent=1) + "\n")

    # -- the run -------------------------------------------------------------------------------
    def line(self, k: int, total: int, r: Result) -> str:
        v = r.verdict
        verdict = "ok" if r.ok else f"VIOLATION x{len(v.findings)}" if v.findings else ""
        if r.unrecovered:
            verdict = (verdict + " " if verdict != "ok" else "") + "UNRECOVERED"
        rec = ", ".join(f"{x:.1f}s" for x in v.recoveries) or "-"
        settle = f"{r.settle:.0f}s" if r.settle is not None else "-"
        return (
            f"schedule {k}/{total} seed {r.schedule.seed}: {r.schedule.describe()} | "
            f"{verdict} | recoveries {rec} | settled {settle} | {r.seconds:.0f}s"
        )

    def run(self, schedules: int, seed: int) -> dict[str, Any]:
        started = time.monotonic()
        self.checker.start()
        try:
            why = self.wait_clean(self.timings.settle_bound())
            if why:
                raise LabError(f"the lab is not in a clean state to start from: {why}")
            for k in range(schedules):
                if k and (why := self.wait_clean(self.timings.settle_bound())):
                    # the last schedule's cluster settled, then fell over again
                    last = self.results[-1]
                    last.unrecovered.append(f"fell over after settling: {why}")
                    self._keep_logs(last)
                    self.echo(
                        f"  unrecovered: seed {last.schedule.seed} fell over after "
                        f"settling: {why}; rebuilding the lab"
                    )
                    self.rebuild()
                r = self.run_one(seed + k)
                self.results.append(r)
                self.echo(self.line(k + 1, schedules, r))
                for f in r.verdict.findings:
                    self.echo(f"  {f}")
                for u in r.unrecovered:
                    self.echo(f"  unrecovered: {u}")
                if r.unrecovered:
                    self.echo("  rebuilding the lab")
                    self.rebuild()
        finally:
            self.checker.stop()
        return self.summary(time.monotonic() - started)

    def summary(self, seconds: float) -> dict[str, Any]:
        rec = [x for r in self.results for x in r.verdict.recoveries]
        pct = {f"p{p}": percentile(rec, p) for p in (50, 90, 99)}
        return {
            "schedules": len(self.results),
            "violations": sum(len(r.verdict.findings) for r in self.results),
            "violating_schedules": [r.schedule.seed for r in self.results if r.verdict.findings],
            "unrecovered": sum(1 for r in self.results if r.unrecovered),
            "recoveries": len(rec),
            "recovery_s": {
                **pct,
                "max": max(rec) if rec else None,
                "mean": statistics.fmean(rec) if rec else None,
            },
            "recovery_bound_s": self.timings.recovery_bound(),
            "settle_bound_s": self.timings.settle_bound(),
            "rebuilds": self.rebuilds,
            "seconds": round(seconds, 1),
            "logs": str(self.logs_dir),
        }
