"""Simulated services: what ``vm:``, ``ct:`` and ``fa:`` SIDs do inside the simulator.

``vm`` and ``ct`` always behave. ``fa:ABCDEF`` ("failing") encodes misbehaviour in its
digits, as Proxmox's test harness does: A only tells services apart; B = how many start
attempts fail before one succeeds; C = how many migrations fail before one succeeds;
D != 0: stopping never works; E: unused here; F: start failures happen only on node F.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hafence.ha import state as st

if TYPE_CHECKING:
    from hafence.sim.env import SimEnv
    from hafence.sim.hardware import Hardware


def _decode(sid: str) -> tuple[int, int, int, str | None]:
    """``(start failures, migrate failures, stop fails, only on node)``."""
    kind, _, num = sid.partition(":")
    if kind != "fa" or len(num) < 3:
        return 0, 0, 0, None
    digits = [int(c) for c in num]
    start, migrate = digits[1], digits[2]
    stop = digits[3] if len(digits) > 3 else 0
    node = f"node{digits[5]}" if len(digits) > 5 else None
    return start, migrate, stop, node


class SimResources:
    """Service behaviour for one simulated cluster (failure counters are cluster-wide)."""

    def __init__(self, hw: Hardware) -> None:
        self.hw = hw
        self.start_tries: dict[str, int] = {}
        self.migrate_tries: dict[str, int] = {}

    def running(self, node: str, sid: str) -> bool:
        return sid in self.hw.running[node]

    def start(self, env: SimEnv, sid: str) -> None:
        fails, _, _, only_on = _decode(sid)
        if fails and only_on in (None, env.nodename):
            self.start_tries[sid] = self.start_tries.get(sid, 0) + 1
            if fails >= self.start_tries[sid]:
                return
            self.start_tries[sid] = 0
        lock = self.hw.service_locks.get(sid)
        if lock:
            env.log("err", f"service '{sid}' locked ({lock}), unable to start!")
            return
        self.hw.start_service(env.nodename, sid)

    def stop(self, env: SimEnv, sid: str) -> None:
        if _decode(sid)[2]:
            return
        self.hw.stop_service(env.nodename, sid)

    def migrate(self, env: SimEnv, sid: str, target: str, online: bool) -> bool:
        fails = _decode(sid)[1]
        if fails:
            self.migrate_tries[sid] = self.migrate_tries.get(sid, 0) + 1
            if fails >= self.migrate_tries[sid]:
                return False
            self.migrate_tries[sid] = 0
        what = "migrate" if online else "relocate"
        node = env.nodename
        env.log("info", f"service {sid} - start {what} to node '{target}'")
        lock = self.hw.service_locks.get(sid)
        if lock:
            env.log("err", f"service '{sid}' locked ({lock}), unable to {what}!")
            return False
        if not online and self.running(node, sid):
            env.log("info", f"stopping service {sid} (relocate)")
            self.hw.stop_service(node, sid)
            env.log("info", f"service status {sid} stopped")
        # as Proxmox's simulator: the service arrives stopped, the target's LRM starts it
        self.hw.change_service_location(sid, node, target)
        self.hw.stop_service(node, sid)
        env.log("info", f"service {sid} - end {what} to node '{target}'")
        return True

    def exec_command(self, env: SimEnv, sid: str, conf: dict, cmd: str, params: dict) -> int:
        """The LRM's resource command for one service (Proxmox's exec_resource_agent)."""
        node = env.nodename
        if not conf:
            env.log("err", f"missing resource configuration for '{sid}'")
            return st.ERROR
        if cmd == "error":
            env.log(
                "err",
                f"service {sid} is in an error state and needs manual intervention. "
                "Look up 'ERROR RECOVERY' in the documentation.",
            )
            return st.SUCCESS
        if conf.get("node") != node:
            env.log("err", f"service '{sid}' not on this node")
            return st.EWRONG_NODE
        running = self.running(node, sid)
        if cmd in ("started", "start"):
            if running:
                return st.SUCCESS
            env.log("info", f"starting service {sid}")
            self.start(env, sid)
            if self.running(node, sid):
                env.log("info", f"service status {sid} started")
                return st.SUCCESS
            env.log("warning", f"unable to start service {sid}")
            return st.ERROR
        if cmd in ("request_stop", "stopped", "stop"):
            if not running:
                return st.SUCCESS
            timeout = params.get("timeout")
            if timeout is not None:
                env.log("info", f"stopping service {sid} (timeout={timeout})")
            else:
                env.log("info", f"stopping service {sid}")
            self.stop(env, sid)
            if not self.running(node, sid):
                env.log("info", f"service status {sid} stopped")
                return st.SUCCESS
            env.log("info", f"unable to stop service {sid} (still running)")
            return st.ERROR
        if cmd in ("migrate", "relocate", "request_start_balance"):
            target = params.get("target")
            if not target or conf.get("node") == target:
                return st.SUCCESS
            if cmd == "request_start_balance" and running:
                env.log("info", f"ignoring rebalance-on-start for service {sid} - already running")
                return st.IGNORED
            if not self.migrate(env, sid, target, cmd == "migrate"):
                env.log("err", f"service {sid} not moved (migration error)")
                return st.ERROR
            return st.SUCCESS
        env.log("err", f"implement me (cmd '{cmd}')")
        return st.ERROR
