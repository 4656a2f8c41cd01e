"""The Env interface: every side effect of the CRM and the LRM goes through one object.

The CRM (``hafence.ha.crm`` / ``hafence.ha.manager``) and the LRM (``hafence.ha.lrm``) never
read the clock, the disk or the network; they call an :class:`Env`. Three kinds exist:

- the simulator's (``hafence.sim.env.SimEnv``): a virtual clock and simulated hardware;
- the real one (``hafence.ha.realenv``): the Store, the Fencer, the watchdog-mux, plugins;
- test doubles.

One Env object serves one node (``env.nodename``) and one daemon (CRM or LRM); the two
daemons of a node may share an Env class but each gets its own instance.

Conventions
-----------
- Time is seconds as ``float`` (the simulator returns whole numbers).
- ``log(level, msg)``: level is one of ``info``, ``notice``, ``warning``, ``err``, ``email``
  (``email`` = a notification the admin must see: fence start/success/failure). One line per
  decision, naming the node or service, as Proxmox's HA log does.
- Locks are leases: ``get_ha_manager_lock()`` / ``get_ha_agent_lock(node)`` acquire the lock
  or renew it when already held by this node, and return whether this node holds it now.
  A lock not renewed for its lease time (120 s in Proxmox) expires; only then may another
  node take it. The CRM takes a *dead* node's agent lock to prove that node's LRM (and its
  watchdog) is gone: the self-fence floor.
- Fencing is non-blocking because the CRM step is synchronous: ``fence_start(node)`` starts
  (or keeps running) a hardware fence of ``node`` through its fence.cfg chain, and
  ``fence_poll(node)`` says how it went. ``FENCE_NONE`` means no hardware fencing is
  configured for the node (watchdog/agent-lock fencing only). A result stays readable until
  ``fence_reset(node)``; ``fence_start`` after a failure starts a new attempt.
- Resource commands (``started``, ``request_stop``, ``migrate``, ``relocate``, ``error`` ...)
  are the LRM's procedure (``hafence.ha.agent``) over the resource types the Env provides
  (``resource_types()``: the plugins on a real node, simulated guests in the simulator);
  they return an exit code from ``hafence.ha.state`` (SUCCESS, ERROR, ETRY_AGAIN,
  EWRONG_NODE, IGNORED). The LRM runs at most ``max_worker`` of them at once via
  ``submit_worker`` / ``collect_workers``; the default implementation runs them
  synchronously inside ``submit_worker`` (what the simulator wants). A real Env overrides
  them to use threads, and ``wait_for_worker`` to block until one finishes.
- A service's config names the node it belongs to. ``change_service_location`` moves it
  (an LRM after a confirmed stop or a native migration; the master through
  ``steal_service`` when it recovers a fenced node's service). The move is idempotent;
  a config that names a third node raises :class:`ServiceLocationConflict`.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hafence.errors import HafenceError

if TYPE_CHECKING:
    from hafence.ha.resources import ResourceType

FENCE_NONE = "none"  # no hardware fence configured for the node
FENCE_PENDING = "pending"  # an attempt is running
FENCE_OK = "ok"  # confirmed off
FENCE_FAILED = "failed"  # the last attempt failed (may be retried with fence_start)
FENCE_IDLE = "idle"  # configured, but no attempt started (or result cleared)


class ServiceLocationConflict(HafenceError):
    """A service's config names ``actual``, neither the node it moves from nor its target."""

    def __init__(self, sid: str, actual: str, expected: str) -> None:
        super().__init__(f"service '{sid}' is on '{actual}', not on '{expected}'")
        self.sid, self.actual, self.expected = sid, actual, expected


class Env(ABC):
    """Side effects for one node's CRM or LRM. See the module docstring for conventions."""

    nodename: str
    stop_timeout: float = 180.0  # seconds a stop without an explicit timeout may take

    # -- clock and log -------------------------------------------------------------------
    @abstractmethod
    def get_time(self) -> float:
        """Current time in seconds (virtual in the simulator)."""

    @abstractmethod
    def log(self, level: str, msg: str) -> None:
        """One HA log line: level info|notice|warning|err|email."""

    # -- cluster membership, quorum, locks -------------------------------------------------
    @abstractmethod
    def quorate(self) -> bool:
        """Whether this node is part of the quorate partition (can write cluster state)."""

    @abstractmethod
    def get_node_info(self) -> dict[str, dict[str, Any]]:
        """Cluster members as this node sees them: ``{node: {"online": bool}}``."""

    @abstractmethod
    def get_ha_manager_lock(self) -> bool:
        """Acquire or renew the manager lock for this node; True when held."""

    @abstractmethod
    def release_ha_manager_lock(self) -> None:
        """Give the manager lock up (clean CRM shutdown)."""

    @abstractmethod
    def get_ha_agent_lock(self, node: str | None = None) -> bool:
        """Acquire or renew ``node``'s agent lock (default: this node's); True when held."""

    @abstractmethod
    def release_ha_agent_lock(self) -> None:
        """Give this node's agent lock up (clean LRM shutdown/restart)."""

    # -- cluster state (the store) -------------------------------------------------------
    @abstractmethod
    def read_manager_status(self) -> dict[str, Any]:
        """The manager status (``hafence.ha.state`` shape); ``{}`` when none yet."""

    @abstractmethod
    def write_manager_status(self, status: dict[str, Any]) -> None: ...

    @abstractmethod
    def read_lrm_status(self, node: str | None = None) -> dict[str, Any]:
        """``node``'s LRM status (default: this node); ``{}`` when none."""

    @abstractmethod
    def write_lrm_status(self, status: dict[str, Any]) -> None:
        """Write this node's LRM status."""

    @abstractmethod
    def read_service_config(self) -> dict[str, dict[str, Any]]:
        """Service config: ``{sid: {"node", "state", "group", "max_restart", ...}}``."""

    @abstractmethod
    def read_groups(self) -> dict[str, dict[str, Any]]:
        """Groups: ``{name: {"nodes": {node: prio}, "restricted", "nofailback"}}``."""

    @abstractmethod
    def ha_options(self) -> dict[str, Any]:
        """Datacenter HA options: ``{"shutdown_policy": ..., "max_worker": int}``."""

    def read_rules(self) -> dict[str, dict[str, Any]]:
        """HA rules (Proxmox 9 ``rules.cfg``) as ``hafence.ha.config.parse_rules`` gives
        them: ``{id: {"type": "node-affinity"|"resource-affinity", "resources": [sid],
        "nodes": {node: prio}, "strict": bool, "affinity": "positive"|"negative", ...}}``."""
        return {}

    def write_rules(self, rules: dict[str, dict[str, Any]]) -> None:
        """Replace ``rules.cfg`` (the master, migrating groups to rules)."""
        raise NotImplementedError

    def delete_groups(self) -> None:
        """Remove every HA group (after their migration to rules)."""
        raise NotImplementedError

    # the version a node must have before HA groups are migrated to rules for good, and
    # what the versions are of (Proxmox: pve-manager 9.0.0~16)
    rules_min_version: str = "9.0.0~16"
    version_name: str = "pve-manager"

    def get_node_version(self, node: str) -> str | None:
        """The software version ``node`` runs (None: unknown)."""
        return None

    def service_config_digest(self, services: dict[str, dict[str, Any]]) -> str | None:
        """Changes when the service config does (rules are compiled again); None: the
        config is not watched for that (Proxmox's simulator)."""
        return hashlib.sha1(json.dumps(services, sort_keys=True).encode()).hexdigest()

    def crs_options(self) -> dict[str, Any]:
        """Datacenter ``crs`` options: ``{"ha": "basic"|"static"|"dynamic",
        "ha-rebalance-on-start": 0|1, "ha-auto-rebalance": 0|1, ...}``."""
        return {}

    def get_basic_service_stats(self) -> dict[str, dict[str, Any]]:
        """Every service known to run somewhere: ``{sid: {"node", "state", "running"}}``
        (the configured ones here; Proxmox adds guests HA does not manage)."""
        return basic_service_stats(self.read_service_config())

    def get_static_service_stats(self) -> dict[str, dict[str, Any]]:
        """As :meth:`get_basic_service_stats`, each with ``"usage": {"maxcpu": cores,
        "maxmem": bytes}`` (configured maxima, for the static scheduler)."""
        return {sid: {**s, "usage": {}} for sid, s in self.get_basic_service_stats().items()}

    def get_dynamic_service_stats(self) -> dict[str, dict[str, Any]]:
        """As :meth:`get_static_service_stats`, the usage also with ``"cpu"`` (cores) and
        ``"mem"`` (bytes) in use now (the dynamic scheduler)."""
        return self.get_static_service_stats()

    def get_static_node_stats(self) -> dict[str, dict[str, Any]]:
        """``{node: {"maxcpu": cores, "maxmem": bytes}}``."""
        return {}

    def lrm_status_extra(self) -> dict[str, Any]:
        """More for this node's LRM status (a real node: its version and the figures
        the schedulers read, see ``hafence.ha.realenv``)."""
        return {}

    def get_dynamic_node_stats(self) -> dict[str, dict[str, Any]]:
        """``{node: {"cpu": cores, "maxcpu": cores, "mem": bytes, "maxmem": bytes}}``:
        what each node uses now, its services' usage included."""
        return {}

    def cluster_state_update(self) -> bool:
        """Refresh cached cluster state; False when the store is inconsistent (skip a round)."""
        return True

    def update_service_config(self, sid: str, changes: dict[str, Any]) -> None:
        """Change properties of one service's config (``ha-manager crm-command stop`` sets
        ``state=stopped``); a value None removes the property."""
        raise NotImplementedError

    def update_service_configs(self, changes: dict[str, dict[str, Any]]) -> None:
        """Several services' changes at once (see :meth:`update_service_config`)."""
        for sid in sorted(changes):
            self.update_service_config(sid, changes[sid])

    def crm_commands_pending(self) -> bool:
        """Whether CRM commands wait in the queue (they wake an idle CRM up)."""
        return False

    @abstractmethod
    def take_crm_commands(self) -> list[str]:
        """Queued CRM command lines, removed from the queue (master CRM only)."""

    @abstractmethod
    def change_service_location(self, sid: str, current_node: str, new_node: str) -> None:
        """Move a service's config from ``current_node`` to ``new_node``.

        Nothing to do when it already names ``new_node``; ServiceLocationConflict when it
        names another node; HafenceError when the service is not configured."""

    def steal_service(self, sid: str, fenced_node: str, new_node: str) -> None:
        """The master recovers a fenced node's service (Proxmox's ``steal_service``)."""
        self.change_service_location(sid, fenced_node, new_node)

    # -- fencing -------------------------------------------------------------------------
    @abstractmethod
    def fence_start(self, node: str) -> str:
        """Start (or keep running) a hardware fence of ``node``; returns ``fence_poll``."""

    @abstractmethod
    def fence_poll(self, node: str) -> str:
        """FENCE_NONE | FENCE_IDLE | FENCE_PENDING | FENCE_OK | FENCE_FAILED."""

    def fence_reset(self, node: str) -> None:
        """Forget the last fence result of ``node`` (it was recovered)."""

    def take_over_agent_lock(self, node: str) -> bool:
        """After ``node``'s fence confirmed the off: take its agent lock at once, without
        waiting for it to expire - only where that is safe (power devices confirmed it and
        the node fell silent; docs/fencing.md). False: the lease-expiry rule applies."""
        return False

    def fence_delay_for(self, node: str, default: float) -> float:
        """The fence delay of ``node`` (a real node with a power device: none)."""
        return default

    def fence_progress(self, node: str) -> dict[str, Any] | None:
        """How the hardware fence of ``node`` goes (chain, attempt, result), for
        ``ha-manager status``; None when nothing is known."""
        return None

    # -- watchdog ------------------------------------------------------------------------
    @abstractmethod
    def watchdog_open(self) -> Any:
        """Arm this node's watchdog; returns a handle."""

    @abstractmethod
    def watchdog_update(self, handle: Any) -> None:
        """Feed the watchdog (only while the daemon is healthy and holds its lock)."""

    @abstractmethod
    def watchdog_close(self, handle: Any) -> None:
        """Disarm the watchdog cleanly."""

    # -- LRM side ------------------------------------------------------------------------
    @abstractmethod
    def is_node_shutdown(self) -> tuple[bool, bool]:
        """``(shutdown, reboot)``: whether this node is shutting down, and if for a reboot."""

    @abstractmethod
    def resource_types(self) -> dict[str, ResourceType]:
        """This node's resource types by SID prefix (``vm``, ``systemd``, ``dummy`` ...)."""

    def submit_worker(self, uid: str, fn: Callable[[], Any]) -> None:
        """Start a worker; default: run it now and keep the result for collect_workers."""
        self._worker_results()[uid] = fn()

    def collect_workers(self) -> dict[str, Any]:
        """Results of finished workers since the last call: ``{uid: fn's return value}``."""
        done = dict(self._worker_results())
        self._worker_results().clear()
        return done

    def running_workers(self) -> int:
        """How many workers are still running (always 0 for the synchronous default)."""
        return 0

    def wait_for_worker(self, timeout: float) -> None:
        """Block until a running worker finishes or ``timeout`` passed (no-op when sync)."""

    def worker_time_budget(self) -> float:
        """Seconds one LRM round may spend waiting for workers to free a slot."""
        return 0.0

    @property
    def process_state(self) -> dict[str, Any]:
        """State a daemon keeps for its process lifetime (the simulator runs every node
        in one process and shares it, as Proxmox's harness shares module variables)."""
        state = self.__dict__.get("_hafence_process_state")
        if state is None:
            state = self.__dict__["_hafence_process_state"] = {}
        return state

    def _worker_results(self) -> dict[str, Any]:
        res = self.__dict__.get("_hafence_worker_results")
        if res is None:
            res = self.__dict__["_hafence_worker_results"] = {}
        return res


class WatchdogHold:
    """A daemon's hold on its node's watchdog: armed at the first lock, fed at every
    renewal, closed cleanly when the daemon may stop protecting (idle, shutdown)."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.handle: Any = None  # the Env's handle (None is valid: no watchdog configured)
        self.armed = False

    def feed(self) -> None:
        if not self.armed:
            self.handle = self.env.watchdog_open()
            self.armed = True
        else:
            self.env.watchdog_update(self.handle)

    def close(self) -> None:
        if self.armed:
            self.env.watchdog_close(self.handle)
            self.handle, self.armed = None, False


def basic_service_stats(config: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:meth:`Env.get_basic_service_stats` of the service config ``config``."""
    return {
        sid: {"node": cd.get("node"), "state": cd.get("state"),
              "running": cd.get("state") == "started"}
        for sid, cd in config.items()
    }  # fmt: skip
