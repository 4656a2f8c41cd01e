"""The real Env: what ``hafence-crm`` and ``hafence-lrm`` run the HA logic on.

One :class:`RealEnv` serves one daemon (``role`` ``crm`` or ``lrm``) of one node:

- **clock**: wall time (``time.time()``); timestamps are shared with other nodes and with
  ``ha-manager status``, as Proxmox does.
- **store**: everything shared goes through a :class:`hafence.store.Store` (an embedded
  directory or etcd); ``quorate()`` is the store's (etcd answers / always for embedded).
- **locks** are store leases with ``lease_ttl`` (Proxmox: 120 s), owned by the node name:
  ``ha_manager_lock`` and ``ha_agent_<node>_lock``. The CRM takes a dead node's agent lock
  with its own node as owner; the lease then proves that node's LRM is gone.
- **membership** (there is no corosync): a node is *online* while its membership lease
  ``ha_node_<node>_alive`` is held. Both daemons of the node renew it every loop
  (:meth:`heartbeat`, owner = node name, ttl ``node_timeout``), so an LRM restart alone
  does not take the node offline, as a corosync member stays online while pve-ha-lrm
  restarts. A node whose daemons stopped renewing (crash, power loss, cut from the store)
  turns offline once the lease expires, judged by the store (etcd's lease clock, or the
  embedded store's clock). The node list is every node that has an LRM status or appears
  in the manager status.
- **fencing**: :class:`FenceRunner` runs ``hafence.fence.Fencer`` in a background asyncio
  thread so the CRM step never blocks; the step polls. fence.cfg is re-read for every
  attempt; every attempt lands in the fence history.
- **resources**: the resource type plugins (``hafence.ha.resources``) run in a thread pool
  bounded by the datacenter option ``max_worker``.
- **watchdog**: ``hafence.watchdog.client.WatchdogClient`` to ``hafence-watchdog-mux``, or
  nothing with ``watchdog_socket=None`` (tests and development; the daemons warn loudly).
- **log**: one line per decision through ``logging`` (logger ``hafence.ha``), prefixed
  ``<node>/<role>:`` like Proxmox's HA log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hafence.errors import HafenceError
from hafence.ha import state as st
from hafence.ha.env import (
    FENCE_FAILED,
    FENCE_IDLE,
    FENCE_NONE,
    FENCE_OK,
    FENCE_PENDING,
    Env,
)
from hafence.ha.resources import (
    RUNNING,
    ResourceError,
    ResourceType,
    load_resource_types,
    split_sid,
)
from hafence.ha.timings import Timings
from hafence.store import Store, StoreUnavailable

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


class FenceRunner:
    """Hardware fencing in a background asyncio loop; the CRM step only starts and polls.

    ``config_path`` None means no hardware fencing (every node: FENCE_NONE). A node without
    a chain in fence.cfg is FENCE_NONE too. A broken or missing fence.cfg makes a fence
    FAILED (never NONE): services then stay in ``fence`` instead of being recovered on the
    agent lock alone while the operator believes hardware fencing is on.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None,
        *,
        actor: str,
        history_path: str | os.PathLike[str] | None = None,
        log_fn: Callable[[str, str], None],
        registry: Any = None,
        retries: int = 1,
        backoff: float = 1.0,
    ) -> None:
        self.config_path = Path(config_path) if config_path is not None else None
        self.actor = actor
        self.history_path = history_path
        self._log = log_fn
        self.registry = registry
        self.retries = retries
        self.backoff = backoff
        self._futures: dict[str, concurrent.futures.Future[Any]] = {}
        self._results: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="hafence-fencer", daemon=True)
                t.start()
                self._loop, self._thread = loop, t
            return self._loop

    def _load(self) -> Any:
        from hafence.fence import check_drivers, load_fence_config

        assert self.config_path is not None
        cfg = load_fence_config(self.config_path)
        check_drivers(cfg, self.registry)  # bad options fail here, naming file/line/field
        return cfg

    def has_chain(self, node: str) -> bool | None:
        """True/False from fence.cfg; None when fence.cfg cannot be read."""
        if self.config_path is None:
            return False
        try:
            return bool(self._load().chain(node))
        except Exception:
            return None

    def start(self, node: str) -> str:
        if self.config_path is None:
            return FENCE_NONE
        fut = self._futures.get(node)
        if fut is not None and not fut.done():
            return FENCE_PENDING
        if fut is not None:
            self.poll(node)  # record the finished attempt before starting a new one
        try:
            cfg = self._load()
            chain = cfg.chain(node)
        except Exception as exc:
            self._log("err", f"fencing: cannot use fence config {self.config_path}: {exc}")
            self._results[node] = FENCE_FAILED
            self._futures.pop(node, None)
            return FENCE_FAILED
        if not chain:
            return FENCE_NONE
        self._results.pop(node, None)
        levels = ", ".join(lv.name for lv in chain)
        self._log("notice", f"fencing: start hardware fence of node '{node}' (levels: {levels})")
        self._futures[node] = asyncio.run_coroutine_threadsafe(
            self._fence(cfg, node), self._ensure_loop()
        )
        return FENCE_PENDING

    async def _fence(self, cfg: Any, node: str) -> Any:
        from hafence.fence import FenceHistory, Fencer

        history = FenceHistory(self.history_path) if self.history_path is not None else None
        fencer = Fencer(
            cfg,
            self.registry,
            history,
            retries=self.retries,
            backoff=self.backoff,
            actor=self.actor,
        )
        return await fencer.fence(node, "off")

    def poll(self, node: str) -> str:
        if self.config_path is None:
            return FENCE_NONE
        fut = self._futures.get(node)
        if fut is None:
            if node in self._results:
                return self._results[node]
            chain = self.has_chain(node)
            return FENCE_NONE if chain is False else FENCE_IDLE
        if not fut.done():
            return FENCE_PENDING
        del self._futures[node]
        try:
            res = fut.result()
        except Exception as exc:  # a fencer bug must read as a failed fence, never success
            self._log("err", f"fencing: fence of node '{node}' crashed: {exc!r}")
            self._results[node] = FENCE_FAILED
            return FENCE_FAILED
        if res.ok:
            devs = ", ".join(res.devices)
            self._log(
                "notice",
                f"fencing: node '{node}' confirmed off by level {res.level} ({devs}) "
                f"in {res.duration:.1f}s",
            )
            self._results[node] = FENCE_OK
        else:
            self._log(
                "err",
                f"fencing: fence of node '{node}' failed ({res.error_kind}): {res.message}",
            )
            self._results[node] = FENCE_FAILED
        return self._results[node]

    def reset(self, node: str) -> None:
        self._results.pop(node, None)
        fut = self._futures.pop(node, None)
        if fut is not None:
            fut.cancel()

    def close(self) -> None:
        with self._lock:
            loop, t = self._loop, self._thread
            self._loop = self._thread = None
        for fut in self._futures.values():
            fut.cancel()
        if loop is not None and t is not None:
            loop.call_soon_threadsafe(loop.stop)
            t.join(timeout=5)
            if not t.is_alive():
                loop.close()


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
    ) -> None:
        if role not in ("crm", "lrm"):
            raise ValueError("role must be 'crm' or 'lrm'")
        self.nodename = node
        self.store = store
        self.role = role
        self.timings = timings or Timings()
        self.watchdog_socket = os.fspath(watchdog_socket) if watchdog_socket else None
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.registry = registry
        self.shutdown_probe = shutdown_probe
        self.stop_timeout = stop_timeout
        self._resource_types = resource_types
        self._last_config: dict[str, dict[str, Any]] = {}
        self._last_groups: dict[str, dict[str, Any]] = {}
        self._last_options: dict[str, Any] = {"shutdown_policy": "conditional", "max_worker": 4}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._workers: dict[str, concurrent.futures.Future[Any]] = {}
        self.fencer = FenceRunner(
            fence_config,
            actor=node,
            history_path=fence_history,
            log_fn=self.log,
            registry=registry,
        )

    # -- clock and log -------------------------------------------------------------------
    def get_time(self) -> float:
        return time.time()

    def log(self, level: str, msg: str) -> None:
        tags = {"hafence_node": self.nodename, "hafence_role": self.role, "hafence_level": level}
        # The tags let notifications (hafence.notify) and journal fields find node and role.
        log.log(_LEVELS.get(level, logging.INFO), "%s/%s: %s", self.nodename, self.role, msg,
                extra=tags)  # fmt: skip

    # -- membership, quorum, locks ---------------------------------------------------------
    def quorate(self) -> bool:
        try:
            return self.store.quorate()
        except StoreUnavailable:
            return False

    def _lease_call(self, what: str, fn: Callable[[], bool]) -> bool:
        try:
            return fn()
        except StoreUnavailable as exc:
            self.log("err", f"{what}: store unavailable: {exc}")
            return False

    def heartbeat(self) -> bool:
        """Renew this node's membership lease (both daemons call it every loop)."""
        name = node_alive_lease(self.nodename)
        return self._lease_call(
            "membership heartbeat",
            lambda: self.store.acquire_lease(name, self.nodename, self.timings.node_timeout),
        )

    def leave(self) -> None:
        """Drop the membership lease (clean LRM stop): the node reads offline at once."""
        self._lease_call(
            "leave",
            lambda: self.store.release_lease(node_alive_lease(self.nodename), self.nodename),
        )

    def known_nodes(self) -> list[str]:
        nodes = set(self.store.lrm_nodes())
        ms = self.store.read_manager_status()
        nodes.update((ms or {}).get("node_status", {}))
        return sorted(nodes)

    def get_node_info(self) -> dict[str, dict[str, Any]]:
        try:
            nodes = self.known_nodes()
            return {n: {"online": self.store.lease_owner(node_alive_lease(n)) == n} for n in nodes}
        except StoreUnavailable as exc:
            self.log("err", f"node info: store unavailable: {exc}")
            return {}

    def get_ha_manager_lock(self) -> bool:
        return self._lease_call(
            "manager lock",
            lambda: self.store.acquire_lease(
                st.MANAGER_LOCK, self.nodename, self.timings.lease_ttl
            ),
        )

    def release_ha_manager_lock(self) -> None:
        self._lease_call(
            "manager lock", lambda: self.store.release_lease(st.MANAGER_LOCK, self.nodename)
        )

    def get_ha_agent_lock(self, node: str | None = None) -> bool:
        name = st.agent_lock_name(node or self.nodename)
        return self._lease_call(
            f"agent lock {name}",
            lambda: self.store.acquire_lease(name, self.nodename, self.timings.lease_ttl),
        )

    def release_ha_agent_lock(self) -> None:
        name = st.agent_lock_name(self.nodename)
        self._lease_call(
            f"agent lock {name}", lambda: self.store.release_lease(name, self.nodename)
        )

    # -- cluster state -----------------------------------------------------------------------
    def read_manager_status(self) -> dict[str, Any]:
        return self.store.read_manager_status()

    def write_manager_status(self, status: dict[str, Any]) -> None:
        self.store.write_manager_status(status)

    def read_lrm_status(self, node: str | None = None) -> dict[str, Any]:
        return self.store.read_lrm_status(node or self.nodename)

    def write_lrm_status(self, status: dict[str, Any]) -> None:
        self.store.write_lrm_status(self.nodename, status)

    def read_service_config(self) -> dict[str, dict[str, Any]]:
        # A config that does not parse keeps the last good one: an empty result would
        # read as "every service was removed" and stop them all.
        try:
            self._last_config = self.store.read_resources()
        except HafenceError as exc:
            self.log("err", f"service config unreadable, keeping the last good one: {exc}")
        return self._last_config

    def read_groups(self) -> dict[str, dict[str, Any]]:
        try:
            self._last_groups = self.store.read_groups()
        except HafenceError as exc:
            self.log("err", f"groups config unreadable, keeping the last good one: {exc}")
        return self._last_groups

    def ha_options(self) -> dict[str, Any]:
        try:
            self._last_options = self.store.ha_options()
        except HafenceError as exc:
            self.log("err", f"datacenter options unreadable, keeping the last good ones: {exc}")
        return self._last_options

    def take_crm_commands(self) -> list[str]:
        return self.store.take_crm_commands()

    def crm_commands_pending(self) -> bool:
        return bool(self.store.read_crm_commands())

    def read_rules(self) -> dict[str, dict[str, Any]]:
        """``rules.cfg`` in the store (Proxmox 9 node-affinity rules); none: ``{}``."""
        from hafence.ha.config import parse_rules

        text = self.store.read_text("rules.cfg")
        try:
            self._last_rules = parse_rules(text, self.store.location("rules.cfg")) if text else {}
        except HafenceError as exc:
            self.log("err", f"rules unreadable, keeping the last good ones: {exc}")
        return getattr(self, "_last_rules", {})

    def update_service_config(self, sid: str, changes: dict[str, Any]) -> None:
        with self.store.locked():
            resources = self.store.read_resources()
            if sid in resources:
                resources[sid].update(changes)
                self.store.write_resources(resources)

    def change_service_location(self, sid: str, current_node: str, new_node: str) -> None:
        with self.store.locked():
            resources = self.store.read_resources()
            conf = resources.get(sid)
            if conf is None:
                raise HafenceError(f"service '{sid}' is not configured")
            if conf.get("node") not in (current_node, None):
                raise HafenceError(
                    f"service '{sid}' is on '{conf.get('node')}', not on '{current_node}'"
                )
            conf["node"] = new_node
            self.store.write_resources(resources)

    # -- fencing -------------------------------------------------------------------------
    def fence_start(self, node: str) -> str:
        return self.fencer.start(node)

    def fence_poll(self, node: str) -> str:
        return self.fencer.poll(node)

    def fence_reset(self, node: str) -> None:
        self.fencer.reset(node)

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
        )
        self.log("info", f"watchdog active (timeout {self.timings.watchdog_timeout:g}s)")
        return client

    def watchdog_update(self, handle: Any) -> None:
        if handle is not None:
            handle.feed()

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

    def exec_resource_command(self, sid: str, conf: dict[str, Any], cmd: str, *params: Any) -> int:
        """Run one LRM command (Proxmox's exec_resource_agent); blocking, run in a worker."""
        target, timeout = _params(params)
        try:
            rtype, rid = split_sid(sid)
        except ValueError as exc:
            self.log("err", str(exc))
            return st.ERROR
        if conf.get("node") not in (None, self.nodename):
            self.log("err", f"service '{sid}' not on this node")
            return st.EWRONG_NODE
        plugin = self.resource_types().get(rtype)
        if plugin is None:
            self.log("err", f"service '{sid}': no resource type '{rtype}' on this node")
            return st.ERROR
        try:
            return self._exec(plugin, sid, rid, cmd, target, timeout)
        except ResourceError as exc:
            self.log("err", f"service {sid}: {cmd} failed ({exc.reason}): {exc.message}")
            return st.ERROR

    def _exec(
        self,
        plugin: ResourceType,
        sid: str,
        rid: str,
        cmd: str,
        target: str | None,
        timeout: float | None,
    ) -> int:
        if cmd == "started":
            if plugin.status(rid) == RUNNING:
                return st.SUCCESS
            self.log("info", f"starting service {sid}")
            plugin.start(rid)
            if plugin.status(rid) != RUNNING:
                self.log("err", f"service {sid}: start reported success but it is not running")
                return st.ERROR
            self.log("info", f"service status {sid} started")
            return st.SUCCESS
        if cmd in ("request_stop", "stopped", "stop"):
            if plugin.status(rid) == RUNNING:
                self.log("info", f"stopping service {sid}")
                plugin.stop(rid, timeout if timeout is not None else self.stop_timeout)
                self.log("info", f"service status {sid} stopped")
            return st.SUCCESS
        if cmd in ("migrate", "relocate", "request_start_balance"):
            if not target:
                self.log("err", f"service {sid}: {cmd} without a target node")
                return st.ERROR
            if target == self.nodename:
                return st.SUCCESS
            if cmd == "request_start_balance" and plugin.status(rid) == RUNNING:
                self.log("info", f"ignoring rebalance-on-start for service {sid} - already running")
                return st.IGNORED
            online = cmd == "migrate"
            try:
                plugin.migrate(rid, target, online)
            except ResourceError as exc:
                if exc.reason != "not_supported":
                    raise
                # No native migration: move it by stop here, start there (the CRM/LRM
                # of the target starts it once the config names the target).
                if plugin.status(rid) == RUNNING:
                    self.log("info", f"stopping service {sid} to move it to {target}")
                    plugin.stop(rid, self.stop_timeout)
            self.change_service_location(sid, self.nodename, target)
            self.log("info", f"service {sid} moved to node '{target}'")
            return st.SUCCESS
        if cmd == "error":
            if plugin.status(rid) == RUNNING:
                self.log("err", f"service {sid} is in an error state while running")
            else:
                self.log("warning", f"service {sid} is not running and in an error state")
            return st.SUCCESS
        self.log("err", f"service {sid}: unknown command '{cmd}'")
        return st.ERROR

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

    def close(self, wait: bool = True) -> None:
        """Stop the fence thread and (optionally) wait for running workers."""
        self.fencer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=wait)
            self._pool = None


def _params(params: tuple[Any, ...]) -> tuple[str | None, float | None]:
    """Accept ``(target)``, ``(timeout)``, or a dict ``{"target":..., "timeout":...}``."""
    target: str | None = None
    timeout: float | None = None
    for p in params:
        if isinstance(p, dict):
            target = p.get("target", target)
            if p.get("timeout") is not None:
                timeout = float(p["timeout"])
        elif isinstance(p, str):
            target = p
        elif isinstance(p, int | float):
            timeout = float(p)
    return target, timeout
