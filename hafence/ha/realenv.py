"""The real Env: what ``hafence-crm`` and ``hafence-lrm`` run the HA logic on.

One :class:`RealEnv` serves one daemon (``role`` ``crm`` or ``lrm``) of one node:

- **clock**: wall time (``time.time()``); timestamps are shared with other nodes and with
  ``ha-manager status``, as Proxmox does.
- **store**: everything shared goes through a :class:`hafence.store.Store` (an embedded
  directory or etcd); ``quorate()`` is the store's (etcd answers / always for embedded).
- **locks** are store leases with ``lease_ttl`` (Proxmox: 120 s), owned by the node name:
  ``ha_manager_lock`` and ``ha_agent_<node>_lock``. The CRM takes a dead node's agent lock
  with its own node as owner; the lease then proves that node's LRM is gone. Each lease
  names the daemon incarnation that took it (node, boot, process start): a daemon renews
  only a lock its own process took, and drops one an earlier incarnation of its node
  left behind (gone: the process ended, or the node booted since) to take a fresh one.
  Only the manager lock's holder writes the manager status (the store refuses a deposed
  master's late write).
- **fast path** (docs/fencing.md): after a node's chain confirmed its power-off through
  ``power`` devices only, the master takes the node's agent lock at once, in one store
  transaction, provided the node has not renewed anything since the fence began
  (:mod:`hafence.ha.takeover`); a CRM whose master's node went offline fences it and
  takes the manager lock over the same way.
- **membership** (there is no corosync): a node is *online* while its membership lease
  ``ha_node_<node>_alive`` is held. Both daemons of the node renew it every loop
  (:meth:`heartbeat`, owner = node name, ttl ``node_timeout``), so an LRM restart alone
  does not take the node offline, as a corosync member stays online while pve-ha-lrm
  restarts; a daemon that stops leaves the lease to expire, as the other one shares it.
  A node whose daemons stopped renewing (crash, power loss, cut from the store) turns
  offline once the lease expires, judged by the store (etcd's lease clock, or the
  embedded store's clock). The node list is every node that has an LRM status or appears
  in the manager status.
- **fencing**: ``hafence.ha.fencerun.FenceRunner`` runs ``hafence.fence.Fencer`` in a
  background thread so the CRM step never blocks; fence.cfg (a file, or the cluster's copy
  in the store) is read again for every attempt; every attempt lands in the fence history.
- **resources**: this node's resource type plugins (``hafence.ha.resources``) for the
  LRM's procedure (``hafence.ha.agent``), run in a thread pool bounded by the datacenter
  option ``max_worker``; service config moves under the store's lock.
- **watchdog**: ``hafence.watchdog.client.WatchdogClient`` to ``hafence-watchdog-mux``, or
  nothing with ``watchdog_socket=None`` (tests and development; the daemons warn loudly).
- **log**: one line per decision through ``logging`` (logger ``hafence.ha``), prefixed
  ``<node>/<role>:`` like Proxmox's HA log.
- **scheduler figures**: each LRM puts its node's size and load (``hafence.ha.nodestats``)
  and its services' maxima and usage (the resource types' ``static_stats`` /
  ``dynamic_stats``) into its LRM status, refreshed every ``stats_interval`` seconds,
  with the hafence version it runs; the CRM reads them from there for the ``static`` and
  ``dynamic`` schedulers (Proxmox: pvestatd's broadcasts).
- **cluster state update**: the round starts by reading the datacenter options (the
  round's copy); a store that cannot answer makes the round a skipped one, as Proxmox's
  failed ``cfs_update``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hafence import __version__
from hafence.errors import HafenceError
from hafence.ha import config as hacfg
from hafence.ha import state as st
from hafence.ha.cfgfiles import DATACENTER, GROUPS, RULES, ConfigFiles
from hafence.ha.env import (
    FENCE_FAILED,
    FENCE_IDLE,
    FENCE_OK,
    FENCE_PENDING,
    Env,
    ServiceLocationConflict,
    basic_service_stats,
)
from hafence.ha.fencerun import FenceRunner, FenceSource
from hafence.ha.nodestats import NodeSampler
from hafence.ha.resources import ResourceError, ResourceType, load_resource_types, split_sid
from hafence.ha.rules import format_rules
from hafence.ha.statefile import StateFileError, check_lrm_status, check_manager_status
from hafence.ha.takeover import LYING, SILENT, Takeover
from hafence.ha.timings import Timings
from hafence.store import Store, StoreUnavailable, proc
from hafence.store.base import MANAGER_STATUS, incarnation

log = logging.getLogger("hafence.ha")

_LEVELS = {
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "err": logging.ERROR,
    "email": logging.CRITICAL,  # a notification the admin must see (fence events)
}


def node_alive_lease(node: str) -> str:
    """The membership lease an LRM renews while its node is up."""
    return f"ha_node_{node}_alive"


class StatusWriteRefused(HafenceError):
    """The store refused the manager status: this node no longer holds the manager lock."""


def incarnation_gone(inc: str) -> bool:
    """Whether the daemon incarnation ``node@boot:pid:start`` (of this node) has ended:
    the node booted since, or that process is no longer running."""
    try:
        boot, pid, start = inc.partition("@")[2].split(":")
        pid_no = int(pid)
    except ValueError:
        return False  # not ours to judge: wait for the lease to expire
    if boot != proc.boot_id()[:8]:
        return True
    started = proc.start_time(pid_no)
    return started is None or str(started) != start


def systemd_shutdown_probe() -> tuple[bool, bool]:
    """``(shutdown, reboot)`` from systemd's queued jobs, as Proxmox's LRM checks them."""
    if shutil.which("systemctl") is None:
        return (False, False)
    try:
        out = subprocess.run(
            ["systemctl", "list-jobs", "--no-legend", "--plain"],
            capture_output=True,
            text=True,
            timeout=5,
            stdin=subprocess.DEVNULL,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (False, False)
    units = {line.split()[1] for line in out.splitlines() if len(line.split()) > 1}
    reboot = bool(units & {"reboot.target", "kexec.target"})
    shutdown = reboot or bool(units & {"poweroff.target", "halt.target", "shutdown.target"})
    return (shutdown, reboot)


class RealEnv(Env):
    """The Env for one daemon of one real node (see the module docstring)."""

    def __init__(
        self,
        node: str,
        store: Store,
        *,
        role: str = "crm",
        timings: Timings | None = None,
        fence_config: str | os.PathLike[str] | None = None,
        fence_history: str | os.PathLike[str] | None = None,
        watchdog_socket: str | os.PathLike[str] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        resource_types: dict[str, ResourceType] | None = None,
        registry: Any = None,
        shutdown_probe: Callable[[], tuple[bool, bool]] = systemd_shutdown_probe,
        stop_timeout: float = 180.0,
        stats_interval: float = 10.0,
    ) -> None:
        if role not in ("crm", "lrm"):
            raise ValueError("role must be 'crm' or 'lrm'")
        self.nodename = node
        self.store = store
        self.role = role
        self.timings = timings or Timings()
        self._renewal_sent: float | None = None  # monotonic time of the last own lock renewal
        self.watchdog_socket = os.fspath(watchdog_socket) if watchdog_socket else None
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.registry = registry
        self.shutdown_probe = shutdown_probe
        self.stop_timeout = stop_timeout
        self._resource_types = resource_types
        self.config = ConfigFiles(store, self.log)
        self._last_options: dict[str, Any] = {"shutdown_policy": "conditional", "max_worker": 4}
        self._datacenter: dict[str, Any] | None = None  # this round's datacenter options
        # HAFENCE_STATS_ROOT: where /proc and /sys/fs/cgroup are read (a test plays
        # several machines on one)
        self.sampler = NodeSampler(os.environ.get("HAFENCE_STATS_ROOT") or "/")
        self.stats_interval = stats_interval
        self._stats: tuple[float, dict[str, Any]] | None = None  # (when, figures)
        self._known_figures: dict[str, dict[str, float]] = {}  # the CRM's last seen, by sid
        self._status_nodes: set[str] | None = None  # nodes the last good manager status named
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._workers: dict[str, concurrent.futures.Future[Any]] = {}
        self.incarnation = incarnation(node)  # this process, as the leases it takes name it
        self.wakeup: Callable[[], None] | None = None  # the daemon loop's: run a round now
        self.fencer = FenceRunner(
            FenceSource(fence_config, store, node, self.node_alive),
            actor=node,
            history_path=fence_history,
            log_fn=self.log,
            registry=registry,
            on_done=self._wake,
            ready=self._fence_written,
        )
        self.takeover = Takeover(store, node_alive_lease)
        self._written_fence: set[str] = set()  # nodes in 'fence' in the last status written
        self._said: dict[str, str] = {}  # what was logged once per episode, by topic
        self._master_down: dict[str, float] = {}  # a master's node seen offline since
        self._power_chain: dict[str, tuple[float, bool]] = {}  # node -> (checked at, answer)
        self._verdicts: dict[str, str] = {}  # node -> the last takeover verdict (status)

    # -- clock and log -------------------------------------------------------------------
    def get_time(self) -> float:
        return time.time()

    def log(self, level: str, msg: str) -> None:
        tags = {"hafence_node": self.nodename, "hafence_role": self.role, "hafence_level": level}
        # The tags let notifications (hafence.notify) and journal fields find node and role.
        log.log(_LEVELS.get(level, logging.INFO), "%s/%s: %s", self.nodename, self.role, msg,
                extra=tags)  # fmt: skip

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup()

    def _once(self, topic: str, level: str, msg: str) -> None:
        """Log ``msg`` once while it stays the same for ``topic``."""
        if self._said.get(topic) != msg:
            self._said[topic] = msg
            self.log(level, msg)

    # -- membership, quorum, locks ---------------------------------------------------------
    def quorate(self) -> bool:
        try:
            ok = self.store.quorate()
        except StoreUnavailable:
            ok = False
        # A daemon without quorum writes and takes nothing, and would say nothing either:
        # one line when it loses quorum, one when it has it again.
        if not ok:
            self._once("quorum", "warning", "no quorum: the store answers no quorate read")
        elif self._said.pop("quorum", None) is not None:
            self.log("info", "quorum regained")
        return ok

    def _lease_call(self, what: str, fn: Callable[[], bool]) -> bool:
        try:
            return fn()
        except StoreUnavailable as exc:
            self.log("err", f"{what}: store unavailable: {exc}")
            return False

    def heartbeat(self) -> bool:
        """Renew this node's membership lease (both daemons call it every loop); a CRM
        also tells the others which fence.cfg it uses (hafence.ha.fencerun)."""
        name = node_alive_lease(self.nodename)
        alive = self._lease_call(
            "membership heartbeat",
            lambda: self.store.acquire_lease(name, self.nodename, self.timings.node_timeout),
        )
        if self.role == "crm":
            try:
                self.fencer.source.publish()
            except (StoreUnavailable, OSError, HafenceError) as exc:
                self.log("err", f"cannot publish which fence.cfg this node uses: {exc}")
        return alive

    def node_alive(self, node: str) -> bool:
        """Whether ``node``'s membership lease is alive (its daemons run and reach us)."""
        return self.store.lease_owner(node_alive_lease(node)) == node

    def known_nodes(self) -> list[str]:
        nodes = set(self.store.lrm_nodes())
        if self._status_nodes is None:  # the master knows what it wrote: read it once
            try:
                self.read_manager_status()
            except StateFileError:
                pass  # whoever relies on the status reports it
        return sorted(nodes | (self._status_nodes or set()))

    def get_node_info(self) -> dict[str, dict[str, Any]]:
        try:
            info = {n: {"online": self.node_alive(n)} for n in self.known_nodes()}
        except StoreUnavailable as exc:
            self.log("err", f"node info: store unavailable: {exc}")
            return {}
        for node, i in info.items():
            if i["online"]:  # a node being fenced that renews its membership is alive
                self.takeover.seen_alive(node)
        return info

    def _own_lock(self, name: str) -> bool:
        """Take or renew this node's lock ``name`` - only one this process took: a lock an
        earlier incarnation of this node left behind is dropped once that incarnation is
        provably gone (and a fresh one taken), or left to expire otherwise."""
        holder = self.store.lease_holder(name)
        inc = holder["incarnation"] if holder and holder["owner"] == self.nodename else None
        if inc is not None and inc != self.incarnation:
            if not incarnation_gone(inc):
                self._once(name, "warning", f"lock '{name}' is held by another process of this "
                           f"node ({inc}): waiting for it to expire")  # fmt: skip
                return False
            if self.store.release_lease(name, self.nodename):
                self.log("info", f"lock '{name}' of an earlier incarnation ({inc}) dropped: "
                         "that process is gone; taking a fresh one")  # fmt: skip
        self._said.pop(name, None)
        return self.store.acquire_lease(name, self.nodename, self.timings.lease_ttl)

    def get_ha_manager_lock(self) -> bool:
        self._renewal_sent = time.monotonic()  # the watchdog feed that follows counts from here
        if self._lease_call("manager lock", lambda: self._own_lock(st.MANAGER_LOCK)):
            return True
        return self._lease_call("manager lock", self._take_over_dead_master)

    def _take_over_dead_master(self) -> bool:
        """The master's node is offline: fence it through its power devices and take the
        manager lock over at once (docs/fencing.md) instead of waiting for it to expire.
        Only the first live node by name does it; the others wait for the lease."""
        info = self.store.lease_info(st.MANAGER_LOCK)
        if self.role != "crm" or info is None or info["owner"] == self.nodename:
            return False
        old, now = info["owner"], time.time()
        if self.node_alive(old) or not self.node_alive(self.nodename):
            self._master_down.pop(old, None)
            return False
        since = self._master_down.setdefault(old, now)
        if now - since < self.fence_delay_for(old, self.timings.fence_delay):
            return False
        alive = [n for n in self.known_nodes() if n != old and self.node_alive(n)]
        if not self.power_fencing(old) or (alive and min(alive) != self.nodename):
            return False
        hw = self.fence_poll(old)
        if hw in (FENCE_IDLE, FENCE_FAILED):
            self._once(f"master:{old}", "notice", f"fencing: master node '{old}' is offline: "
                       "fencing it to take over the manager lock")  # fmt: skip
            self.fence_start(old)
            return False
        locks = [st.MANAGER_LOCK, st.agent_lock_name(old)]
        if hw != FENCE_OK or not self._silent(old, locks):
            return False
        if not self.store.take_over_lease(st.MANAGER_LOCK, self.nodename, self.timings.lease_ttl,
                                          old, incarnation=info["incarnation"]):  # fmt: skip
            return False
        self.log("notice", f"fencing: took over the manager lock of fenced master node '{old}'")
        self._master_down.pop(old, None)
        return True

    def release_ha_manager_lock(self) -> None:
        self._lease_call(
            "manager lock", lambda: self.store.release_lease(st.MANAGER_LOCK, self.nodename)
        )

    def get_ha_agent_lock(self, node: str | None = None) -> bool:
        name = st.agent_lock_name(node or self.nodename)
        if node in (None, self.nodename):
            self._renewal_sent = time.monotonic()  # the watchdog feed that follows counts from here
            return self._lease_call(f"agent lock {name}", lambda: self._own_lock(name))
        # a dead node's lock, once expired: it proves the node gone; never kept alive, so
        # the node takes it again when it is back
        return self._lease_call(
            f"agent lock {name}",
            lambda: self.store.acquire_lease(
                name, self.nodename, self.timings.lease_ttl, keep=False
            ),
        )

    def take_over_agent_lock(self, node: str) -> bool:
        """The fast path: ``node``'s power-off was confirmed by power devices only and the
        node fell silent since its fence began: take its agent lock now, in one store
        transaction from the incarnation judged (docs/fencing.md)."""
        conf = self.fencer.confirmed(node)
        if conf is None or not conf["power"] or node not in self._written_fence:
            return False  # fabric only (or no 'fence' state written yet): lease expiry
        name = st.agent_lock_name(node)
        if not self._lease_call(f"agent lock {name}", lambda: self._silent(node, [name])):
            return False
        holder = self.store.lease_holder(name)
        ttl = self.timings.lease_ttl
        if holder is None:
            taken = self.store.acquire_lease(name, self.nodename, ttl, keep=False)
        else:
            taken = self.store.take_over_lease(name, self.nodename, ttl, node, keep=False,
                                               incarnation=holder["incarnation"])  # fmt: skip
        if taken:
            devs = ", ".join(conf["devices"])
            self.log("notice", f"fencing: node '{node}' confirmed off by power device(s) {devs} "
                     "and silent since: took over its agent lock")  # fmt: skip
        return taken

    def _silent(self, node: str, locks: list[str]) -> bool:
        """Whether ``node`` fell silent since its fence began; a node that renews after its
        power-off was confirmed is a lying device: alerted once, lease expiry from then."""
        verdict = self.takeover.judge(node, locks)
        self._verdicts[node] = verdict
        if verdict == LYING:
            conf = self.fencer.confirmed(node) or {}
            devs = ", ".join(conf.get("devices") or []) or "its fence device"
            self._once(f"lying:{node}", "email", (
                f"fencing: node '{node}' still renews its leases after {devs} confirmed its "
                "power off: the device does not tell the truth! Its services are recovered "
                "only once its agent lock expired (its watchdog); check the device"))  # fmt: skip
        elif verdict != SILENT:
            self._once(f"silent:{node}", "info", f"fencing: node '{node}' confirmed off; waiting "
                       "for its membership to run out before taking over its locks")  # fmt: skip
        return verdict == SILENT

    def power_fencing(self, node: str) -> bool:
        """Whether ``node``'s chain has a level of power devices only (asked once a round)."""
        now = time.monotonic()
        known = self._power_chain.get(node)
        if known is None or now - known[0] >= self.timings.interval:
            known = (now, self.fencer.power_chain(node))
            self._power_chain[node] = known
        return known[1]

    def fence_delay_for(self, node: str, default: float) -> float:
        return self.timings.power_fence_delay if self.power_fencing(node) else default

    def release_ha_agent_lock(self) -> None:
        name = st.agent_lock_name(self.nodename)
        self._lease_call(
            f"agent lock {name}", lambda: self.store.release_lease(name, self.nodename)
        )

    # -- cluster state -----------------------------------------------------------------------
    def read_manager_status(self) -> dict[str, Any]:
        """The manager status, checked (StateFileError naming file and field)."""
        where = self.store.location(MANAGER_STATUS)
        try:
            data = self.store.read_manager_status()
        except StoreUnavailable:
            raise
        except OSError as exc:  # the store cannot be read (as pmxcfs not mounted)
            raise StoreUnavailable(f"{where}: {exc.strerror or exc}") from None
        except Exception as exc:  # not JSON, not UTF-8, a torn write
            raise StateFileError(where, "", f"unreadable: {exc}") from None
        ms = check_manager_status(data, where)
        self._status_nodes = set(ms["node_status"])
        return ms

    def write_manager_status(self, status: dict[str, Any]) -> None:
        """Only while this node holds the manager lock: a deposed master's late write is
        refused by the store (StatusWriteRefused), not just stopped by its watchdog."""
        if not self.store.write_manager_status_as(self.nodename, status):
            msg = (f"manager status write refused: node '{self.nodename}' no longer holds the "
                   "manager lock (another master took over)")  # fmt: skip
            self.log("err", msg)
            raise StatusWriteRefused(msg)
        nodes = status.get("node_status") or {}
        self._status_nodes = set(nodes)
        self._written_fence = {n for n, state in nodes.items() if state == "fence"}

    def read_lrm_status(self, node: str | None = None) -> dict[str, Any]:
        """``node``'s LRM status, checked (StateFileError naming file and field)."""
        node = node or self.nodename
        where = self.store.location(f"lrm_status/{node}")
        try:
            data = self.store.read_lrm_status(node)
        except StoreUnavailable:
            raise
        except OSError as exc:
            raise StoreUnavailable(f"{where}: {exc.strerror or exc}") from None
        except Exception as exc:
            raise StateFileError(where, "", f"unreadable: {exc}") from None
        return check_lrm_status(data, where)

    def write_lrm_status(self, status: dict[str, Any]) -> None:
        self.store.write_lrm_status(self.nodename, status)

    def read_service_config(self) -> dict[str, dict[str, Any]]:
        # never "every service was removed" because of a damaged file (hafence.ha.cfgfiles)
        return self.config.resources()

    def service_config_digest(self, services: dict[str, dict[str, Any]]) -> str | None:
        return self.config.resources_digest()

    def get_basic_service_stats(self) -> dict[str, dict[str, Any]]:
        # read only: the parsed config itself, not the copy read_service_config hands out
        return basic_service_stats(self.config.resources(copy=False))

    def read_groups(self) -> dict[str, dict[str, Any]]:
        return self.config.groups()

    def cluster_state_update(self) -> bool:
        """Read this round's datacenter options; False when the store cannot answer."""
        try:
            text = self.store.read_text(DATACENTER)
        except StoreUnavailable as exc:
            self.log("warning", f"cluster file system update failed - {exc}")
            self._datacenter = None
            return False
        except Exception:  # a damaged file: ConfigFiles keeps the last good version
            text = None
        if text is None:
            self._datacenter = None
        else:
            try:
                self._datacenter = hacfg.parse_datacenter(text, self.store.location(DATACENTER))
            except (HafenceError, ValueError):
                self._datacenter = None
        return True

    def _dc(self) -> dict[str, Any]:
        return self._datacenter if self._datacenter is not None else self.config.datacenter()

    def ha_options(self) -> dict[str, Any]:
        self._last_options = dict(self._dc()["ha"])
        return self._last_options

    def crs_options(self) -> dict[str, Any]:
        return dict(self._dc().get("crs") or {})

    def take_crm_commands(self) -> list[str]:
        return self.store.take_crm_commands()

    def crm_commands_pending(self) -> bool:
        return bool(self.store.read_crm_commands())

    def read_rules(self) -> dict[str, dict[str, Any]]:
        """``rules.cfg`` in the store (Proxmox 9 rules); none: ``{}``."""
        return self.config.rules()

    def write_rules(self, rules: dict[str, dict[str, Any]]) -> None:
        text = format_rules(rules)
        with self.store.locked():
            self.store.write_text(RULES, text)

    def delete_groups(self) -> None:
        with self.store.locked():
            self.store.write_text(GROUPS, "")

    rules_min_version = __version__  # every hafence reads rules.cfg
    version_name = "hafence"

    def get_node_version(self, node: str) -> str | None:
        try:
            return (self.read_lrm_status(node) or {}).get("version")
        except StateFileError:
            return None

    def update_service_config(self, sid: str, changes: dict[str, Any]) -> None:
        self.update_service_configs({sid: changes})

    def update_service_configs(self, changes: dict[str, dict[str, Any]]) -> None:
        def change(resources: dict[str, dict[str, Any]]) -> bool:
            done = False
            for sid, ch in changes.items():
                if sid in resources:
                    resources[sid].update(ch)
                    done = True
            return done

        self.config.rewrite_resources(change)

    def change_service_location(self, sid: str, current_node: str, new_node: str) -> None:
        def change(resources: dict[str, dict[str, Any]]) -> bool:
            conf = resources.get(sid)
            if conf is None:
                raise HafenceError(f"service '{sid}' is not configured")
            if conf.get("node") == new_node:
                return False  # already moved (by an earlier round that did not report it)
            if conf.get("node") not in (current_node, None):
                raise ServiceLocationConflict(sid, conf["node"], current_node)
            conf["node"] = new_node
            return True

        self.config.rewrite_resources(change)

    def steal_service(self, sid: str, fenced_node: str, new_node: str) -> None:
        """The master recovers a fenced node's service: what of it is bound to the
        fenced node (a guest's config on Proxmox's cluster filesystem) moves first, then
        the service config."""
        rtype, rid = split_sid(sid)
        plugin = self.resource_types().get(rtype)
        if plugin is not None:
            plugin.steal(rid, fenced_node, new_node)
        self.change_service_location(sid, fenced_node, new_node)

    # -- scheduler figures -------------------------------------------------------------------
    def lrm_status_extra(self) -> dict[str, Any]:
        """What this node's LRM publishes besides its state: its version, its size and
        load and its services' figures (sampled every ``stats_interval`` seconds)."""
        if self.crs_options().get("ha") not in ("static", "dynamic"):
            self._stats = None  # the basic scheduler counts services: no figures needed
            return {"version": __version__}
        now = time.monotonic()
        mine = self._local_sids()
        # sampled every stats_interval, and at once for a service that just arrived
        if (
            self._stats is None
            or now - self._stats[0] >= self.stats_interval
            or set(self._stats[1].get("service_stats", {})) != mine
        ):
            self._stats = (now, self._sample_stats(mine))
        return {"version": __version__, **self._stats[1]}

    def _local_sids(self) -> set[str]:
        try:
            conf = self.read_service_config()
        except StoreUnavailable:
            return set()
        return {sid for sid, cd in conf.items() if cd.get("node") == self.nodename}

    def _sample_stats(self, sids: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            out["node_stats"] = self.sampler.sample()
        except (OSError, ValueError) as exc:
            self.log("warning", f"cannot read this node's size and load: {exc}")
        services: dict[str, dict[str, float]] = {}
        types = self.resource_types()
        for sid in sorted(sids):
            rtype, rid = split_sid(sid)
            plugin = types.get(rtype)
            if plugin is None:
                continue
            entry: dict[str, float] = {}
            for fn in (plugin.static_stats, plugin.dynamic_stats):
                try:
                    entry.update(fn(rid) or {})
                except ResourceError as exc:
                    self.log("warning", f"service {sid}: no scheduler figures: {exc.message}")
            services[sid] = entry
        out["service_stats"] = services
        return out

    def _lrm_figures(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for node in self.known_nodes():
            try:
                out[node] = self.read_lrm_status(node) or {}
            except StateFileError:
                out[node] = {}
        return out

    def _service_stats(self, keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Each service's figures as its node's LRM reports them; a service that just
        moved has them from the node it left until its new node's next sample."""
        lrms = self._lrm_figures()
        reported = {n: lrm.get("service_stats") or {} for n, lrm in lrms.items()}
        stats = self.get_basic_service_stats()
        for sid, entry in stats.items():
            here = reported.get(entry.get("node") or "", {}).get(sid)
            figures = here or next((r[sid] for _, r in sorted(reported.items())
                                    if r.get(sid)), None)  # fmt: skip
            if figures:
                self._known_figures[sid] = figures
            else:  # between the two nodes' samples: as last seen
                figures = self._known_figures.get(sid, {})
            entry["usage"] = {k: figures[k] for k in keys if k in figures}
        for sid in set(self._known_figures) - set(stats):
            del self._known_figures[sid]
        return stats

    def get_static_service_stats(self) -> dict[str, dict[str, Any]]:
        return self._service_stats(("maxcpu", "maxmem"))

    def get_dynamic_service_stats(self) -> dict[str, dict[str, Any]]:
        return self._service_stats(("maxcpu", "maxmem", "cpu", "mem"))

    def get_static_node_stats(self) -> dict[str, dict[str, Any]]:
        return {
            n: {k: s[k] for k in ("maxcpu", "maxmem") if k in s}
            for n, lrm in self._lrm_figures().items()
            if (s := lrm.get("node_stats"))
        }

    def get_dynamic_node_stats(self) -> dict[str, dict[str, Any]]:
        figures = self._lrm_figures()
        return {n: dict(s) for n, lrm in figures.items() if (s := lrm.get("node_stats"))}

    # -- fencing -------------------------------------------------------------------------
    def _fence_written(self, node: str) -> bool:
        """The master powers a node off only once the manager status it wrote says the
        node is fenced: a node powered on again then finds its services in 'fence' and
        starts none of them (docs/fencing.md). A CRM fencing a dead master's node (not
        master yet, it writes no status) leaves that node's services 'started'."""
        return node in self._written_fence or node in self._master_down

    def fence_start(self, node: str) -> str:
        if not self.takeover.watching(node):  # the first attempt: note the node's leases
            try:
                self.takeover.begin(node, [st.agent_lock_name(node)])
            except StoreUnavailable as exc:  # no baseline: no early takeover this episode
                self.log("err", f"fencing: cannot read the leases of node '{node}': {exc}")
        return self.fencer.start(node)

    def fence_poll(self, node: str) -> str:
        return self.fencer.poll(node)

    def fence_reset(self, node: str) -> None:
        self.fencer.reset(node)
        self.takeover.end(node)
        self._verdicts.pop(node, None)
        for topic in (f"lying:{node}", f"silent:{node}", f"master:{node}"):
            self._said.pop(topic, None)

    def fence_progress(self, node: str) -> dict[str, Any] | None:
        prog = self.fencer.progress(node)
        if prog is None:
            return None
        if self.fencer.poll(node) == FENCE_PENDING:
            prog["state"] = "fencing"
        conf = self.fencer.confirmed(node)
        if conf is not None:  # how the agent lock is to be had
            verdict = self._verdicts.get(node)
            prog["lock"] = (
                "lease expiry (not a power device)" if not conf["power"]
                else "lease expiry: the node renews after its power-off (lying device)"
                if verdict == LYING
                else "taking over at once once the node is silent"
            )  # fmt: skip
        return prog

    # -- watchdog ------------------------------------------------------------------------
    def watchdog_open(self) -> Any:
        if self.watchdog_socket is None:
            self.log("warning", "watchdog disabled (--no-watchdog): this node cannot self-fence")
            return None
        from hafence.watchdog.client import WatchdogClient

        client = WatchdogClient.connect(
            self.watchdog_socket,
            self.timings.watchdog_timeout,
            name=f"{self.nodename}-{self.role}",
            max_hw_timeout=self.timings.hw_timeout,  # the mux must reset within the timing rule
        )
        self.log("info", f"watchdog active (timeout {self.timings.watchdog_timeout:g}s)")
        return client

    def watchdog_update(self, handle: Any) -> None:
        if handle is not None:
            # a feed delayed after the renewal (a frozen process) must not extend the deadline
            handle.feed(since=self._renewal_sent)

    def watchdog_close(self, handle: Any) -> None:
        if handle is not None:
            handle.close(magic=True)
            self.log("info", "watchdog closed (disabled)")

    # -- LRM side ------------------------------------------------------------------------
    def is_node_shutdown(self) -> tuple[bool, bool]:
        return self.shutdown_probe()

    def resource_types(self) -> dict[str, ResourceType]:
        if self._resource_types is None:
            self._resource_types = load_resource_types(
                self.nodename, self.state_dir, registry=self.registry
            )
        return self._resource_types

    # -- workers -------------------------------------------------------------------------
    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        size = max(1, int(self._last_options.get("max_worker") or 4))
        if self._pool is None or size != self._pool_size:
            if self._pool is not None:
                self._pool.shutdown(wait=False)  # running workers finish in their threads
            self._pool = concurrent.futures.ThreadPoolExecutor(size, "hafence-worker")
            self._pool_size = size
        return self._pool

    def submit_worker(self, uid: str, fn: Callable[[], Any]) -> None:
        self._workers[uid] = self._executor().submit(fn)

    def collect_workers(self) -> dict[str, Any]:
        done: dict[str, Any] = {}
        for uid, fut in list(self._workers.items()):
            if not fut.done():
                continue
            del self._workers[uid]
            try:
                done[uid] = fut.result()
            except Exception as exc:  # a worker bug is an error result, not a dead LRM
                self.log("err", f"worker {uid} failed: {exc!r}")
                done[uid] = st.ERROR
        return done

    def running_workers(self) -> int:
        return sum(1 for f in self._workers.values() if not f.done())

    def wait_for_worker(self, timeout: float) -> None:
        running = [f for f in self._workers.values() if not f.done()]
        if running:
            concurrent.futures.wait(running, timeout, concurrent.futures.FIRST_COMPLETED)

    def worker_time_budget(self) -> float:
        # as Proxmox's LRM (8 of its 10 s): the rest of the round renews locks and status
        return 0.8 * self.timings.interval

    def close(self, wait: bool = True) -> None:
        """Stop the fence thread and (optionally) wait for running workers."""
        self.fencer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=wait)
            self._pool = None
