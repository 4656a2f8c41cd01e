"""Timing presets of a lab: the HA daemons', the watchdog's, etcd's and the physics'.

``fast`` shrinks Proxmox's timings about eightfold so a failover takes seconds (tests,
chaos runs, a first try) - not further: on a busy machine (2 cores shared by many test
runs) a mux can miss its feeds for a couple of seconds, and a 2 s hardware timeout
then resets healthy nodes; ``pve`` is Proxmox's defaults, to see what production feels
like. Every number a lab uses comes from here, so one place changes when the daemons'
own presets arrive (docs/daemons.md).

The watchdog rule the presets keep: an LRM that stops renewing its agent lock stops
feeding its mux within ``watchdog_timeout``; the mux then stops feeding the hardware,
which resets the node ``mux_timeout`` later; that must happen before the lock
(``lease_ttl``) can be taken over, with room for one slow store round in between.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabTimings:
    name: str
    interval: float  # one CRM/LRM round
    lease_ttl: float  # manager and agent locks
    watchdog_timeout: float  # a daemon's timeout as a watchdog-mux client
    fence_delay: float  # unknown node -> its services are fenced
    node_timeout: float  # membership: offline after this long without a heartbeat
    mux_timeout: int  # the (fake) hardware watchdog's timeout, seconds
    feed_interval: float  # the mux's hardware keepalive interval
    boot_delay: float  # power on -> the node's daemons start (firmware, kernel)
    restart_delay: float  # RestartSec of the LRM/CRM/etcd units (Restart=on-failure)
    fence_timeout: float  # each fence device's timeout= and power_timeout=
    store_deadline: float  # the daemons' per-round bound on store calls
    etcd_heartbeat_ms: int
    etcd_election_ms: int
    slack: float  # what a busy machine adds to a recovery, on top of the timings

    def daemon_args(self) -> list[str]:
        """The timing options of ``hafence-crm`` / ``hafence-lrm``."""
        return [
            "--timings",  # the name in the daemons' logs; every value is given below
            "fast" if self.name == "fast" else "pve",
            "--interval",
            f"{self.interval:g}",
            "--lease-ttl",
            f"{self.lease_ttl:g}",
            "--watchdog-timeout",
            f"{self.watchdog_timeout:g}",
            "--fence-delay",
            f"{self.fence_delay:g}",
            "--node-timeout",
            f"{self.node_timeout:g}",
            "--store-deadline",
            f"{self.store_deadline:g}",
            # the daemons check their lease against the node's mux, which runs with this
            "--watchdog-hw-timeout",
            str(self.mux_timeout),
        ]

    def fence_budget(self, levels: int = 2) -> float:
        """Worst case of one fence attempt through ``levels`` levels (request + poll each)."""
        return levels * 2 * self.fence_timeout

    def recovery_bound(self) -> float:
        """The stated bound: a failed node's services run elsewhere within this long once
        a quorum of healthy nodes remains and the node's fence path works.

        The worst case is the master's own node: its manager lock must expire first
        (``lease_ttl``, during which the agent lock ages too); the new master counts the
        fence delay from its first round, fences (both levels may time out), then needs a
        round to place the services and an LRM round to start them.
        """
        return (
            self.lease_ttl
            + self.interval
            + self.fence_delay
            + self.fence_budget()
            + 3 * self.interval
            + self.slack
        )

    def settle_bound(self) -> float:
        """After a heal: nodes boot, etcd members rejoin, every LRM reports again."""
        return self.boot_delay + self.recovery_bound() + 2 * self.node_timeout


PRESETS: dict[str, LabTimings] = {
    "fast": LabTimings(
        name="fast",
        interval=1.0,
        lease_ttl=15.0,
        watchdog_timeout=6.0,
        fence_delay=2.0,
        node_timeout=5.0,
        mux_timeout=4,
        feed_interval=1.0,
        boot_delay=1.0,
        restart_delay=1.0,
        fence_timeout=3.0,
        store_deadline=2.0,
        etcd_heartbeat_ms=200,
        etcd_election_ms=2000,
        slack=10.0,
    ),
    "pve": LabTimings(
        name="pve",
        interval=10.0,
        lease_ttl=120.0,
        watchdog_timeout=60.0,
        fence_delay=60.0,
        node_timeout=30.0,
        mux_timeout=10,
        feed_interval=1.0,
        boot_delay=5.0,
        restart_delay=5.0,
        fence_timeout=10.0,
        store_deadline=10.0,
        etcd_heartbeat_ms=100,
        etcd_election_ms=1000,
        slack=30.0,
    ),
}


def preset(name: str) -> LabTimings:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown timings '{name}' (known: {', '.join(PRESETS)})") from None
