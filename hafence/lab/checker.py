"""The chaos checker: judges the cluster from outside, on what really ran.

It trusts nothing the cluster says about itself. Its evidence:

* **processes**: every 100 ms it lists the service processes (``dummy:`` and
  ``writer:``, recognised by their command line) in every node's network namespace,
  frozen ones included - a frozen copy resumes when it is thawed;
* **the shared writer files**: every ``writer:`` copy appends a line every 50 ms with
  its own token, so a double writer shows even between two samples;
* **the physics log** (:mod:`hafence.lab.events`): when each node died, was reset,
  powered off, lost or regained its link;
* **the CRMs' logs**, only to find the moments the cluster *claims* a fence or a
  recovery, which the physics must then confirm.

Rules:

1. **never twice**: at no sample do two copies of a service exist on nodes whose link
   is up, and no two writer copies' lines interleave while both nodes' links are up
   (a node cut off at its switch port cannot reach shared storage, so its copy no
   longer counts);
2. **no recovery before a fence or an expired lock**: every "recover service X from
   fenced node A" follows an "acknowledged - got agent lock for node 'A'", and at that
   acknowledgement A is physically gone (dead, powered off or reset since it last ran
   a service); every "confirmed off" matches a real power-off (BMC) or link-down
   (switch port) of that node;
3. **recovery**: once every fault is healed, every service runs again, exactly once,
   within the stated bound (:meth:`hafence.lab.timings.LabTimings.settle_bound`).
"""

from __future__ import annotations

import bisect
import os
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hafence.lab.events import EventLog
from hafence.lab.layout import VIP_SERVICE, Layout
from hafence.lab.network import Network, ns_inode

MARKERS = ("hafence-dummy", "hafence-writer")
SAMPLE_INTERVAL = 0.1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _uptime_ticks() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * _CLK_TCK


@dataclass(frozen=True)
class Copy:
    sid: str
    node: str
    pid: int
    frozen: bool


class ProcessScanner:
    """Service processes per node, found through /proc (cached per pid and start time)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._cache: dict[tuple[int, int], tuple[str, str] | None] = {}

    def _namespaces(self) -> dict[str, str]:
        out = {}
        for node in self.layout.nodes:
            ino = ns_inode(f"/run/netns/{self.layout.netns(node)}")
            if ino is not None:
                out[f"net:[{ino}]"] = node
        return out

    def scan(self) -> list[Copy]:
        namespaces = self._namespaces()
        young = _uptime_ticks() - 2 * _CLK_TCK  # argv may still be the parent's (pre-exec)
        seen: set[tuple[int, int]] = set()
        copies = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            st = _stat(pid)
            if st is None or st[0] in ("Z", "X"):
                continue
            key = (pid, st[1])
            seen.add(key)
            if key not in self._cache or (self._cache[key] is None and st[1] > young):
                self._cache[key] = self._identify(pid, namespaces)
            found = self._cache[key]
            if found is not None:
                node, sid = found
                copies.append(Copy(sid, node, pid, st[0] == "T"))
        for key in set(self._cache) - seen:
            del self._cache[key]
        return copies

    @staticmethod
    def _identify(pid: int, namespaces: dict[str, str]) -> tuple[str, str] | None:
        try:
            node = namespaces.get(os.readlink(f"/proc/{pid}/ns/net"))
            if node is None:
                return None
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        # a dummy labels itself in argv[0] ("hafence-dummy SID NODE"), a writer in its words
        words = [w for part in argv.split("\0") for w in part.split(" ")]
        for marker in MARKERS:
            if marker in words and words.index(marker) + 1 < len(words):
                return node, words[words.index(marker) + 1]
        return None


def running_copies(layout: Layout) -> dict[str, list[str]]:
    """``{sid: [node, ...]}``: where each service's process runs right now, and which
    nodes hold the service address of ``ocf:vip``."""
    out: dict[str, list[str]] = defaultdict(list)
    for c in ProcessScanner(layout).scan():
        out[c.sid].append(c.node + (" (frozen)" if c.frozen else ""))
    net = Network(layout)
    for node in layout.nodes:
        if os.path.exists(net.ns_path(node)) and layout.vip_addr in net.addresses(node):
            out[VIP_SERVICE].append(node)
    return dict(out)


# -- evidence ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    t: float
    rule: str  # twice | early-recovery | false-fence
    detail: str

    def __str__(self) -> str:
        when = datetime.fromtimestamp(self.t).strftime("%H:%M:%S.%f")[:-3]
        return f"{when} {self.rule}: {self.detail}"


class Timeline:
    """Each node's power, link and deaths over time, from the supervisor's event log
    (events arrive in time order: lookups bisect)."""

    SWITCHES = {"link_up": ("link", True), "link_down": ("link", False),
                "power_on": ("power", True), "power_off": ("power", False)}  # fmt: skip

    def __init__(self) -> None:
        # (node, "link"|"power") -> (times, states): the state from each time on
        self.changes: dict[tuple[str, str], tuple[list[float], list[bool]]] = defaultdict(
            lambda: ([], [])
        )
        self._deaths: dict[str, list[float]] = defaultdict(list)
        # the BMC's off-hook logs these as it cuts the power, before the BMC answers
        # "off": proof of a power-off that a power-on at once hid from the physics' ticks
        self._power_cuts: dict[str, list[float]] = defaultdict(list)

    def add(self, rec: dict[str, Any]) -> None:
        node, event = rec.get("node"), rec["event"]
        if not node:
            return
        if event in self.SWITCHES:
            what, state = self.SWITCHES[event]
            times, states = self.changes[(node, what)]
            times.append(rec["t"])
            states.append(state)
        elif event == "died":
            self._deaths[node].append(rec["t"])
            if rec.get("why") == "power cut":
                self._power_cuts[node].append(rec["t"])

    def _state(self, node: str, what: str, t: float) -> bool:
        """The last state at or before ``t`` (a lab starts powered, links up)."""
        times, states = self.changes.get((node, what), ([], []))
        i = bisect.bisect_right(times, t)
        return states[i - 1] if i else True

    def link_up(self, node: str, t: float) -> bool:
        return self._state(node, "link", t)

    def powered(self, node: str, t: float) -> bool:
        return self._state(node, "power", t)

    def deaths(self, node: str) -> list[float]:
        return self._deaths.get(node, [])

    def power_cut(self, node: str, start: float, end: float) -> bool:
        """Whether the node's power was off at some time in ``[start, end]``."""
        if any(start <= t <= end for t in self._power_cuts.get(node, [])):
            return True
        times, states = self.changes.get((node, "power"), ([], []))
        i = bisect.bisect_right(times, start)
        offs = (t for t, on in zip(times[i:], states[i:], strict=True) if not on)
        return not self.powered(node, start) or any(t <= end for t in offs)


_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_RECOVER = re.compile(r"recover service '([^']+)' from fenced node '([^']+)' to node '([^']+)'")
_ACK = re.compile(r"fencing: acknowledged - got agent lock for node '([^']+)'")
_FENCING = re.compile(r"node '([^']+)': state changed from '[^']+' => 'fence'")
_CONFIRMED = re.compile(r"fencing: node '([^']+)' confirmed off by level \d+ \(([^)]*)\)")


class TailReader:
    """New whole lines of a set of growing files."""

    def __init__(self) -> None:
        self.offsets: dict[Path, int] = {}

    def read(self, path: Path) -> list[str]:
        try:
            with open(path, "rb") as fh:
                fh.seek(self.offsets.get(path, 0))
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offsets[path] = self.offsets.get(path, 0) + end
        return data[:end].decode(errors="replace").splitlines()


@dataclass
class Verdict:
    """What one window (a chaos schedule) showed."""

    findings: list[Finding] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)  # seconds, failover outages
    samples: int = 0
    writer_lines: int = 0


class Checker:
    """Samples service processes in a thread and judges windows of time (see module doc)."""

    def __init__(self, layout: Layout, timings: Any) -> None:
        self.layout = layout
        self.timings = timings
        self.scanner = ProcessScanner(layout)
        self.samples: list[tuple[float, list[Copy]]] = []
        self.timeline = Timeline()
        self.events = EventLog(layout.events_file)
        self.tail = TailReader()
        self.writes: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
        self.crm: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- collecting ----------------------------------------------------------------------
    def start(self) -> Checker:
        self._thread = threading.Thread(target=self._sample, name="lab-checker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            copies = self.scanner.scan()
            with self._lock:
                self.samples.append((t, copies))
            self._stop.wait(SAMPLE_INTERVAL)

    def collect(self) -> None:
        """Read what the logs gained since the last call."""
        for rec in self.events.read_new():
            self.timeline.add(rec)
        for path in sorted(self.layout.writer_dir.glob("*.log")):
            for line in self.tail.read(path):
                parts = line.split()
                if len(parts) == 5:  # time node sid token counter
                    self.writes[parts[2]].append((float(parts[0]), parts[1], parts[3]))
        for node in self.layout.nodes:
            for line in self.tail.read(self.layout.log_dir(node) / "crm.log"):
                m = _TS.match(line)
                if m and ("fenc" in line or "recover service" in line):
                    t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    self.crm.append((t, line))

    def forget_before(self, t: float) -> None:
        """Drop evidence older than ``t`` (a long chaos run keeps memory flat)."""
        with self._lock:
            self.samples = [s for s in self.samples if s[0] >= t]
        for sid, lines in self.writes.items():
            self.writes[sid] = [w for w in lines if w[0] >= t]
        # a fence's acknowledgement stays until its node's next fence begins, however old:
        # a recovery retried (the store failing its writes) may come long after it
        last: dict[str, tuple[float, str]] = {}
        for c in sorted(self.crm):
            if m := _ACK.search(c[1]) or _FENCING.search(c[1]):
                last[m.group(1)] = c
        keep = set(last.values())
        self.crm = [c for c in self.crm if c[0] >= t or c in keep]

    # -- judging -------------------------------------------------------------------------
    def judge(self, t0: float, t1: float) -> Verdict:
        self.collect()
        with self._lock:
            samples = [s for s in self.samples if t0 <= s[0] <= t1]
        v = Verdict(samples=len(samples))
        v.findings += self._twice_sampled(samples)
        v.findings += self._twice_written(t0, t1, v)
        v.findings += self._recoveries(samples, t0, t1)
        v.recoveries = self._outages(samples)
        v.findings.sort(key=lambda f: f.t)
        return v

    def _counted(self, copies: list[Copy], t: float) -> dict[str, list[Copy]]:
        """Copies per service on nodes that reach the network (link up) at ``t``."""
        out: dict[str, list[Copy]] = defaultdict(list)
        for c in copies:
            if self.timeline.link_up(c.node, t):
                out[c.sid].append(c)
        return out

    def _twice_sampled(self, samples: list[tuple[float, list[Copy]]]) -> list[Finding]:
        found, ongoing = [], set()
        for t, copies in samples:
            now = set()
            for sid, cs in self._counted(copies, t).items():
                if len(cs) > 1:
                    now.add(sid)
                    if sid not in ongoing:  # one finding per episode
                        where = ", ".join(
                            f"{c.node} pid {c.pid}{' (frozen)' if c.frozen else ''}" for c in cs
                        )
                        found.append(Finding(t, "twice", f"{sid} runs on {where}"))
            ongoing = now
        return found

    def _twice_written(self, t0: float, t1: float, v: Verdict) -> list[Finding]:
        found = []
        for sid, lines in self.writes.items():
            lines = [w for w in lines if t0 <= w[0] <= t1]
            v.writer_lines += len(lines)
            segments: list[tuple[float, float, str, str]] = []  # start, end, node, token
            open_seg: dict[str, list[Any]] = {}
            for t, node, token in sorted(lines):
                seg = open_seg.get(token)
                if not self.timeline.link_up(node, t):  # cut off from storage: a break
                    if seg:
                        segments.append(tuple(seg))  # type: ignore[arg-type]
                        del open_seg[token]
                    continue
                if seg is None:
                    open_seg[token] = [t, t, node, token]
                else:
                    seg[1] = t
            segments += [tuple(s) for s in open_seg.values()]  # type: ignore[misc]
            segments.sort()
            for i, a in enumerate(segments):
                for b in segments[i + 1 :]:
                    if b[0] >= a[1]:
                        break
                    if a[3] != b[3]:
                        found.append(
                            Finding(
                                b[0],
                                "twice",
                                f"{sid}: writer {a[3]} on {a[2]} "
                                f"and writer {b[3]} on {b[2]} wrote at once "
                                f"({b[0]:.3f} < {a[1]:.3f})",
                            )
                        )
        return found

    def _copy_on(
        self, samples: list[tuple[float, list[Copy]]], t: float, sid: str, node: str
    ) -> Copy | None:
        """A copy of ``sid`` on ``node`` (link up) in the samples around ``t``. A sample
        taken before the node died (its processes killed by the physics, a death the event
        log records once the kill is done) does not show a copy at ``t`` if the death came
        before ``t``: a power-off confirmed and acted on within a sample interval."""
        near = [s for s in samples if t - SAMPLE_INTERVAL * 2 <= s[0] <= t + SAMPLE_INTERVAL * 2]
        deaths = self.timeline.deaths(node)
        for st, copies in near:
            if any(st <= d <= t for d in deaths):
                continue
            for c in self._counted(copies, st).get(sid, []):
                if c.node == node:
                    return c
        return None

    def _recoveries(
        self, samples: list[tuple[float, list[Copy]]], t0: float, t1: float
    ) -> list[Finding]:
        found = []
        # node -> its fence was acknowledged (agent lock taken), until its next fence
        # begins ('=> fence'): from every line kept, not only this schedule's. A recovery
        # retried round after round (store errors) can go on past the schedule its fence
        # belonged to, and past the node's return (seed 8180): still the same episode.
        acked: set[str] = set()
        budget = self.timings.fence_budget() + 2 * self.timings.interval
        for t, line in sorted(self.crm):
            if t > t1:
                break
            if m := _ACK.search(line):
                acked.add(m.group(1))
            elif m := _FENCING.search(line):
                acked.discard(m.group(1))
            elif t < t0:
                continue  # an earlier schedule's, judged there
            elif m := _RECOVER.search(line):
                sid, node = m.group(1), m.group(2)
                if node not in acked:
                    found.append(
                        Finding(
                            t,
                            "early-recovery",
                            f"{sid} recovered from {node} "
                            "without an acknowledged fence (agent lock)",
                        )
                    )
                elif (c := self._copy_on(samples, t, sid, node)) is not None:
                    found.append(
                        Finding(
                            t,
                            "early-recovery",
                            f"{sid} recovered from {node} "
                            f"while its copy still runs there (pid {c.pid})",
                        )
                    )
            elif m := _CONFIRMED.search(line):
                node, devices = m.group(1), m.group(2)
                window = [t - budget + k * 0.1 for k in range(int((budget + 3) * 10))]
                if f"bmc-{node}" in devices:
                    ok = self.timeline.power_cut(node, window[0], window[-1])
                    what = "its power is not off"
                else:
                    ok = any(not self.timeline.link_up(node, w) for w in window)
                    what = "its link is not down"
                if not ok:
                    found.append(
                        Finding(t, "false-fence", f"{node} confirmed off by {devices} but {what}")
                    )
        return found

    def _outages(self, samples: list[tuple[float, list[Copy]]]) -> list[float]:
        """Seconds from the death of a service's node to its next copy running."""
        out = []
        last_on: dict[str, tuple[float, str]] = {}
        # sid -> (first sample without it, its node, the last sample with it)
        down_since: dict[str, tuple[float, str, float]] = {}
        for t, copies in samples:
            counted = self._counted(copies, t)
            for sid, cs in counted.items():
                if sid in down_since:
                    start, node, seen = down_since.pop(sid)
                    # Its node died between the last sample that saw the copy and the
                    # first that did not; on a loaded machine samples can be seconds
                    # apart, so the window is the gap (and at least 2 s before the loss).
                    lo = min(seen - 1, start - 2)
                    died = [d for d in self.timeline.deaths(node) if lo <= d <= start + 1]
                    if died:  # from the death, not from a sample that may have come late
                        out.append(t - max(died))
                last_on[sid] = (t, cs[0].node)
            for sid, (seen, node) in last_on.items():
                if sid not in counted and sid not in down_since:
                    down_since[sid] = (t, node, seen)
        return out
