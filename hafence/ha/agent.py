"""The LRM's resource-agent procedure: one command for one service on this node.

Proxmox's ``exec_resource_agent``, over the :class:`~hafence.ha.resources.ResourceType`
contract, so the daemons and the simulator run the same steps on their own types
(``hafence_resources`` on real nodes, ``hafence.sim.resources`` on simulated hardware):

- ``started``: nothing to do when the type reports RUNNING; else start it, then check
  again: SUCCESS only when it now reports RUNNING.
- ``request_stop`` / ``stopped``: anything but a confirmed STOPPED counts as running (an
  UNKNOWN status such as systemd's ``activating``, a status command that fails): stop,
  then check again; SUCCESS only when the type reports STOPPED.
- ``migrate`` / ``relocate`` / ``request_start_balance``: the type's native move; a type
  without one is stopped here (confirmed as above) and only then is its config moved to
  the target. The config never names the target while the source may still run it.
- ``error``: a line for the admin, SUCCESS.

Exit codes are ``hafence.ha.state``'s; a :class:`ResourceError` is logged with its
reason and reads ERROR.
"""

from __future__ import annotations

from typing import Any

from hafence.ha import state as st
from hafence.ha.env import Env
from hafence.ha.resources import (
    RUNNING,
    STATUSES,
    STOPPED,
    UNKNOWN,
    ResourceError,
    ResourceType,
    split_sid,
)

MOVES = ("migrate", "relocate", "request_start_balance")


def exec_resource_agent(
    env: Env, sid: str, conf: dict[str, Any] | None, cmd: str, params: dict[str, Any]
) -> int:
    """Run ``cmd`` for ``sid`` on ``env.nodename``; blocking (the LRM runs it in a worker)."""
    try:
        rtype, rid = split_sid(sid)
    except ValueError as exc:
        env.log("err", str(exc))
        return st.EUNKNOWN_SERVICE_TYPE
    plugin = env.resource_types().get(rtype)
    if plugin is None:
        env.log("err", f"service type '{rtype}' not implemented")
        return st.EUNKNOWN_SERVICE_TYPE
    if not conf:
        env.log("err", f"missing resource configuration for '{sid}'")
        return st.EUNKNOWN_SERVICE
    if cmd == "error":
        env.log(
            "err",
            f"service {sid} is in an error state and needs manual intervention. "
            "Look up 'ERROR RECOVERY' in the documentation.",
        )
        return st.SUCCESS
    if conf.get("node") != env.nodename:
        env.log("err", f"service '{sid}' not on this node")
        return st.EWRONG_NODE
    agent = _Agent(env, plugin, sid, rid)
    try:
        if cmd == "started":
            return agent.start()
        if cmd in ("request_stop", "stopped"):
            return st.SUCCESS if agent.stop(params.get("timeout")) else st.ERROR
        if cmd in MOVES:
            return agent.move(cmd, conf, params.get("target"))
    except ResourceError as exc:
        env.log("err", f"service {sid}: {cmd} failed ({exc.reason}): {exc.message}")
        return st.ERROR
    env.log("err", f"implement me (cmd '{cmd}')")
    return st.EUNKNOWN_COMMAND


class _Agent:
    """The steps for one service; every status the type reports is checked here."""

    def __init__(self, env: Env, plugin: ResourceType, sid: str, rid: str) -> None:
        self.env, self.plugin, self.sid, self.rid = env, plugin, sid, rid

    def status(self) -> str:
        """The type's answer; a failing status query is UNKNOWN (never 'stopped')."""
        try:
            status = self.plugin.status(self.rid)
        except ResourceError as exc:
            self.env.log("warning", f"service {self.sid}: status unknown: {exc.message}")
            return UNKNOWN
        return status if status in STATUSES else UNKNOWN

    def start(self) -> int:
        env, sid = self.env, self.sid
        if self.status() == RUNNING:
            return st.SUCCESS
        env.log("info", f"starting service {sid}")
        self.plugin.start(self.rid)
        if self.status() == RUNNING:
            env.log("info", f"service status {sid} started")
            return st.SUCCESS
        env.log("warning", f"unable to start service {sid}")
        return st.ERROR

    def stop(self, timeout: Any = None) -> bool:
        """Stop unless confirmed stopped; True only once the type reports STOPPED."""
        env, sid = self.env, self.sid
        before = self.status()
        if before == STOPPED:
            return True
        details = [f"timeout={timeout}"] if timeout is not None else []
        if before != RUNNING:
            details.append(f"status {before}")
        env.log("info", f"stopping service {sid}" + (f" ({', '.join(details)})" if details else ""))
        try:
            self.plugin.stop(self.rid, float(timeout) if timeout is not None else env.stop_timeout)
        except ResourceError as exc:  # it may have stopped anyway: the check below decides
            env.log("err", f"service {sid}: stop failed ({exc.reason}): {exc.message}")
        after = self.status()
        if after == STOPPED:
            env.log("info", f"service status {sid} stopped")
            return True
        still = "still running" if after == RUNNING else f"status {after}"
        env.log("info", f"unable to stop service {sid} ({still})")
        return False

    def move(self, cmd: str, conf: dict[str, Any], target: str | None) -> int:
        env, sid = self.env, self.sid
        if not target:
            env.log("err", f"{cmd} '{sid}' failed - missing target")
            return st.EINVALID_PARAMETER
        if conf.get("node") == target:
            return st.SUCCESS  # already there
        if cmd == "request_start_balance" and self.status() != STOPPED:
            env.log("info", f"ignoring rebalance-on-start for service {sid} - already running")
            return st.IGNORED
        online = cmd == "migrate"
        try:
            self.plugin.migrate(self.rid, target, online)
        except ResourceError as exc:
            if exc.reason != "not_supported":
                env.log("err", f"service {sid} not moved ({exc.message})")
                return st.ERROR
            if not self._stop_for_move(cmd, target):
                return st.ERROR
        env.change_service_location(sid, env.nodename, target)
        return st.SUCCESS

    def _stop_for_move(self, cmd: str, target: str) -> bool:
        """No native move: stop here (confirmed), the target's LRM starts it."""
        env, sid = self.env, self.sid
        what = "migrate" if cmd == "migrate" else "relocate"
        env.log("info", f"service {sid} - start {what} to node '{target}' (stop and start)")
        if not self.stop():
            env.log("err", f"service {sid} not moved (not confirmed stopped on this node)")
            return False
        env.log("info", f"service {sid} - end {what} to node '{target}'")
        return True
