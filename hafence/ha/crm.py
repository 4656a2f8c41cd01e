"""The cluster resource manager daemon's state machine (one per node, one of them master).

A port of Proxmox's ``PVE::HA::CRM``. States: ``wait_for_quorum`` -> ``master`` (holds the
manager lock, runs :class:`~hafence.ha.manager.Manager`) or ``slave``; a master that
cannot renew the lock goes ``lost_manager_lock`` and back to ``wait_for_quorum``.

A CRM competes for the lock only while the cluster is healthy for it (quorate, the
cluster state could be read this round, the manager status readable, none of this node's
services waiting to be fenced: a node being fenced must not decide anything) and there is
work: configured services, or, when no other master is active, a node in maintenance
that nobody asked for (an LRM shut down with the ``migrate`` policy), queued CRM commands,
stale service status to clean up, or a disarmed stack to re-arm.

The master holds a watchdog (through the Env) and feeds it with every lock renewal, so a
master cut off from the cluster resets before its lock can pass to another node. After 90
idle rounds (no services at all) it gives the lock and watchdog up. While the HA stack is
fully disarmed the master runs without a watchdog (it runs no services).

While the store fails reads or writes (Proxmox: pmxcfs down on this node) a master keeps
its lock as long as it can renew it, logs the failure every round and changes nothing.
"""

from __future__ import annotations

from typing import Any

from hafence.ha.env import Env, WatchdogHold
from hafence.ha.manager import Manager, fenced_service_count
from hafence.ha.statefile import StateFileError

MAX_IDLE_ROUNDS = 90  # 30 rounds more than the LRM's, so no LRM waits for a master


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
                self.env.release_ha_manager_lock()
                self._give_up_watchdog()
                self._set_status("wait_for_quorum")

    def _give_up_watchdog(self) -> None:
        """Only while this CRM no longer touches the manager status: the CRM runs no
        services, so a reset would protect nothing."""
        self.watchdog.close()

    def _get_manager_lock(self) -> bool:
        env = self.env
        if not env.get_ha_manager_lock():
            return False
        if self.watchdog.armed:
            self.watchdog.feed()
        elif not self.disarmed:
            # a new master of a fully disarmed stack must not arm a watchdog, not even
            # for a moment
            ms = self._manager_status(log=False)
            if ms and (ms.get("disarm") or {}).get("state") == "disarmed":
                env.log("info", "taking over as disarmed master, skipping watchdog")
                self.disarmed = True
                return True
            try:
                self.watchdog.feed()
            except Exception as exc:  # no watchdog, no mastership
                env.log("err", f"cannot arm the watchdog, giving the manager lock back: {exc}")
                env.release_ha_manager_lock()
                return False
        return True

    def _manager_status(self, log: bool = True) -> dict[str, Any] | None:
        """The manager status, or None when it cannot be read (logged)."""
        env = self.env
        try:
            ms = env.read_manager_status() or {}
            self._status_problem = None
            return ms
        except StateFileError as exc:
            # a master rebuilds it: refusing would leave the cluster without one for good
            if log and self._status_problem != str(exc):
                self._status_problem = str(exc)
                env.log("err", f"manager status damaged, a new master rebuilds it: {exc}")
            return {}
        except Exception as exc:
            if log:
                env.log("err", f"could not read manager status: {exc}")
            return None

    def _healthy(self, ms: dict[str, Any] | None) -> bool:
        env = self.env
        if not env.quorate() or not self.cluster_state_update or ms is None:
            return False
        # there may be services to fence even when the service config is empty
        return not fenced_service_count(ms.get("service_status") or {}, env.nodename)

    def _service_config(self) -> dict[str, Any] | None:
        try:
            return self.env.read_service_config()
        except Exception as exc:
            self.env.log("err", f"could not read service config: {exc}")
            return None

    def _can_get_active(self, allow_no_service: bool = False) -> bool:
        env = self.env
        ms = self._manager_status()
        if not self._healthy(ms):
            return False
        assert ms is not None
        if allow_no_service:
            return True
        conf = self._service_config()
        if conf is None:
            return False
        if conf:
            return True
        master = ms.get("master_node")
        ns = ms.get("node_status") or {}
        if master and ns.get(master) == "online" and master != env.nodename:
            return False  # another master is active
        requests = ms.get("node_request") or {}
        for node, state in ns.items():
            # a node in maintenance nobody asked for (shutdown policy 'migrate')
            if state == "maintenance" and not (requests.get(node) or {}).get("maintenance"):
                return True
        if env.crm_commands_pending():
            return True
        if ms.get("service_status"):
            return True  # stale service status to clean up
        return bool(ms.get("disarm"))  # stay active while disarmed

    def _allowed_to_get_idle(self) -> bool:
        ms = self._manager_status()
        if not self._healthy(ms):
            return False
        assert ms is not None
        if ms.get("disarm"):
            return False  # it must stay to process arm-ha
        conf = self._service_config()
        if conf is None or conf:
            return False
        return not ms.get("service_status")  # stale entries to clean up first

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
            elif self._allowed_to_get_idle():
                self.idle_rounds += 1
                if self.idle_rounds > MAX_IDLE_ROUNDS:
                    self.idle_rounds = 0
                    env.log(
                        "info",
                        f"cluster had no service configured for {MAX_IDLE_ROUNDS} rounds, going "
                        "idle.",
                    )
                    env.release_ha_manager_lock()
                    self._give_up_watchdog()
                    self._set_status("wait_for_quorum")
            elif self.idle_rounds:
                self.idle_rounds = 0

        state = self.status
        if state == "wait_for_quorum":
            return not self.shutdown_requested
        if state == "master":
            return self._work_master()
        if state == "lost_manager_lock":
            self._give_up_watchdog()
            if self.shutdown_requested:
                return False
            self._set_status("wait_for_quorum")
            return True
        # slave: wait until this node gets the lock
        return not self.shutdown_requested

    def _work_master(self) -> bool:
        env, manager = self.env, self.manager
        assert manager is not None
        try:
            if self.shutdown_requested:
                # the service stops and never changes the manager status again
                self._give_up_watchdog()
                env.log("info", "voluntary release CRM lock")
                # the next master need not wait for the lock to expire
                if env.release_ha_manager_lock() is False:
                    env.log("notice", "CRM lock release failed, let the lock timeout")
                return False
            if not self.cluster_state_update:
                # the lock renewed but the state did not update (store restart?)
                env.log("notice", "temporary inconsistent cluster state (cfs restart?), skip round")
                return True
            manager.manage()
            if manager.all_lrms_disarmed:
                if not self.disarmed:
                    env.log("info", "HA stack fully disarmed, releasing CRM watchdog")
                    self._give_up_watchdog()
                    self.disarmed = True
            elif self.disarmed:
                env.log("info", "re-arming HA stack")
                self.disarmed = False  # the next lock renewal arms the watchdog again
        except Exception as exc:  # logged; the next round retries
            env.log("err", f"got unexpected error - {exc}")
        return True
