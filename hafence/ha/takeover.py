"""Is a fenced node silent? The check before a lock is taken over at once (fast path).

When a node's hardware fence confirms the power-off through ``power`` devices only, the
master takes the node's locks without waiting for them to expire (docs/fencing.md). A
BMC can lie, though: it may report off while the node runs on. So the master also
watches the node's leases - its membership (``ha_node_<node>_alive``) and the locks it
holds - from the moment the fence begins:

- **silent**: nothing of the node renewed since the fence began (its membership is gone,
  its locks kept the expiry they had): the power-off is believed, the locks are taken.
- **wait**: the node renewed something between the start of the fence and its
  confirmation - it was alive then, which proves nothing about now - or its membership
  has not run out yet: look again next round. A node really off stops renewing at the
  confirmation, so its membership runs out within the node timeout.
- **lying**: the node renewed something *after* the confirmation: the device lied. Its
  locks are never taken early in this fence episode; the lease-expiry rule (the node's
  watchdog) applies, and the caller alerts the admin.

A renewal shows as a lease whose expiry moved up (etcd reports a lease's TTL in whole
seconds: :data:`TOLERANCE`), or a lease taken by another incarnation of the node. Only
the node's own leases count: one the master holds is not the node renewing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hafence.store import Store

SILENT, WAIT, LYING = "silent", "wait", "lying"
TOLERANCE = 1.5  # seconds an expiry may seem to move without a renewal (etcd: whole seconds)

_Lease = tuple[float, str] | None  # (absolute expiry, incarnation) while the node holds it


@dataclass
class _Watch:
    started: float  # when the fence began
    base: dict[str, _Lease]  # the node's leases then
    alive_at: float | None = None  # when its membership was last seen alive since
    after: dict[str, _Lease] | None = None  # at the first look after the confirmation
    lying: bool = False
    leases: list[str] = field(default_factory=list)


class Takeover:
    """Per fenced node: what its leases looked like when the fence began, and a verdict
    on whether it has fallen silent (see the module docstring)."""

    def __init__(
        self, store: Store, membership: Callable[[str], str], clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.membership = membership  # node -> its membership lease name
        self.clock = clock
        self._watch: dict[str, _Watch] = {}

    def begin(self, node: str, locks: list[str]) -> None:
        """A fence of ``node`` begins (the first attempt of an episode): note its leases."""
        if node in self._watch:
            return
        names = [self.membership(node), *locks]
        self._watch[node] = _Watch(self.clock(), self._leases(node, names), leases=names)

    def watching(self, node: str) -> bool:
        return node in self._watch

    def seen_alive(self, node: str) -> None:
        """The node's membership was seen alive (the master's round)."""
        w = self._watch.get(node)
        if w is not None:
            w.alive_at = self.clock()

    def judge(self, node: str, locks: list[str]) -> str:
        """SILENT, WAIT or LYING, after the node's fence confirmed its power-off."""
        w = self._watch.get(node)
        if w is None:  # not a fence this process watched from its start: no early takeover
            return WAIT
        names = [self.membership(node), *locks]
        for name in names:  # a lock looked at first now (the master's lock) counts from now
            if name not in w.base:
                w.base[name] = self._leases(node, [name])[name]
        cur = self._leases(node, names)
        if w.lying:
            return LYING
        if w.after is None:  # the first look since the confirmation
            w.after = cur
            quiet = w.alive_at is None and cur[names[0]] is None
            if quiet and not any(_renewed(w.base[n], cur[n]) for n in names):
                return SILENT
            return WAIT
        for name in names:
            if name not in w.after:
                w.after[name] = cur[name]
            elif _renewed(w.after[name], cur[name]):
                w.lying = True
                return LYING
        return SILENT if cur[names[0]] is None else WAIT

    def end(self, node: str) -> None:
        """The fence episode is over (the node recovered, or its fence reset)."""
        self._watch.pop(node, None)

    def _leases(self, node: str, names: list[str]) -> dict[str, _Lease]:
        now = self.clock()
        out: dict[str, _Lease] = {}
        for name in names:
            info = self.store.lease_info(name)
            held = info is not None and info["owner"] == node
            out[name] = (now + info["expires_in"], info["incarnation"]) if held else None
        return out


def _renewed(before: _Lease, now: _Lease) -> bool:
    """Whether the node renewed (or took anew) a lease between two looks."""
    if now is None:
        return False
    if before is None:
        return True
    return now[1] != before[1] or now[0] > before[0] + TOLERANCE
