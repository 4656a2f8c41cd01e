"""What a node has and uses, for the CRS schedulers: /proc and the cgroup it runs in.

A node's *size* is its CPUs and memory, cut down to its cgroup's limits when it runs in
one (a container, a systemd slice): ``maxcpu`` cores (the CPU quota, else the CPUs this
process may run on) and ``maxmem`` bytes (the memory limit, else ``MemTotal``). Its
*load* is what it uses now: ``cpu`` cores (busy time over the time since the previous
sample) and ``mem`` bytes (the cgroup's usage, else ``MemTotal - MemAvailable``).

cgroup v2 (``memory.max``, ``cpu.max``, ``memory.current``, ``cpu.stat``) and v1
(``memory.limit_in_bytes``, ``cpu.cfs_quota_us``, ``memory.usage_in_bytes``,
``cpuacct.usage``) are both read. ``root`` makes the files a test's own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

UNLIMITED = 1 << 60  # a cgroup "limit" above this means none


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


class NodeSampler:
    """Samples one node's size and load (see the module docstring)."""

    def __init__(
        self, root: str | os.PathLike[str] = "/", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = Path(root)
        self.clock = clock
        self._last: tuple[float, float] | None = None  # (clock, busy cpu seconds)

    # -- where this process's cgroups are -----------------------------------------------
    def _cgroups(self) -> dict[str, Path]:
        """Controller -> cgroup directory (``""``: the v2 unified one)."""
        out: dict[str, Path] = {}
        text = _read(self.root / "proc/self/cgroup") or ""
        for line in text.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _, controllers, rel = parts
            rel = rel.lstrip("/")
            if not controllers:  # v2
                for base in ("sys/fs/cgroup", "sys/fs/cgroup/unified"):
                    d = self.root / base / rel
                    if (d / "cgroup.controllers").exists():
                        out.setdefault("", d)
                        break
                continue
            for c in controllers.split(","):
                d = self.root / "sys/fs/cgroup" / controllers / rel
                if not d.exists():
                    d = self.root / "sys/fs/cgroup" / c / rel
                out[c] = d
        return out

    # -- size ---------------------------------------------------------------------------
    def maxcpu(self) -> int:
        cpus = self._cpu_count()
        quota = self._cpu_quota()
        if quota is not None:
            cpus = min(cpus, max(1, int(quota + 0.999)))
        return cpus

    def _cpu_count(self) -> int:
        if self.root == Path("/") and hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        text = _read(self.root / "proc/cpuinfo") or ""
        return sum(1 for ln in text.splitlines() if ln.startswith("processor")) or 1

    def _cpu_quota(self) -> float | None:
        """Cores the cgroup may use (None: no quota)."""
        cg = self._cgroups()
        if "" in cg:
            words = (_read(cg[""] / "cpu.max") or "").split()
            if len(words) == 2 and words[0] != "max":
                return int(words[0]) / int(words[1])
        if "cpu" in cg:
            quota = _int(_read(cg["cpu"] / "cpu.cfs_quota_us"))
            period = _int(_read(cg["cpu"] / "cpu.cfs_period_us"))
            if quota is not None and quota > 0 and period:
                return quota / period
        return None

    def maxmem(self) -> int:
        total = self._meminfo().get("MemTotal", 0)
        limit = self._mem_limit()
        return min(total, limit) if limit and total else (limit or total)

    def _meminfo(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in (_read(self.root / "proc/meminfo") or "").splitlines():
            key, _, rest = line.partition(":")
            value = _int(rest)
            if value is not None:
                out[key] = value * 1024 if rest.strip().endswith("kB") else value
        return out

    def _mem_limit(self) -> int | None:
        cg = self._cgroups()
        for controller, name in (("", "memory.max"), ("memory", "memory.limit_in_bytes")):
            if controller in cg:
                value = _int(_read(cg[controller] / name))
                if value is not None and value < UNLIMITED:
                    return value
        return None

    # -- load ---------------------------------------------------------------------------
    def mem(self) -> int:
        cg = self._cgroups()
        if self._mem_limit() is not None:
            for controller, name in (("", "memory.current"), ("memory", "memory.usage_in_bytes")):
                if controller in cg:
                    value = _int(_read(cg[controller] / name))
                    if value is not None:
                        return value
        info = self._meminfo()
        return max(0, info.get("MemTotal", 0) - info.get("MemAvailable", 0))

    def _busy_seconds(self) -> float:
        cg = self._cgroups()
        if self._cpu_quota() is not None or self._mem_limit() is not None:
            # a limited cgroup is the node: count its own CPU time
            if "" in cg:
                for line in (_read(cg[""] / "cpu.stat") or "").splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
            for controller in ("cpuacct", "cpu"):
                if controller in cg:
                    value = _int(_read(cg[controller] / "cpuacct.usage"))
                    if value is not None:
                        return value / 1e9
        words = (_read(self.root / "proc/stat") or "cpu 0").splitlines()[0].split()[1:]
        ticks = [int(w) for w in words]
        idle = sum(ticks[3:5])  # idle + iowait
        return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float:
        """Cores in use since the previous call (0.0 on the first)."""
        now, busy = self.clock(), self._busy_seconds()
        last, self._last = self._last, (now, busy)
        if last is None or now <= last[0]:
            return 0.0
        return max(0.0, (busy - last[1]) / (now - last[0]))

    def sample(self) -> dict[str, float]:
        """``{"maxcpu", "maxmem", "cpu", "mem"}``."""
        return {
            "maxcpu": self.maxcpu(),
            "maxmem": self.maxmem(),
            "cpu": round(self.cpu(), 2),
            "mem": self.mem(),
        }


def process_usage(pid: int, root: str | os.PathLike[str] = "/") -> tuple[float, int] | None:
    """``(cpu seconds used, resident bytes)`` of a process, or None when it is gone."""
    base = Path(root) / "proc" / str(pid)
    stat = _read(base / "stat")
    status = _read(base / "status")
    if stat is None or status is None:
        return None
    fields = stat.rpartition(")")[2].split()
    try:
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime+stime
    except (IndexError, ValueError):
        return None
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = (_int(line.partition(":")[2]) or 0) * 1024
    return cpu, rss
