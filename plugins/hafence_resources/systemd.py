"""``systemd``: a systemd unit as an HA service (``systemd:nginx.service``).

Usable where systemd runs (``systemctl is-system-running`` answers anything but
``offline``). A unit name without a suffix means ``NAME.service``.

The schedulers' figures come from the unit's cgroup as systemd reports it:
``CPUQuota=`` and ``MemoryMax=`` are the maxima (none set: 0, the node's CPUs, and no
memory claim), ``CPUUsageNSec`` (over the time between two samples) and
``MemoryCurrent`` what it uses now.
"""

from __future__ import annotations

import math
import re
import time

from hafence.ha.resources import (
    RUNNING,
    STOPPED,
    UNKNOWN,
    ResourceError,
    ResourceType,
    which,
)

_UNIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.@\\-]*$")
_ACTIVE = {"active": RUNNING, "reloading": RUNNING, "inactive": STOPPED, "failed": STOPPED}
# systemctl is-enabled: started without HA (True), never by itself (False); else unknown
_ENABLED = {
    "enabled": True,
    "enabled-runtime": True,
    "alias": True,
    "indirect": True,
    "generated": True,
    "disabled": False,
    "masked": False,
    "masked-runtime": False,
    "linked": False,
    "linked-runtime": False,
}


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|min|s|ms|us)")
_UNITS = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


def _seconds(text: str) -> float:
    """systemd's ``1s 500ms`` -> 1.5; ``infinity`` (no quota) -> 0.0."""
    return sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))


def _number(text: str) -> float:
    """A byte or nanosecond count; 'infinity' and '[not set]' are none (0.0)."""
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


class SystemdType(ResourceType):
    name = "systemd"
    description = "systemd unit (systemctl)"

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self._cpu_samples: dict[str, tuple[float, float]] = {}  # unit -> (time, usage s)

    def available(self) -> str | None:
        if which("systemctl") is None:
            return f"'systemctl' not found on node {self.node}"
        try:
            proc = self.run("-", ["systemctl", "is-system-running"], check=False, timeout=10)
        except ResourceError as exc:
            return exc.message
        state = proc.stdout.strip()
        if state in ("offline", ""):
            return f"systemd is not running on node {self.node} (is-system-running: {state})"
        return None

    def unit(self, rid: str) -> str:
        if not _UNIT.match(rid):
            raise ResourceError(self.sid(rid), "config", f"invalid systemd unit name '{rid}'")
        return rid if "." in rid else f"{rid}.service"

    def exists(self, rid: str) -> bool:
        unit = self.unit(rid)
        self.require_available(rid)
        argv = ["systemctl", "show", "--property=LoadState", "--value", "--", unit]
        state = self.run(rid, argv, check=False).stdout.strip()
        return state not in ("not-found", "")

    def status(self, rid: str) -> str:
        unit = self.unit(rid)
        self.require_available(rid)
        # is-active exits 3 for inactive units: the output word is the answer.
        word = self.run(rid, ["systemctl", "is-active", "--", unit], check=False).stdout.strip()
        return _ACTIVE.get(word, UNKNOWN)

    def start(self, rid: str) -> None:
        self.check_config(rid)
        self.run(rid, ["systemctl", "start", "--", self.unit(rid)])

    def stop(self, rid: str, timeout: float) -> None:
        unit = self.unit(rid)
        self.require_available(rid)
        self.run(rid, ["systemctl", "stop", "--", unit], timeout=timeout)

    def outside_ha_advice(self, rid: str) -> str:
        return f"disable its start at boot: 'systemctl disable {self.unit(rid)}'"

    def enabled_outside_ha(self, rid: str) -> bool | None:
        """Whether systemd starts the unit by itself (enabled at boot, or pulled in)."""
        unit = self.unit(rid)
        if self.available():
            return None
        word = self.run(rid, ["systemctl", "is-enabled", "--", unit], check=False).stdout.strip()
        return _ENABLED.get(word)

    def _show(self, rid: str, *props: str) -> dict[str, str]:
        unit = self.unit(rid)
        self.require_available(rid)
        argv = ["systemctl", "show", *(f"--property={p}" for p in props), "--", unit]
        out: dict[str, str] = {}
        for line in self.run(rid, argv).stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key] = value.strip()
        return out

    def static_stats(self, rid: str) -> dict[str, float] | None:
        props = self._show(rid, "CPUQuotaPerSecUSec", "MemoryMax")
        return {
            "maxcpu": _seconds(props.get("CPUQuotaPerSecUSec", "")),
            "maxmem": _number(props.get("MemoryMax", "")),
        }

    def dynamic_stats(self, rid: str) -> dict[str, float] | None:
        props = self._show(rid, "ActiveState", "CPUUsageNSec", "MemoryCurrent")
        if props.get("ActiveState") not in ("active", "reloading"):
            return None
        now, used = time.monotonic(), _number(props.get("CPUUsageNSec", "")) / 1e9
        last = self._cpu_samples.get(rid)
        self._cpu_samples[rid] = (now, used)
        cpu = (used - last[1]) / (now - last[0]) if last and now > last[0] else 0.0
        return {"cpu": round(max(0.0, cpu), 2), "mem": _number(props.get("MemoryCurrent", ""))}

    def check_config(self, rid: str) -> None:
        if not self.exists(rid):
            raise ResourceError(
                self.sid(rid), "not_found", f"unit {self.unit(rid)} not found on {self.node}"
            )
