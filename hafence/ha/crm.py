"""The cluster resource manager daemon's state machine (one per node, one of them master).

States: ``wait_for_quorum`` -> ``master`` (holds the manager lock, runs
:class:`~hafence.ha.manager.Manager`) or ``slave``; a master that cannot renew the lock goes
``lost_manager_lock`` and back to ``wait_for_quorum``. A CRM only competes for the lock
while the node is quorate, the cluster has services configured and none of this node's
services waits to be fenced (a node being fenced must not decide anything).

The master holds a watchdog (through the Env) and feeds it with every lock renewal, so a
master cut off from the cluster resets before its lock can pass to another node. After 90
idle rounds (no services at all) it gives the lock and watchdog up.
"""

from __future__ import annotations

from typing import Any

from hafence.ha.env import Env, WatchdogHold
from hafence.ha.manager import Manager, fenced_service_count
from hafence.ha.statefile import StateFileError

MAX_IDLE_ROUNDS = 90
# A master whose rounds fail this many times in a row gives its lock up, and then keeps
# out of the election for STANDOFF_ROUNDS, so another CRM can try (Proxmox has no such
# rule: there, a master that cannot make progress blocks HA while it holds its lock).
MAX_FAILED_ROUNDS = 6
STANDOFF_ROUNDS = 3


class CRM:
    def __init__(self, env: Env, fence_delay: float | None = None) -> None:
        self.env = env
        self.status = "startup"
        self.manager: Manager | None = None
        self.shutdown_requested = False
        self.cluster_state_update = False
        self.idle_rounds = 0
        self.fence_delay = fence_delay
        self.disarmed = False  # HA stack disarmed: the master runs without a watchdog
        self.failed_rounds = 0  # master rounds in a row that failed
        self.standoff = 0  # rounds left before this node may run for master again
        self._status_problem: str | None = None  # a damaged manager status, logged once
        self.watchdog = WatchdogHold(env)
        self._set_status("wait_for_quorum")

    # -- plumbing ------------------------------------------------------------------------
    def _set_status(self, new: str) -> None:
        if new == self.status:
            return
        self.env.log("info", f"status change {self.status} => {new}")
        self.status = new
        self.manager = None
        if new == "master":
            try:  # the manager starts from the manager status (or rebuilds it)
                self.manager = Manager(self.env, self.fence_delay)
            except Exception as exc:
                self.env.log("err", f"cannot take over as master: {exc}")
                self._step_aside()
                self._set_status("wait_for_quorum")

    def _step_aside(self) -> None:
        """Give the manager lock and watchdog up; stay out of the election for a while."""
        self.env.release_ha_manager_lock()
        self.watchdog.close()
        self.standoff = STANDOFF_ROUNDS
        self.failed_rounds = 0

    def _get_manager_lock(self) -> bool:
        if not self.env.get_ha_manager_lock():
            return False
        if self.disarmed:
            return True
        if not self.watchdog.armed:
            try:
                self.watchdog.feed()
            except Exception as exc:  # no watchdog, no mastership
                self.env.log("err", f"cannot arm the watchdog, giving the manager lock back: {exc}")
                self.env.release_ha_manager_lock()
                return False
            return True
        self.watchdog.feed()
        return True

    def _can_get_active(self, allow_no_service: bool = False) -> bool:
        env = self.env
        if self.standoff:
            self.standoff -= 1
            return False
        if not env.quorate() or not self.cluster_state_update:
            return False
        try:
            ms = env.read_manager_status() or {}
            self._status_problem = None
        except StateFileError as exc:
            # a master rebuilds it: refusing would leave the cluster without one for good
            if self._status_problem != str(exc):
                self._status_problem = str(exc)
                env.log("err", f"manager status damaged, a new master rebuilds it: {exc}")
            ms = {}
        except Exception as exc:
            env.log("err", f"could not read manager status: {exc}")
            return False
        if fenced_service_count(ms.get("service_status") or {}, env.nodename):
            return False
        if not allow_no_service and not env.read_service_config():
            # an idle cluster needs no master, unless an admin queued a command
            return env.crm_commands_pending()
        return True

    def _cluster_idle(self) -> bool:
        # the master's own service status is what it last wrote: no need to read it back
        assert self.manager is not None
        return not self.manager.ss and not self.env.read_service_config()

    def _follow_disarm(self, disarm: dict[str, Any] | None) -> None:
        if disarm and disarm.get("state") == "disarmed" and not self.disarmed:
            self.env.log("info", "HA stack fully disarmed, releasing CRM watchdog")
            self.watchdog.close()
            self.disarmed = True
        elif not disarm and self.disarmed:
            self.env.log("info", "re-arming HA stack")
            self.disarmed = False
            self.watchdog.feed()

    # -- public API ----------------------------------------------------------------------
    def shutdown_request(self) -> None:
        if not self.shutdown_requested:
            self.env.log("info", "server received shutdown request")
        self.shutdown_requested = True

    def do_one_iteration(self) -> bool:
        """One round; False when the daemon should exit."""
        env = self.env
        self.cluster_state_update = env.cluster_state_update()
        state = self.status
        if state == "wait_for_quorum":
            if self._can_get_active():
                self._set_status("master" if self._get_manager_lock() else "slave")
        elif state == "slave":
            if self._can_get_active():
                if self._get_manager_lock():
                    self._set_status("master")
            else:
                self._set_status("wait_for_quorum")
        elif state == "lost_manager_lock":
            if self._can_get_active(True) and self._get_manager_lock():
                self._set_status("master")
        elif state == "master":
            if not self._get_manager_lock():
                self._set_status("lost_manager_lock")
            elif self._cluster_idle() and not self.shutdown_requested:
                self.idle_rounds += 1
                if self.idle_rounds > MAX_IDLE_ROUNDS:
                    env.log(
                        "info",
                        f"cluster had no service configured for {MAX_IDLE_ROUNDS} rounds, going "
                        "idle.",
                    )
                    env.release_ha_manager_lock()
                    self.watchdog.close()
                    self.idle_rounds = 0
                    self._set_status("wait_for_quorum")
            else:
                self.idle_rounds = 0

        state = self.status
        if state == "wait_for_quorum":
            return not self.shutdown_requested
        if state == "master":
            assert self.manager is not None
            if self.shutdown_requested:
                env.log("info", "voluntary release CRM lock")
                env.release_ha_manager_lock()
                self.watchdog.close()
                return False
            if not self.cluster_state_update:
                env.log("notice", "temporary inconsistent cluster state (cfs restart?), skip round")
                return True
            try:
                self.manager.manage()
                self.failed_rounds = 0
            except Exception as exc:  # logged; the next round retries
                env.log("err", f"got unexpected error - {exc}")
                self.failed_rounds += 1
                if self.failed_rounds >= MAX_FAILED_ROUNDS:
                    env.log(
                        "err",
                        f"no progress for {MAX_FAILED_ROUNDS} rounds, giving the manager lock "
                        "up so another node can try",
                    )
                    self._step_aside()
                    self._set_status("wait_for_quorum")
                    return True
            self._follow_disarm(self.manager.ms.get("disarm"))
            return True
        if state == "lost_manager_lock":
            self.watchdog.close()
            if self.shutdown_requested:
                return False
            self._set_status("wait_for_quorum")
            return True
        # slave
        return not self.shutdown_requested
