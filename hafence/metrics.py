"""Prometheus metrics of the HA daemons (``--metrics [HOST:]PORT``, off by default).

Served by prometheus-client's HTTP server on ``/metrics``, bound to 127.0.0.1 unless a
host is given. Everything is updated from the daemon's own thread after each round
(a snapshot: the scrape never touches the store or the state machine):

===========================================  ==========================================
metric                                       meaning
===========================================  ==========================================
``hafence_round_duration_seconds``           histogram of CRM/LRM rounds {node, role}
``hafence_daemon_status``                    1 for the state machine's status {node, role, status}
``hafence_watchdog_armed``                   1 while the daemon holds the watchdog {node, role}
``hafence_quorate``                          1 while the store is quorate {node, role}
``hafence_master``                           1 for the current master {master}
``hafence_node_state``                       1 per node for its CRM state {node_name, state}
``hafence_service_state``                    1 per service for its state {sid, state, service_node}
``hafence_lock_holder``                      1 per held lock {lock, owner}
``hafence_fence_attempts_total``             fence device actions {target, device, driver,
                                             action, result}
``hafence_fence_duration_seconds``           histogram of their durations (same labels)
``hafence_fences_total``                     whole fence attempts of a node {target, result}
===========================================  ==========================================

The cluster gauges (master, node, service states, lock holders) come from the master
CRM alone, from its in-memory manager status plus one lease read per lock; the other
daemons export only their own state. ``result`` is ``ok`` or the failure kind
(``unreachable``, ``auth_failed``, ``timeout``, ``still_on``...).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from hafence.hookspecs import hookimpl

log = logging.getLogger("hafence.metrics")

DEFAULT_HOST = "127.0.0.1"
ROUND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
FENCE_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)


def parse_address(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); loopback by default."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"invalid metrics address '{text}' (expected [HOST:]PORT)") from None
    if not 0 <= number < 65536:
        raise ValueError(f"metrics port {number} out of range")
    return host, number


class Metrics:
    """The metrics of one daemon; :meth:`observe_round` is called after every round."""

    def __init__(self, node: str, role: str) -> None:
        self.node, self.role = node, role
        self.registry = CollectorRegistry()
        r = self.registry
        self.round_duration = Histogram(
            "hafence_round_duration_seconds", "Duration of one CRM/LRM round",
            ["node", "role"], buckets=ROUND_BUCKETS, registry=r,
        )  # fmt: skip
        self.status = Gauge("hafence_daemon_status", "State machine status (1 = current)",
                            ["node", "role", "status"], registry=r)  # fmt: skip
        self.watchdog = Gauge("hafence_watchdog_armed", "1 while the daemon holds the watchdog",
                              ["node", "role"], registry=r)  # fmt: skip
        self.quorate = Gauge("hafence_quorate", "1 while the store is quorate",
                             ["node", "role"], registry=r)  # fmt: skip
        self.master = Gauge("hafence_master", "1 for the master CRM", ["master"], registry=r)
        self.node_state = Gauge("hafence_node_state", "CRM state of each node (1 = current)",
                                ["node_name", "state"], registry=r)  # fmt: skip
        self.service_state = Gauge(
            "hafence_service_state", "State of each HA service (1 = current)",
            ["sid", "state", "service_node"], registry=r,
        )  # fmt: skip
        self.lock_holder = Gauge("hafence_lock_holder", "Holder of each HA lock (1 = held)",
                                 ["lock", "owner"], registry=r)  # fmt: skip
        labels = ["target", "device", "driver", "action", "result"]
        self.fence_actions = Counter(
            "hafence_fence_attempts_total", "Fence device actions by result", labels, registry=r
        )
        self.fence_duration = Histogram(
            "hafence_fence_duration_seconds", "Duration of fence device actions", labels,
            buckets=FENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.fences = Counter("hafence_fences_total", "Fence attempts of a node (whole chain)",
                              ["target", "result"], registry=r)  # fmt: skip
        self._lock = threading.Lock()
        self.server: Any = None

    # -- inputs ------------------------------------------------------------------------
    @hookimpl
    def hafence_fence_event(self, event: dict[str, Any]) -> None:
        """One fence attempt (the fencer's history record)."""
        target = event.get("node") or ""
        result = "ok" if event.get("ok") else str(event.get("error_kind") or "failed")
        self.fences.labels(target, result).inc()
        for r in event.get("results") or []:
            res = "ok" if r.get("ok") else str(r.get("error_kind") or "failed")
            labels = (target, str(r.get("device")), str(r.get("driver")),
                      str(r.get("action")), res)  # fmt: skip
            self.fence_actions.labels(*labels).inc()
            self.fence_duration.labels(*labels).observe(float(r.get("duration") or 0.0))

    def observe_round(self, seconds: float, daemon: Any, env: Any) -> None:
        """After a round, in the daemon's thread: its duration and a state snapshot."""
        self.round_duration.labels(self.node, self.role).observe(seconds)
        _one_hot(self.status, {(self.node, self.role, str(daemon.status))})
        hold = getattr(daemon, "watchdog", None)
        # armed with a real handle: --no-watchdog "arms" nothing that could reset the node
        armed = getattr(hold, "armed", False) and getattr(hold, "handle", None) is not None
        self.watchdog.labels(self.node, self.role).set(1 if armed else 0)
        self.quorate.labels(self.node, self.role).set(1 if env.quorate() else 0)
        manager = getattr(daemon, "manager", None)
        if manager is None:  # only the master speaks for the cluster (and costs no reads)
            for gauge in (self.master, self.node_state, self.service_state, self.lock_holder):
                _one_hot(gauge, set())
            return
        try:
            self._cluster(manager.ms, env)
        except Exception as exc:  # the store may be down: keep the last view
            log.debug("metrics: cluster view not updated: %r", exc)

    def _cluster(self, ms: dict[str, Any], env: Any) -> None:
        from hafence.ha import state as st

        master = ms.get("master_node")
        _one_hot(self.master, {(master,)} if master else set())
        nodes = ms.get("node_status") or {}
        _one_hot(self.node_state, {(n, str(s)) for n, s in nodes.items()})
        services = ms.get("service_status") or {}
        _one_hot(self.service_state, {
            (sid, str(sd.get("state")), str(sd.get("node"))) for sid, sd in services.items()
        })  # fmt: skip
        locks = {st.MANAGER_LOCK: env.store.lease_owner(st.MANAGER_LOCK)}
        for n in nodes:
            locks[st.agent_lock_name(n)] = env.store.lease_owner(st.agent_lock_name(n))
        _one_hot(self.lock_holder, {(lk, o) for lk, o in locks.items() if o})

    # -- serving -------------------------------------------------------------------------
    def serve(self, address: str) -> tuple[str, int]:
        host, port = parse_address(address)
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self.server = server
        bound = server.server_address
        log.info("metrics: serving http://%s:%d/metrics", host, bound[1])
        return host, bound[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _one_hot(gauge: Gauge, current: set[tuple[Any, ...]]) -> None:
    """Set the current label sets to 1 and drop the ones that no longer apply."""
    for labels in list(gauge._metrics):  # no public list of label sets
        if labels not in current:
            gauge.remove(*labels)
    for labels in current:
        gauge.labels(*labels).set(1)


class RoundObserver:
    """Wraps a CRM/LRM so that every round is timed and followed by ``after_round``
    callbacks (metrics, notifications, systemd). The daemon loop sees the same object
    interface (``do_one_iteration``, ``shutdown_request``)."""

    def __init__(self, daemon: Any, after_round: list[Any]) -> None:
        self.daemon = daemon
        self.after_round = after_round

    def shutdown_request(self) -> None:
        self.daemon.shutdown_request()

    def do_one_iteration(self) -> bool:
        t0 = time.monotonic()
        try:
            return self.daemon.do_one_iteration()
        finally:
            elapsed = time.monotonic() - t0
            for fn in self.after_round:
                try:
                    fn(elapsed)
                except Exception as exc:  # an observer never breaks the HA round
                    log.error("after-round hook %r failed: %r", fn, exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.daemon, name)
