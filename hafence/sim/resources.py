"""Resource types of the simulated hardware: ``vm:``, ``ct:`` and ``fa:`` guests.

They implement the same :class:`~hafence.ha.resources.ResourceType` contract as the real
plugins, so the LRM's procedure (``hafence.ha.agent``) is the one the daemons run; only
what a guest does is simulated, as Proxmox's ``Sim/Resources/Virt*.pm`` do it:

- ``vm`` and ``ct`` always behave; a guest locked by ``service X lock`` neither starts
  nor migrates. A migration moves the guest, which arrives stopped (the target's LRM
  starts it); ``relocate`` (offline) stops it first. A running container cannot
  live-migrate and is relocated.
- ``fa:ABCDEF`` ("failing") encodes misbehaviour in its digits: A only tells services
  apart; B = how many start attempts fail before one succeeds; C = how many migrations
  fail before one succeeds; D != 0: stopping never works; E: unused here; F: start and
  migrate failures happen only on node F. Failure counters are cluster-wide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hafence.ha.resources import RUNNING, STOPPED, ResourceError, ResourceType

if TYPE_CHECKING:
    from hafence.sim.env import SimEnv
    from hafence.sim.hardware import Hardware


class SimGuest(ResourceType):
    """A guest of one simulated node (the env logs with the node's LRM tag)."""

    name = "vm"
    description = "simulated virtual machine"

    def __init__(self, node: str, env: SimEnv) -> None:
        super().__init__(node)
        self.env = env
        self.hw: Hardware = env.hw

    def exists(self, rid: str) -> bool:
        return True  # every simulated guest exists

    def status(self, rid: str) -> str:
        return RUNNING if self.sid(rid) in self.hw.running[self.node] else STOPPED

    def _locked(self, rid: str, what: str) -> bool:
        lock = self.hw.service_locks.get(self.sid(rid))
        if lock:
            self.env.log("err", f"service '{self.sid(rid)}' locked ({lock}), unable to {what}!")
        return bool(lock)

    def start(self, rid: str) -> None:
        if not self._locked(rid, "start"):
            self.hw.start_service(self.node, self.sid(rid))

    def stop(self, rid: str, timeout: float) -> None:
        if not self._locked(rid, "shutdown"):
            self.hw.stop_service(self.node, self.sid(rid))

    def remove_locks(self, rid: str, locks: tuple[str, ...], node: str) -> str | None:
        for lock in locks:
            removed = self.hw.unlock_service(self.sid(rid), lock)
            if removed:
                return removed
        return None

    def migrate(self, rid: str, target: str, online: bool) -> None:
        sid, env = self.sid(rid), self.env
        what = "migrate" if online else "relocate"
        env.log("info", f"service {sid} - start {what} to node '{target}'")
        if self._locked(rid, what):
            raise ResourceError(sid, "failed", "migration error")
        if not online and self.status(rid) == RUNNING:
            env.log("info", f"stopping service {sid} (relocate)")
            self.stop(rid, 0)
            env.log("info", f"service status {sid} stopped")
        env.log("info", f"service {sid} - end {what} to node '{target}'")
        self.hw.stop_service(self.node, sid)  # it arrives stopped: the target starts it


class SimContainer(SimGuest):
    name = "ct"
    description = "simulated container"

    def migrate(self, rid: str, target: str, online: bool) -> None:
        if online and self.status(rid) == RUNNING:
            self.env.log(
                "warning", "unable to live migrate running container, fallback to relocate"
            )
            online = False
        super().migrate(rid, target, online)


def decode_fa(rid: str) -> tuple[int, int, int, str | None]:
    """``(start failures, migrate failures, stop fails, only on node)`` of ``fa:RID``."""
    digits = [int(c) for c in rid if c.isdigit()]
    if len(digits) < 3:
        return 0, 0, 0, None
    stop = digits[3] if len(digits) > 3 else 0
    node = f"node{digits[5]}" if len(digits) > 5 and digits[5] else None
    return digits[1], digits[2], stop, node


class SimFailing(SimGuest):
    name = "fa"
    description = "simulated guest that fails as its ID says"

    def _fails(self, kind: str, rid: str, count: int, only_on: str | None) -> bool:
        """Count an attempt on the nodes the ID names; True while it must still fail."""
        tries = self.hw.fail_tries[kind]
        if only_on in (None, self.node):
            tries[rid] = tries.get(rid, 0) + 1
            if count >= tries[rid]:
                return True
        tries[rid] = 0
        return False

    def start(self, rid: str) -> None:
        fails, _, _, only_on = decode_fa(rid)
        if self._fails("start", rid, fails, only_on):
            return
        super().start(rid)

    def stop(self, rid: str, timeout: float) -> None:
        if not decode_fa(rid)[2]:
            super().stop(rid, timeout)

    def migrate(self, rid: str, target: str, online: bool) -> None:
        _, fails, _, only_on = decode_fa(rid)
        if self._fails("migrate", rid, fails, only_on):
            raise ResourceError(self.sid(rid), "failed", "migration error")
        super().migrate(rid, target, online)


SIM_TYPES: tuple[type[SimGuest], ...] = (SimGuest, SimContainer, SimFailing)
