"""The cluster state store interface shared by the embedded and etcd backends.

What it holds (the same names as Proxmox's /etc/pve/ha):

- ``resources.cfg``, ``groups.cfg`` (section-config text) and ``datacenter.cfg`` (JSON),
  exposed parsed through ``hafence.ha.config``;
- ``manager_status`` (the CRM's JSON), ``lrm_status`` per node (JSON), ``crm_commands``
  (text lines such as ``migrate vm:100 node2``, consumed by the CRM);
- a change token and ``wait_for_change`` (etcd: a watch; embedded: polling), so a CRM
  wakes when someone queues a command instead of only on its timer;
- lease locks (``ha_manager_lock``, ``ha_agent_node1_lock`` ...): a name, an owner and an
  expiry. The embedded backend judges expiry with the clock it was given, so a simulator can
  run it on virtual time; etcd judges it with its own leases.

``locked()`` serialises read-modify-write sequences between processes (``ha-manager``
commands and the CRM). Backends implement the raw versioned ``_read``/``_write`` of named
blobs; parsing, validation, the lock discipline and "write only what changed" live here,
once.

**Writes only what changed.** The store remembers the bytes and the backend version
(etcd: ``mod_revision``; embedded: inode, mtime and size) of every blob it last read or
wrote. Writing the same bytes again is skipped when the stored version is still the one
it knows (etcd checks that in a transaction without a write: no new revision), so a
round that changes nothing writes nothing, and a write over someone else's change is
never skipped. The manager and LRM status carry a ``timestamp`` that the HA core bumps
every round; a status whose only change is that timestamp is written at most every
``status_refresh`` seconds (default 60). Liveness is therefore read from the leases, not
from those timestamps: the master is alive while it holds ``ha_manager_lock``, a node
while it holds ``ha_node_<node>_alive`` (:meth:`Store.lease_owner`).

**Round deadline.** :meth:`Store.set_deadline` bounds the store calls of the calling
thread: the daemon loop sets it at the start of each round from its store deadline
(``Timings.store_latency``, whose rules in :mod:`hafence.ha.timings` count it). An etcd
call after it fails at once with :class:`StoreUnavailable`; the embedded store's local
file calls wait on no network, only its lock wait is bounded by the deadline.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import orjson

from hafence.ha import config as hacfg
from hafence.ha.config import decode_blob

RESOURCES = "resources.cfg"
GROUPS = "groups.cfg"
DATACENTER = "datacenter.cfg"
MANAGER_STATUS = "manager_status"
CRM_COMMANDS = "crm_commands"


STATUS_REFRESH = 60.0  # seconds: a timestamp-only status change is written this often
MANAGER_LOCK = "ha_manager_lock"  # as hafence.ha.state names it


class StoreUnavailable(Exception):
    """The backend cannot be reached (etcd down or without quorum), or refuses the call."""


class StoreFull(StoreUnavailable):
    """etcd's space quota is exhausted: every write is refused until an operator acts."""


class LockTimeout(Exception):
    """The read-modify-write lock could not be taken within the time bound."""


class LockLost(LockTimeout):
    """The read-modify-write lock expired or passed to another process before the write:
    nothing was written."""


class Store(abc.ABC):
    """Cluster state: config, status, commands and lease locks."""

    status_refresh: float = STATUS_REFRESH

    def __init__(self) -> None:
        # name -> (bytes, backend version) last read or written by this object
        self._known: dict[str, tuple[bytes | None, Any]] = {}
        # status name -> (its timestamp, the bytes stored) as last read or written
        self._status_seen: dict[str, tuple[Any, bytes]] = {}
        self._thread = threading.local()

    # -- raw blobs, implemented by a backend ------------------------------------------------
    @abc.abstractmethod
    def _read(self, name: str) -> tuple[bytes | None, Any]:
        """Content of blob ``name`` (e.g. ``lrm_status/node1``) or None, and its version."""

    @abc.abstractmethod
    def _write(self, name: str, data: bytes, unless: Any = None) -> Any:
        """Replace blob ``name`` atomically; its new version.

        With ``unless`` (a version from ``_read``/``_write``) the backend skips the write
        while the stored version is still ``unless`` (the caller knows it holds ``data``).
        """

    @abc.abstractmethod
    def _delete(self, name: str) -> None: ...

    @abc.abstractmethod
    def _list(self, prefix: str) -> list[str]:
        """Names of the blobs below ``prefix/`` (without the prefix)."""

    @abc.abstractmethod
    def locked(self, timeout: float = 10.0) -> AbstractContextManager[None]:
        """Exclusive lock for a read-modify-write sequence (re-entrant in one process)."""

    @abc.abstractmethod
    def quorate(self) -> bool:
        """True when writes are safe (embedded: always; etcd: the cluster answers)."""

    def _get(self, name: str) -> bytes | None:
        data, version = self._read(name)
        self._known[name] = (data, version)
        return data

    def _put(self, name: str, data: bytes) -> None:
        known = self._known.get(name)
        unless = known[1] if known is not None and known[0] == data else None
        self._known[name] = (data, self._write(name, data, unless))

    # -- round deadline ----------------------------------------------------------------------
    def set_deadline(self, deadline: float | None) -> None:
        """Bound this thread's store calls: after ``deadline`` (``time.monotonic()``) they
        fail fast with StoreUnavailable; None lifts the bound."""
        self._thread.deadline = deadline

    def deadline(self) -> float | None:
        return getattr(self._thread, "deadline", None)

    def keep_leases_until(self, until: float | None) -> None:
        """Background lease keep-alive (etcd) may renew this process's leases until
        ``until`` (``time.monotonic()``); the daemon loop moves it on every round."""

    # -- lease locks -------------------------------------------------------------------------
    @abc.abstractmethod
    def acquire_lease(self, name: str, owner: str, ttl: float, *, keep: bool = True) -> bool:
        """Take ``name`` for ``owner`` for ``ttl`` seconds; also extends one ``owner`` holds.

        False when another owner holds an unexpired lease. ``keep=False``: never renewed
        in the background (:meth:`keep_leases_until`): a lock the master takes from a
        dead node only proves that node gone, and must expire so the node can come back.
        """

    @abc.abstractmethod
    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Extend a lease ``owner`` holds; False if it expired or someone else holds it."""

    @abc.abstractmethod
    def release_lease(self, name: str, owner: str) -> bool:
        """Give the lease up; False if ``owner`` did not hold it."""

    @abc.abstractmethod
    def lease_owner(self, name: str) -> str | None:
        """Current holder of an unexpired lease, or None."""

    @abc.abstractmethod
    def lease_holder(self, name: str) -> dict[str, str] | None:
        """``{"owner": node, "incarnation": ...}`` of an unexpired lease, or None.

        The incarnation names the daemon process that took or last renewed it (node, boot
        id, PID and process start time, :func:`incarnation`): a restarted daemon of the
        same node is the same owner but another incarnation.
        """

    @abc.abstractmethod
    def lease_info(self, name: str) -> dict[str, Any] | None:
        """:meth:`lease_holder` plus ``expires_in``: the seconds left before the lease
        expires unless renewed (etcd: its lease's TTL, whole seconds). A renewal moves
        the expiry up: how the master tells whether a node still renews its locks
        (docs/fencing.md)."""

    @abc.abstractmethod
    def write_manager_status_as(self, owner: str, status: dict[str, Any]) -> bool:
        """Write the manager status only while ``owner`` holds ``ha_manager_lock``; False
        (nothing written) otherwise, so a deposed master's late write is refused."""

    @abc.abstractmethod
    def take_over_lease(
        self,
        name: str,
        owner: str,
        ttl: float,
        from_owner: str,
        *,
        incarnation: str | None = None,
        keep: bool = True,
    ) -> bool:
        """Move lease ``name`` from ``from_owner`` to ``owner`` in one step, without waiting
        for it to expire (for a node whose power-off was confirmed). Also succeeds when
        the lease is free; False when someone other than ``from_owner`` holds it, or,
        with ``incarnation``, another incarnation of ``from_owner`` (one that took the
        lock since the caller judged it). ``keep`` as for :meth:`acquire_lease`."""

    @abc.abstractmethod
    def change_token(self) -> str:
        """An opaque token that changes whenever config, status or commands change."""

    @abc.abstractmethod
    def wait_for_change(self, token: str, timeout: float) -> str:
        """Block until the state differs from ``token`` (or ``timeout``); the new token.

        Lease renewals do not count: they are not news for the CRM. A change made after
        ``token`` was taken but before the call is seen at once (no lost wake-up).
        """

    def close(self) -> None:
        """Release connections (etcd); nothing for the embedded store."""

    # -- text / JSON helpers -----------------------------------------------------------------
    def read_bytes(self, name: str) -> bytes | None:
        """The blob's stored bytes, undecoded (None if absent)."""
        return self._get(name)

    def read_text(self, name: str) -> str:
        """The blob as UTF-8 text ("" if absent); ConfigErrors names it and the line of a
        byte that is not UTF-8."""
        raw = self._get(name)
        return decode_blob(raw, self.location(name)) if raw is not None else ""

    def write_text(self, name: str, text: str) -> None:
        self._put(name, text.encode())

    def _read_json(self, name: str) -> Any:
        raw = self._get(name)
        if raw is None or not raw.strip():
            return {}
        return orjson.loads(raw)

    def _write_json(self, name: str, data: Any) -> None:
        self._put(name, encode_json(data))

    def _read_status(self, name: str) -> dict[str, Any]:
        raw = self._get(name)
        if raw is None or not raw.strip():
            return {}
        status = orjson.loads(raw)
        if isinstance(status, dict):
            self._status_seen[name] = (status.get("timestamp"), raw)
        return status

    def _status_bytes(self, name: str, status: dict[str, Any]) -> bytes:
        """The bytes to store for ``status``: when only its ``timestamp`` moved (and the
        stored one is younger than ``status_refresh``), the stored bytes, so the write is
        skipped as unchanged."""
        body = encode_json({k: v for k, v in status.items() if k != "timestamp"})
        ts = status.get("timestamp")
        seen = self._status_seen.get(name)
        if (
            seen is not None
            and isinstance(ts, int | float)
            and isinstance(seen[0], int | float)
            and 0 <= ts - seen[0] < self.status_refresh
        ):
            same = _with_timestamp(body, seen[0])
            if same == seen[1]:
                return same
        data = _with_timestamp(body, ts) if "timestamp" in status else body
        self._status_seen[name] = (ts, data)
        return data

    def location(self, name: str) -> str:
        """How error messages name a blob (a path or a key)."""
        return name

    # -- configuration -----------------------------------------------------------------------
    def read_resources(self) -> dict[str, dict[str, Any]]:
        return hacfg.parse_resources(self.read_text(RESOURCES), self.location(RESOURCES))

    def write_resources(self, resources: dict[str, dict[str, Any]]) -> None:
        self.write_text(RESOURCES, hacfg.format_resources(resources))

    def read_groups(self) -> dict[str, dict[str, Any]]:
        return hacfg.parse_groups(self.read_text(GROUPS), self.location(GROUPS))

    def write_groups(self, groups: dict[str, dict[str, Any]]) -> None:
        self.write_text(GROUPS, hacfg.format_groups(groups))

    def read_datacenter(self) -> dict[str, Any]:
        return hacfg.parse_datacenter(self.read_text(DATACENTER), self.location(DATACENTER))

    def write_datacenter(self, options: dict[str, Any]) -> None:
        text = hacfg.format_datacenter(options)
        hacfg.parse_datacenter(text, self.location(DATACENTER))  # refuse to store bad options
        self.write_text(DATACENTER, text)

    def ha_options(self) -> dict[str, Any]:
        """``{"shutdown_policy": ..., "max_worker": ...}`` with defaults."""
        return self.read_datacenter()["ha"]

    # -- status ------------------------------------------------------------------------------
    def read_manager_status(self) -> dict[str, Any]:
        return self._read_status(MANAGER_STATUS)

    def write_manager_status(self, status: dict[str, Any]) -> None:
        self._put(MANAGER_STATUS, self._status_bytes(MANAGER_STATUS, status))

    def read_lrm_status(self, node: str) -> dict[str, Any]:
        hacfg.parse_node_name(node)
        return self._read_status(f"lrm_status/{node}")

    def write_lrm_status(self, node: str, status: dict[str, Any]) -> None:
        hacfg.parse_node_name(node)
        name = f"lrm_status/{node}"
        self._put(name, self._status_bytes(name, status))

    def lrm_nodes(self) -> list[str]:
        return sorted(self._list("lrm_status"))

    # -- CRM commands ------------------------------------------------------------------------
    def read_crm_commands(self) -> list[str]:
        return [ln for ln in self.read_text(CRM_COMMANDS).splitlines() if ln.strip()]

    def queue_crm_command(self, line: str) -> None:
        """Append one command line (under the lock, so concurrent writers never lose one)."""
        if "\n" in line:
            raise ValueError("a CRM command is a single line")
        with self.locked():
            cmds = self.read_crm_commands()
            cmds.append(line)
            self.write_text(CRM_COMMANDS, "".join(c + "\n" for c in cmds))

    def take_crm_commands(self) -> list[str]:
        """Read and clear the queue in one step (the CRM's side).

        An empty queue is answered without the lock: the lock costs writes (etcd: two
        revisions) every round, and a command queued after the look is seen next round.
        """
        if not self.read_crm_commands():
            return []
        with self.locked():
            cmds = self.read_crm_commands()
            if cmds:
                self.write_text(CRM_COMMANDS, "")
            return cmds

    def update(self, name: str, fn: Callable[[str], str]) -> str:
        """Read-modify-write of a text blob under the lock; returns the new text."""
        with self.locked():
            new = fn(self.read_text(name))
            self.write_text(name, new)
            return new

    def snapshot(self) -> dict[str, bytes | None]:
        """Every blob's bytes (tests compare before/after a refused command)."""
        names = [RESOURCES, GROUPS, DATACENTER, MANAGER_STATUS, CRM_COMMANDS]
        names += [f"lrm_status/{n}" for n in self.lrm_nodes()]
        return {n: self._get(n) for n in names}


_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def encode_json(data: Any) -> bytes:
    """Compact, key-sorted JSON (equal data, equal bytes: unchanged writes are skipped).

    orjson: a manager status of 30,000 services encodes in a sixth of json's time."""
    return orjson.dumps(data, option=_JSON_OPTIONS)


def _with_timestamp(body: bytes, ts: Any) -> bytes:
    """``body`` (an encoded JSON object without a timestamp) with ``"timestamp": ts`` last:
    the status is encoded once per write, not twice."""
    tail = b'"timestamp":' + orjson.dumps(ts) + b"}\n"
    return body[:-2] + (b"," if len(body) > 3 else b"") + tail


def incarnation(owner: str) -> str:
    """``owner`` as run by this process: ``node@boot:pid:start``."""
    from hafence.store import proc

    me = proc.identity()
    return f"{owner}@{str(me['boot'])[:8]}:{me['pid']}:{me['start']}"
