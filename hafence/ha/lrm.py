"""The local resource manager's state machine (one per node).

States: ``wait_for_agent_lock`` -> ``active`` (holds the node's agent lock and a watchdog,
runs the commands the master wrote for this node) -> ``lost_agent_lock`` (quorum or lock
lost: it stops feeding the watchdog, so the node resets before the lock can expire and the
master recovers its services) and ``maintenance`` (services are moved away first).

Modes: ``active``; ``restart`` (LRM restart or node reboot: services are frozen in place);
``shutdown`` (node shutdown: services stopped, recovered elsewhere); ``maintenance``
(manual or shutdown policy ``migrate``: services moved away before the LRM exits).

Commands are executed per service with the service's current ``uid``; results are reported
by uid, and only results for uids the master still uses are kept, so a stale command's
result can never be taken for a newer command's.
"""

from __future__ import annotations

from typing import Any

from hafence.ha import state as st
from hafence.ha.agent import exec_resource_agent
from hafence.ha.env import Env, WatchdogHold
from hafence.ha.manager import active_service_count, fenced_service_count

MAX_IDLE_ROUNDS = 60


class LRM:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.status = "startup"
        self.state_change_time = env.get_time()
        self.mode = "active"
        self.workers: dict[str, dict[str, Any]] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.restart_tries: dict[str, int] = {}
        self.shutdown_requested: float | None = None
        self.shutdown_errors = 0
        self.service_status: dict[str, dict[str, Any]] = {}
        self.node_state = "unknown"
        self.cluster_state_update = False
        self.idle_rounds = 0
        self._round_deadline = 0.0  # until when this round may wait for workers
        self._status_problem: str | None = None  # why the manager status did not read
        self.watchdog = WatchdogHold(env)
        self._set_status("wait_for_agent_lock")

    # -- plumbing ------------------------------------------------------------------------
    def _set_status(self, new: str) -> None:
        if new == self.status:
            return
        self.env.log("info", f"status change {self.status} => {new}")
        self.status = new
        self.state_change_time = self.env.get_time()

    def _get_agent_lock(self) -> bool:
        if not self.env.get_ha_agent_lock():
            return False
        if not self.watchdog.armed:
            try:
                self.watchdog.feed()
            except Exception as exc:  # no watchdog, no lock: never run services unguarded
                self.env.log("err", f"cannot arm the watchdog, giving the agent lock back: {exc}")
                self.env.release_ha_agent_lock()
                return False
            return True
        self.watchdog.feed()
        return True

    def _disarm(self) -> None:
        # services keep running untouched; nothing may act on them until re-armed
        self.env.release_ha_agent_lock()
        self.watchdog.close()
        self._set_status("wait_for_agent_lock")

    def _update_lrm_status(self) -> bool:
        env = self.env
        if not env.quorate():
            return False
        try:
            env.write_lrm_status(
                {
                    **env.lrm_status_extra(),
                    "state": self.status,
                    "mode": self.mode,
                    "results": self.results,
                    "timestamp": int(env.get_time()),
                }
            )
        except Exception as exc:
            env.log("err", f"unable to write lrm status file - {exc}")
            return False
        return True

    def _update_service_status(self) -> bool:
        env = self.env
        try:
            ms = env.read_manager_status() or {}
        except Exception as exc:  # keep acting on the last good one
            env.log("err", f"updating service status from manager failed: {exc}")
            return False
        self.service_status = ms.get("service_status") or {}
        self.node_state = (ms.get("node_status") or {}).get(env.nodename, "unknown")
        if not self.shutdown_requested:
            request = (ms.get("node_request") or {}).get(env.nodename) or {}
            if request.get("maintenance"):
                self.mode = "maintenance"
            elif ms.get("disarm"):
                self.mode = "disarm"
            elif self.mode in ("maintenance", "disarm"):
                self.mode = "active"
        return True

    def _fence_request(self) -> bool:
        """Whether the manager status read last says the master is fencing this node."""
        node = self.env.nodename
        return bool(fenced_service_count(self.service_status, node) or self.node_state == "fence")

    def _local_services(self) -> list[tuple[str, dict[str, Any]]]:
        node = self.env.nodename
        return [(s, d) for s, d in sorted(self.service_status.items()) if d.get("node") == node]

    def active_service_count(self) -> int:
        """Services this node runs or is about to receive (incoming migrations count)."""
        return active_service_count(self.service_status, self.env.nodename)

    def _maintenance_requested(self) -> bool:
        return self.mode == "maintenance"

    # -- public API ----------------------------------------------------------------------
    def shutdown_request(self) -> None:
        """SIGTERM: apply the shutdown policy (node shutdown/reboot) or freeze (restart)."""
        if self.shutdown_requested is not None:
            return
        env = self.env
        shutdown, reboot = env.is_node_shutdown()
        policy = (env.ha_options() or {}).get("shutdown_policy") or "conditional"
        if shutdown:
            env.log("info", f"got shutdown request with shutdown policy '{policy}'")
        freeze_all = False
        maintenance = False
        if policy == "conditional":
            freeze_all = reboot
        elif policy == "freeze":
            freeze_all = True
        elif policy == "failover":
            freeze_all = False
        elif policy == "migrate":
            maintenance = True
        else:
            env.log("err", f"unknown shutdown policy '{policy}', fall back to conditional")
            freeze_all = reboot
        if maintenance:
            pass  # the master moves everything away; we exit once the node is empty
        elif shutdown:
            # always stop local services when the node goes down, whatever the policy
            for sid, _sd in self._local_services():
                self._queue(sid, None, "request_stop")
        self.shutdown_requested = env.get_time()
        what = "reboot" if reboot else "shutdown"
        if shutdown:
            if self._maintenance_requested():  # manual maintenance stays on
                if maintenance:
                    env.log(
                        "info",
                        f"{what} LRM, ignore maintenance policy, already in maintenance mode",
                    )
                else:
                    env.log(
                        "info",
                        f"{what} LRM, ignore {policy} policy as manual maintenance mode is enabled",
                    )
            elif maintenance:
                env.log(
                    "info", f"{what} LRM, doing maintenance, removing this node from active list"
                )
                self.mode = "maintenance"
            elif freeze_all:
                env.log("info", f"{what} LRM, stop and freeze all services")
                self.mode = "restart"
            else:
                env.log("info", "shutdown LRM, stop all services")
                self.mode = "shutdown"
        elif self._maintenance_requested():
            env.log(
                "info",
                "Restarting LRM in maintenance mode may be delayed until all services are moved",
            )
        else:
            env.log("info", "restart LRM, freeze all services")
            self.mode = "restart"
        if not self._update_lrm_status():
            env.log("err", "unable to update lrm status file - not quorate?")

    def do_one_iteration(self) -> bool:
        """One round; False when the daemon should exit."""
        env = self.env
        self._round_deadline = env.get_time() + env.worker_time_budget()
        self.cluster_state_update = env.cluster_state_update()
        # the first round of the process writes this LRM's status before anything else
        if not env.process_state.get("lrm_wrote_status"):
            if self._update_lrm_status():
                env.process_state["lrm_wrote_status"] = True
            else:
                return not self.shutdown_requested

        self._update_service_status()
        # the master is fencing this node: never (re)take the lock it is waiting for
        fence_request = self._fence_request()

        state = self.status
        if state == "wait_for_agent_lock":
            if self.mode == "disarm":
                pass  # a disarmed node stays idle: no lock
            elif not fence_request and self.active_service_count() and env.quorate():
                if self._get_agent_lock():
                    self._set_status("active")
        elif state == "lost_agent_lock":
            if not fence_request and env.quorate() and self._get_agent_lock():
                self._set_status("active")
        elif state == "active":
            if fence_request:
                env.log("err", "node needs to be fenced - releasing agent_lock")
                self._set_status("lost_agent_lock")
            elif not self._get_agent_lock():
                self._set_status("lost_agent_lock")
            elif self._maintenance_requested():
                self._set_status("maintenance")
            elif self.mode == "disarm" and not self._run_workers():
                # no fence request and no command runs any more: safe to go idle
                env.log("info", "HA disarm requested, releasing agent lock and watchdog")
                self._disarm()
            elif not self._local_services() and not self._run_workers():
                # nothing for this node and every (old) worker done
                self.idle_rounds += 1
                if self.idle_rounds > MAX_IDLE_ROUNDS:
                    env.log(
                        "info",
                        f"node had no service configured for {MAX_IDLE_ROUNDS} rounds, going idle.",
                    )
                    env.release_ha_agent_lock()
                    self.watchdog.close()
                    self._set_status("wait_for_agent_lock")
                    self.idle_rounds = 0
            elif self.idle_rounds:
                self.idle_rounds = 0
        elif state == "maintenance":
            if fence_request:
                env.log(
                    "err", "node needs to be fenced during maintenance mode - releasing agent_lock"
                )
                self._set_status("lost_agent_lock")
            elif (
                self.mode == "disarm"
                and not self.active_service_count()
                and not self._run_workers()
            ):
                # disarm wins: nothing active, nothing running
                env.log(
                    "info",
                    "HA disarm requested during maintenance, releasing agent lock and watchdog",
                )
                self._disarm()
            elif self.active_service_count() or self._run_workers():
                # keep lock and watchdog until every service left the node
                if not self._get_agent_lock():
                    self._set_status("lost_agent_lock")
            elif not self._maintenance_requested():
                # empty, no maintenance wanted and still here: active again
                if self._get_agent_lock():
                    self._set_status("active")
                else:
                    self._set_status("lost_agent_lock")

        state = self.status
        if state == "wait_for_agent_lock":
            if self.shutdown_requested:
                return False
            self._update_lrm_status()
            return True
        if state == "active":
            return self._work_active()
        if state == "lost_agent_lock":
            # the watchdog is no longer fed and fires soon, unless the lock comes back
            if self.shutdown_requested:
                count = self.active_service_count()
                if count > 0:
                    env.log(
                        "err",
                        f"got shutdown request in state 'lost_agent_lock' - "
                        f"detected {count} running services",
                    )
                    if self.mode == "restart" and env.get_time() - self.state_change_time > 90:
                        # the watchdog should have fired (noboot, or broken); restart mode
                        # touches no service: exit
                        env.log(
                            "err",
                            "lost agent lock and restart request for over 90 seconds - giving up!",
                        )
                        return False
                elif not env.running_workers():  # a command still running keeps the watchdog
                    self.watchdog.close()  # every service stopped
                    return False
            return True
        if state == "maintenance":
            return self._work_maintenance()
        raise RuntimeError(f"unexpected LRM state '{state}'")

    def _work_maintenance(self) -> bool:
        env = self.env
        if not self._update_service_status():
            return True
        exit_lrm = False
        if self.active_service_count() == 0 and self._run_workers() == 0:
            # every active service left: nothing to protect any more
            self.watchdog.close()
            if self.shutdown_requested:
                exit_lrm = True
            # maintenance with no or only frozen services: the lock can go
            env.release_ha_agent_lock()
        if not exit_lrm:
            self._manage_resources()
        self._update_lrm_status()
        return not exit_lrm

    def _work_active(self) -> bool:
        env = self.env
        shutdown = False
        try:
            # Nothing runs on a status read before this round's lock: read it again now
            # (a node that took a fresh lock after a restart or a power-on acts on the
            # current status only), and do nothing while it says this node is fenced.
            if self._update_service_status() and not self._fence_request():
                if self.shutdown_requested:
                    if self.mode == "restart":
                        workers = self._run_workers()
                        if self.active_service_count() == 0 and workers == 0:
                            self.watchdog.close()
                            shutdown = True
                            env.release_ha_agent_lock()
                    elif self._run_workers() == 0:
                        if self.shutdown_errors == 0:
                            self.watchdog.close()
                            env.release_ha_agent_lock()
                        shutdown = True
                elif not self.cluster_state_update:
                    env.log(
                        "notice", "temporary inconsistent cluster state (cfs restart?), skip round"
                    )
                else:
                    self._manage_resources()
        except Exception as exc:
            env.log("err", f"got unexpected error - {exc}")
        self._update_lrm_status()
        return not shutdown

    # -- commands ------------------------------------------------------------------------
    def _manage_resources(self) -> int:
        node = self.env.nodename
        for sid in list(self.restart_tries):
            if sid not in self.service_status:
                del self.restart_tries[sid]
        for sid, sd in sorted(self.service_status.items()):
            if sd.get("node") != node or not sd.get("uid"):
                continue
            req = sd.get("state")
            # recovery: the master moves it first; freeze: hands off; request_start: the
            # master may still pick a better node
            if req in (None, "recovery", "freeze", "request_start"):
                continue
            self._queue(
                sid, sd["uid"], req, {"target": sd.get("target"), "timeout": sd.get("timeout")}
            )
        return self._run_workers()

    def _queue(self, sid: str, uid: str | None, state: str, params: dict | None = None) -> None:
        # never run the same command twice: a failed first try the master has not seen yet
        # must not be retried behind its back ('stopped' is re-run: no result is awaited)
        if uid and uid in self.results and state != "stopped":
            return
        w = self.workers.get(sid)
        if w is not None and w.get("running"):
            if uid is None:
                # a shutdown stop must not be lost behind a running command: run it next
                w["then"] = (uid, state, params)
            return
        # Every round queues every command again: one that is still waiting keeps its
        # place (its tries), or status checks queued later would overtake services that
        # never started, round after round.
        self.workers[sid] = {
            "sid": sid,
            "uid": uid,
            "state": state,
            "params": params or {},
            "tries": w["tries"] if w is not None else 0,
        }

    def _run_workers(self) -> int:
        """Work through the queue, ``max_worker`` at a time, longest waiting first, until it
        is empty or this round's time for workers is used up; the count still queued."""
        env = self.env
        max_workers = int((env.ha_options() or {}).get("max_worker", 4) or 4)
        sc = env.read_service_config()
        while True:
            self._collect(sc)
            waiting = sorted(
                (w for w in self.workers.values() if not w.get("running")),
                key=lambda w: (-w["tries"], w["sid"]),
            )
            for w in waiting:
                w["tries"] += 1  # every round it waits moves it up the queue
                if env.running_workers() >= max_workers:
                    continue
                sid = w["sid"]
                w["running"] = True
                conf = sc.get(sid)
                env.submit_worker(
                    f"{sid}\0{w['uid']}",
                    lambda sid=sid, conf=conf, w=w: self._exec(sid, conf, w["state"], w["params"]),
                )
                self._collect(sc)  # a synchronous Env has finished it already
            left = self._round_deadline - env.get_time()
            if not env.running_workers() or left <= 0:
                return len(self.workers)
            env.wait_for_worker(left)

    def _collect(self, sc: dict[str, Any]) -> None:
        for uid, code in self.env.collect_workers().items():
            self._finished(uid.partition("\0")[0], code, sc)

    def _exec(self, sid: str, conf: dict[str, Any] | None, cmd: str, params: dict) -> int:
        try:
            return exec_resource_agent(self.env, sid, conf, cmd, params)
        except Exception as exc:  # a bug in a type or the store: an error result, never a crash
            self.env.log("err", f"service {sid}: {cmd} failed: {exc!r}")
            return st.ERROR

    def _finished(self, sid: str, code: Any, sc: dict[str, Any]) -> None:
        w = self.workers.pop(sid, None)
        if w is None:
            return
        if w.get("then"):
            self._queue(sid, *w["then"])
        exit_code = code if isinstance(code, int) else st.ERROR
        exit_code = self._handle_exit_code(sid, w["state"], exit_code, sc.get(sid) or {})
        if exit_code == st.ETRY_AGAIN:
            return  # retried silently next round
        if w["uid"] is None:  # a shutdown stop: no result, but it counts for the exit
            if exit_code != st.SUCCESS:
                self.shutdown_errors += 1
            return
        if w["uid"]:
            self.results[w["uid"]] = {"sid": sid, "state": w["state"], "exit_code": exit_code}
        valid = {sd.get("uid") for sd in self.service_status.values() if sd.get("uid")}
        self.results = {u: r for u, r in self.results.items() if u in valid}

    def _handle_exit_code(self, sid: str, cmd: str, code: int, conf: dict[str, Any]) -> int:
        if cmd != "started":
            return code
        max_restart = int(conf.get("max_restart", 1)) if conf else 0
        if code == st.SUCCESS:
            self.restart_tries[sid] = 0
            return code
        if code == st.ERROR:
            tries = self.restart_tries.setdefault(sid, 0)
            if tries >= max_restart:
                self.env.log(
                    "err", f"unable to start service {sid} on local node after {tries} retries"
                )
                self.restart_tries[sid] = 0
                return st.ERROR
            self.restart_tries[sid] = tries + 1
            self.env.log("warning", f"restart policy: retry number {tries + 1} for service '{sid}'")
            return st.ETRY_AGAIN
        return code
