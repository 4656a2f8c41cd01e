"""Daemon timings, their presets, and the rules that make self-fencing safe.

The safety rule (Proxmox's design, every term named)::

    lease_ttl > watchdog_timeout + hw_timeout + store_deadline

A daemon feeds its watchdog client only after it renewed its lock. Say its last successful
renewal was *sent* at ``t``; the store starts that lease's clock no earlier than ``t``, so
nobody else may take the lock before ``t + lease_ttl``. The daemon's last feed is dated no
later than ``t + store_deadline``: no store call of a round outlives the round's store
deadline, the feed follows the renewal, and the mux dates a feed by when the client sent
it, not by when it read it. (A process stalled between renewal and feed is covered when
the feed is dated by the renewal itself: ``WatchdogClient.feed(since=)``.) The mux stops
feeding the hardware once ``watchdog_timeout`` has passed since that feed, and the
hardware resets the node ``hw_timeout`` after the last keepalive. So a node that lost its
lock has reset by ``t + store_deadline + watchdog_timeout + hw_timeout``, which must come
before ``t + lease_ttl``. This covers both locks: the LRM's agent lock and the master's
manager lock.

Liveness rules (a healthy node must not be declared dead, nor reset itself): a round lasts
up to ``interval + store_deadline`` between two renewals, so the watchdog timeout and the
membership timeout (``node_timeout``) must be longer than that.

Where each term comes from in the daemons: ``hw_timeout`` is ``WATCHDOG_TIMEOUT`` of the
watchdog-mux configuration (``/etc/default/hafence-watchdog``; checked against the running
mux's device at start), ``store_deadline`` is the per-round bound on store calls (the daemon
loop's store deadline; the interval unless set).

Presets: ``pve`` (Proxmox VE's defaults, the daemons' defaults) and ``fast`` (1 s rounds,
seconds to detect a failure, no fence delay: for clusters whose nodes have a power fence
device, where recovery follows the confirmed power-off). In both, a node whose chain has
a power level is fenced without delay (``power_fence_delay``): its services run again as
soon as its power-off is confirmed, and a delay would only add to the outage; a random
delay against two nodes fencing each other belongs to the devices (``delay``,
``delay_max``, as fence-agents' ``delay`` and Pacemaker's ``pcmk_delay_max``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from hafence.watchdog.driver import DEFAULT_TIMEOUT as DEFAULT_HW_TIMEOUT
from hafence.watchdog.protocol import MAX_CLIENT_TIMEOUT, MIN_CLIENT_TIMEOUT


class TimingError(ValueError):
    """Timings that break a rule; ``problems`` has one line per broken rule."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Timings:
    """Daemon timings in seconds; the defaults are Proxmox's (preset ``pve``)."""

    interval: float = 10.0  #: one CRM/LRM round per interval (also the heartbeat period)
    lease_ttl: float = 120.0  #: manager and agent locks
    watchdog_timeout: float = 60.0  #: the daemons' watchdog-mux client timeout
    fence_delay: float = 60.0  #: unknown node -> fence after this long
    #: the same for a node whose chain has a level of power devices only: fencing it ends
    #: in a confirmed power-off and recovers its services at once (docs/fencing.md)
    power_fence_delay: float = 0.0
    node_timeout: float = 30.0  #: membership lease: offline after this long without a heartbeat
    hw_timeout: float = DEFAULT_HW_TIMEOUT  #: the mux's hardware watchdog timeout
    store_deadline: float | None = None  #: per-round bound on store calls; None: the interval

    @property
    def store_latency(self) -> float:
        """The longest a round's store calls may take (its store deadline)."""
        return self.interval if self.store_deadline is None else self.store_deadline

    @property
    def self_fence_time(self) -> float:
        """Worst case from a node's last lock renewal until its watchdog has reset it."""
        return self.watchdog_timeout + self.hw_timeout + self.store_latency

    @property
    def round_time(self) -> float:
        """Worst case between two renewals (or feeds) of a healthy daemon."""
        return self.interval + self.store_latency

    def replace(self, **changes: float | None) -> Timings:
        """A copy with some values changed (``None`` values keep the current one)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def problems(self) -> list[str]:
        """Every broken rule, one message each naming the rule and the numbers."""
        out: list[str] = []
        values = dataclasses.asdict(self)
        if self.store_deadline is None:
            del values["store_deadline"]  # the interval, checked as such
        bad = False
        for name, value in values.items():
            positive = name not in ("fence_delay", "power_fence_delay")
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                out.append(f"{_opt(name)} must be a finite number of seconds, got {value!r}")
                bad = True
            elif value < 0 or (positive and value == 0):
                out.append(f"{_opt(name)} must be {'> 0' if positive else '>= 0'}, got {value:g}")
                bad = True
        if bad:
            return out  # the sums below mean nothing with such terms
        lo, hi = MIN_CLIENT_TIMEOUT, MAX_CLIENT_TIMEOUT
        if not lo <= self.watchdog_timeout <= hi:
            out.append(
                f"watchdog range: --watchdog-timeout {self.watchdog_timeout:g}s is outside the "
                f"{lo:g}..{hi:g}s the watchdog-mux accepts for a client"
            )
        if self.lease_ttl <= self.self_fence_time:
            out.append(
                f"self-fence before takeover: --lease-ttl {self.lease_ttl:g}s must be longer "
                f"than --watchdog-timeout {self.watchdog_timeout:g}s + the mux's hardware "
                f"timeout {self.hw_timeout:g}s + store latency {self.store_latency:g}s "
                f"(--store-deadline) = {self.self_fence_time:g}s: a node that lost its lock "
                "must have reset itself before another node may take the lock over"
            )
        if self.watchdog_timeout <= self.round_time:
            out.append(
                f"watchdog outlasts a round: --watchdog-timeout {self.watchdog_timeout:g}s must "
                f"be longer than --interval {self.interval:g}s + store latency "
                f"{self.store_latency:g}s = {self.round_time:g}s, or a healthy node resets itself"
            )
        if self.node_timeout <= self.round_time:
            out.append(
                f"membership outlasts a round: --node-timeout {self.node_timeout:g}s must be "
                f"longer than --interval {self.interval:g}s + store latency "
                f"{self.store_latency:g}s = {self.round_time:g}s, or a healthy node reads "
                "offline"
            )
        return out

    def check(self) -> None:
        """Raise :class:`TimingError` naming every broken rule."""
        problems = self.problems()
        if problems:
            raise TimingError(problems)


def _opt(name: str) -> str:
    if name == "hw_timeout":
        return "the mux's hardware timeout (--watchdog-hw-timeout)"
    return "--" + name.replace("_", "-")


PRESETS: dict[str, Timings] = {
    # Proxmox VE: 10 s rounds, 120 s locks, 60 s watchdog clients, 60 s fence delay
    "pve": Timings(),
    # heartbeat 1 s, failure detected in 5 s, fenced at once; a lock a node lost frees
    # after 20 s, which holds for hardware timeouts up to 12 s (the mux's default is 10)
    "fast": Timings(
        interval=1.0,
        lease_ttl=20.0,
        watchdog_timeout=5.0,
        fence_delay=0.0,
        node_timeout=5.0,
        store_deadline=2.0,
    ),
}


def preset(name: str) -> Timings:
    """A copy of a named preset (``pve`` or ``fast``)."""
    try:
        return dataclasses.replace(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown timings preset '{name}' (known: {', '.join(PRESETS)})") from None
