"""The master CRM's view of each node: online, unknown, fence, maintenance, gone.

A node seen in the quorate membership is ``online`` (or ``maintenance`` while its LRM runs
in maintenance mode). A node that drops out goes ``unknown`` at once (``gone`` when it is
not even a cluster member any more, forgotten after an hour); its services are
fenced once it has been offline for ``fence_delay`` seconds (``offline_delayed``; the Env
may give a node with a power device a delay of its own). A node in ``fence`` stays there
until :meth:`fence_node` succeeds: its hardware fence (when one is configured) confirmed
the power off *and* the master holds the node's agent lock, which proves the node's LRM,
and with it the node's watchdog, is gone. The lock is taken at once when power devices
confirmed the off and the node fell silent (the Env's ``take_over_agent_lock``, the fast
path of docs/fencing.md); otherwise only once it expired. :attr:`NodeStatus.fencing` has
each fence's progress for ``ha-manager status``.
"""

from __future__ import annotations

import time
from typing import Any

from hafence.ha.env import FENCE_FAILED, FENCE_IDLE, FENCE_NONE, FENCE_OK, Env

FENCE_DELAY = 60  # seconds a node must stay offline before its services get fenced
GONE_DELAY = 3600  # seconds a node removed from the cluster is remembered


class NodeStatus:
    def __init__(self, env: Env, status: dict[str, str], fence_delay: float = FENCE_DELAY):
        self.env = env
        self.status: dict[str, str] = dict(status)
        self.last_online: dict[str, float] = {}
        self.fence_delay = fence_delay
        self.fence_failed: set[str] = set()  # nodes whose failed hardware fence was mailed
        self.seen_online: set[str] = set()  # members online in the last update
        # nodes an admin confirmed off by hand (fence-ack): {node: {"by": who, "at": time}}
        self.acked: dict[str, dict[str, Any]] = {}
        # each fence under way, for ha-manager status: {node: {"step": ..., chain details}}
        self.fencing: dict[str, dict[str, Any]] = {}

    # -- queries -------------------------------------------------------------------------
    def get(self, node: str) -> str:
        return self.status.get(node, "unknown")

    def nodes(self) -> list[str]:
        return sorted(self.status)

    def online_nodes(self) -> list[str]:
        return [n for n in sorted(self.status) if self.status[n] == "online"]

    def is_online(self, node: str | None) -> bool:
        return node is not None and self.get(node) == "online"

    def is_operational(self, node: str) -> bool:
        return self.get(node) in ("online", "maintenance")

    def offline_delayed(self, node: str, delay: float | None = None) -> bool:
        """Whether ``node`` has been offline for at least the fence delay (a node seen
        online in the last update, e.g. one in maintenance, never is, even with none)."""
        if node not in self.status or self.get(node) == "online" or node in self.seen_online:
            return False
        delay = self.env.fence_delay_for(node, self.fence_delay) if delay is None else delay
        now = self.env.get_time()
        last = self.last_online.get(node)
        if last is None:  # a new master: start counting now
            self.last_online[node] = now
            return delay <= 0
        return now - last >= delay

    def check_for_changed_nodelist(self, node_info: dict[str, dict[str, Any]]) -> bool:
        """Whether cluster members joined or left since the last round."""
        return set(node_info) != set(self.status)

    # -- changes -------------------------------------------------------------------------
    def _set(self, node: str, state: str) -> None:
        old = self.get(node)
        if state == old:
            return
        self.env.log("info", f"node '{node}': state changed from '{old}' => '{state}'")
        self.status[node] = state

    def update(self, node_info: dict[str, dict[str, Any]], lrm_modes: dict[str, str]) -> None:
        now = self.env.get_time()
        self.seen_online = {n for n, i in node_info.items() if i.get("online")}
        for node in sorted(node_info):
            if not node_info[node].get("online"):
                continue
            self.last_online[node] = now  # for the fence delay
            if self.acked.pop(node, None) is not None:
                self.env.log("warning", f"fencing: node '{node}' is online: its fence-ack is void")
            state = self.get(node)
            maint = lrm_modes.get(node) == "maintenance"
            if state == "online":
                if maint:
                    self._set(node, "maintenance")
            elif state in ("unknown", "gone"):
                self._set(node, "online")
                # an earlier episode's fence of it is over: its confirmed off must not
                # count for the next one (a dead master is fenced outside this state
                # machine, and may be back before it ever was in 'fence' here)
                self.env.fence_reset(node)
            elif state == "maintenance":
                if not maint:
                    self._set(node, "online")
            # fence: stays until fenced
        for node in sorted(self.status):
            if node_info.get(node, {}).get("online"):
                continue
            # not in the quorate partition, maybe still running
            state = self.get(node)
            if state == "online":
                self._set(node, "unknown")
            elif state == "maintenance":
                if lrm_modes.get(node) != "maintenance":
                    self._set(node, "unknown")
            elif state == "unknown" and node not in node_info:
                self._set(node, "gone")  # no longer a cluster member at all
            elif state == "gone" and self.offline_delayed(node, GONE_DELAY):
                self.env.log(
                    "notice", f"deleting gone node '{node}', not a cluster member anymore."
                )
                del self.status[node]
                self.last_online.pop(node, None)

    def fence_node(self, node: str) -> bool:
        """Drive the fencing of ``node`` one step; True once it is safely fenced."""
        env = self.env
        if self.get(node) != "fence":
            self._set(node, "fence")
            env.log("email", f"FENCE: Try to fence node '{node}'")
        ack = self.acked.get(node)
        hw = FENCE_OK if ack is not None else env.fence_poll(node)
        if hw == FENCE_IDLE:
            env.fence_start(node)  # the Env logs the attempt (levels, devices)
            return self._progress(node, "fencing")
        if hw == FENCE_FAILED:
            env.log("err", f"fencing: hardware fence of node '{node}' failed, retrying")
            if node not in self.fence_failed:  # mail once per episode, log every round
                self.fence_failed.add(node)
                env.log("email", f"FAILED: hardware fence of node '{node}', services stay fenced")
            # fence.cfg is read again for every attempt: a fixed entry takes effect now,
            # and a removed one means the node has no hardware fencing any more
            if env.fence_start(node) != FENCE_NONE:
                return self._progress(node, "failed, retrying")
            hw = FENCE_NONE
        if hw not in (FENCE_NONE, FENCE_OK):  # pending
            return self._progress(node, "fencing")
        # confirmed off by power devices, the node silent since: its lock now (fast path)
        fast = hw == FENCE_OK and ack is None and env.take_over_agent_lock(node)
        if not fast and not env.get_ha_agent_lock(node):
            what = "confirmed off" if hw == FENCE_OK else "no hardware fence"
            return self._progress(node, f"{what}, waiting for agent lock")
        msg = f"fencing: acknowledged - got agent lock for node '{node}'"
        env.log("info", msg)
        self._set(node, "unknown")
        env.log("email", f"SUCCEED: {msg}")
        env.fence_reset(node)
        self.fence_failed.discard(node)
        self.acked.pop(node, None)
        self.fencing.pop(node, None)
        return True

    def _progress(self, node: str, step: str) -> bool:
        """Note how the fence of ``node`` goes (ha-manager status); False: not done."""
        info = dict(self.env.fence_progress(node) or {})
        if node in self.acked:
            step = "confirmed off by hand, waiting for agent lock"
        info["step"] = step
        self.fencing[node] = info
        return False

    def acknowledge(self, node: str, by: str, at: int) -> bool:
        """An admin confirms ``node`` is off (its fence device cannot): the hardware fence
        counts as done; the agent lock is still required. Refused for a node that is up."""
        env = self.env
        if node not in self.status:
            env.log("err", f"fencing: fence-ack by {by} for unknown node '{node}' ignored")
            return False
        if self.is_operational(node):
            env.log("err", f"fencing: fence-ack by {by} refused: node '{node}' is online")
            return False
        self.acked[node] = {"by": by, "at": int(at)}
        env.log(
            "email",
            f"fencing: node '{node}' confirmed off by hand by {by} at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(int(at)))}",
        )
        env.fence_reset(node)  # a hardware attempt still running is of no use any more
        return True
