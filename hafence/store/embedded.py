"""The embedded store: a directory like /etc/pve/ha, for one machine, tests and the simulator.

Layout: ``resources.cfg``, ``groups.cfg``, ``datacenter.cfg``, ``manager_status``,
``crm_commands``, ``lrm_status/<node>``, ``leases/<name>`` (JSON owner + expiry),
``nodes/<node>`` (the machine a node's daemons ran on) and ``.lock`` (the fcntl lock for
read-modify-write). Every write is atomic (temp file, ``os.replace``) and mode 0600; the
directory is 0700.

**What is fsynced.** Configuration, commands, leases and node records are fsynced (file
and directory) before a write returns: they must survive a power loss as written. The
manager status and the LRM status files are not: each is rewritten by its one writer
every round (10,000 services make a manager status of about 1 MB, whose fsync costs a
master round tens of milliseconds on a busy disk), and every reader runs on this
machine and reads the page cache, so every reader sees the last rename, fsynced or not.
Only a power loss of the whole machine can lose one, and that also stops every daemon
and every service here: the status then reads as an earlier complete version (or, on a
file system that does not order data before renames, as damaged), which the HA core
treats as after a change of master: the service config says where a service is
(recovery checks it), every command gets a new uid, a damaged manager status is rebuilt
by the next master (an LRM acts on none until then) and a damaged LRM status counts as
one without results.

**One machine only.** Daemons on several machines that each use their own directory
would silently form separate one-node clusters. So every daemon records its node with
this machine's id (:meth:`EmbeddedStore.claim_node`), and :meth:`EmbeddedStore.check_local`
refuses a store whose configured nodes did not all run on this machine; several nodes
on one machine (tests, demos) pass. A cluster of machines uses etcd.

**Locks.** ``locked()`` is an ``flock``: the kernel drops it when its holder dies (even
``kill -9``), and a holder that is merely paused (SIGSTOP) keeps it, so other writers
wait (:class:`LockTimeout`) instead of overwriting: there is no lifetime after which a
late writer could overwrite a newer change, as with etcd's lock.

**Temp files** of writers killed mid-write are removed when a store is opened, only those
whose writer is gone (:func:`hafence.store.atomic.remove_stale_temps`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from hafence.errors import HafenceError
from hafence.ha import config as hacfg
from hafence.store import proc
from hafence.store.atomic import remove_stale_temps, write_atomic
from hafence.store.base import (
    MANAGER_LOCK,
    MANAGER_STATUS,
    LockTimeout,
    Store,
    StoreUnavailable,
    incarnation,
)

DEFAULT_DIR = "/etc/hafence/ha"
ENV_DIR = "HAFENCE_HA_DIR"
SUBDIRS = ("lrm_status", "leases", "nodes")


def _is_status(name: str) -> bool:
    """The manager and LRM status: rewritten by their one writer every round and read
    only on this machine, they are not fsynced (module docstring)."""
    return name == MANAGER_STATUS or name.startswith("lrm_status/")


def default_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR)


class NotLocal(Exception):
    """The embedded store names nodes that did not run on this machine: ``foreign`` ones
    ran on another machine, ``unseen`` ones never ran anywhere (yet)."""

    def __init__(self, msg: str, foreign: list[str], unseen: list[str]) -> None:
        super().__init__(msg)
        self.foreign = foreign
        self.unseen = unseen


class EmbeddedStore(Store):
    """State in a local directory; lease expiry judged by ``clock`` (virtual time allowed)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else default_dir()
        self._root = str(self.path)
        self.clock = clock
        self.poll_interval = 0.05
        self.removed_temps = [p for d in ("", *SUBDIRS) for p in remove_stale_temps(self.path / d)]

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.path)!r})"

    def location(self, name: str) -> str:
        return os.path.join(self._root, name)

    def _file(self, name: str) -> Path:
        return Path(self._filename(name))

    def _filename(self, name: str) -> str:
        # a str, not a Path: a master round reads a file per node (pathlib's cost adds up)
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid store entry name '{name}'")
        return os.path.join(self._root, *parts)

    def _ensure_dir(self, d: Path) -> None:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)

    @staticmethod
    def _version(f: Path) -> tuple[int, int, int] | None:
        try:
            st = f.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self, name: str) -> tuple[bytes | None, Any]:
        try:
            with open(self._filename(name), "rb") as fh:
                st = os.fstat(fh.fileno())
                return fh.read(), (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return None, None

    def _write(self, name: str, data: bytes, unless: Any = None) -> Any:
        f = self._file(name)
        if unless is not None and self._version(f) == unless:
            return unless  # each atomic write makes a new inode: still the bytes we know
        self._ensure_dir(f.parent)
        write_atomic(f, data, 0o600, durable=not _is_status(name))
        return self._version(f)

    def _delete(self, name: str) -> None:
        self._known.pop(name, None)
        try:
            self._file(name).unlink()
        except FileNotFoundError:
            pass

    def _list(self, prefix: str) -> list[str]:
        d = self._file(prefix)
        if not d.is_dir():
            return []
        return [p.name for p in d.iterdir() if p.is_file() and not p.name.startswith(".")]

    @contextmanager
    def locked(self, timeout: float = 10.0) -> Iterator[None]:
        depth = getattr(self._thread, "depth", 0)
        if depth:  # re-entrant: the outer frame already holds the flock
            self._thread.depth = depth + 1
            try:
                yield
            finally:
                self._thread.depth -= 1
            return
        self._ensure_dir(self.path)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            round_deadline = self.deadline()
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    now = time.monotonic()
                    if round_deadline is not None and now >= round_deadline:
                        raise StoreUnavailable(
                            f"{self.path}/.lock: round deadline passed while waiting"
                        ) from None
                    if now >= deadline:
                        raise LockTimeout(f"{self.path}/.lock held by another process") from None
                    time.sleep(0.01)
            self._thread.depth = 1
            try:
                yield
            finally:
                self._thread.depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def change_token(self) -> str:
        # each atomic write makes a new inode, so (name, inode, mtime, size) changes even
        # when two writes fall into the same mtime tick
        sig = []
        for d in (self.path, self.path / "lrm_status"):
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue
            for e in entries:
                if e.name.startswith(".") or not e.is_file():
                    continue
                st = e.stat()
                sig.append(f"{d.name}/{e.name}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}")
        return hashlib.sha1("\n".join(sorted(sig)).encode()).hexdigest()

    def wait_for_change(self, token: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            now = self.change_token()
            if now != token or time.monotonic() >= deadline:
                return now
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    def quorate(self) -> bool:
        return True  # one machine: always its own majority

    # -- one machine -------------------------------------------------------------------------
    def claim_node(self, node: str) -> None:
        """Record that ``node``'s daemons run on this machine (see :meth:`check_local`)."""
        hacfg.parse_node_name(node)
        name = f"nodes/{node}"
        raw = self._get(name)
        try:
            known = json.loads(raw) if raw else {}
        except ValueError:
            known = {}
        if known.get("machine_id") != proc.machine_id():
            rec = {"machine_id": proc.machine_id(), "since": int(self.clock())}
            self._put(name, json.dumps(rec).encode())

    def configured_nodes(self) -> set[str]:
        """Every node the configuration and the status name."""
        nodes = set(self._list("lrm_status"))
        try:
            nodes.update(self._read_json(MANAGER_STATUS).get("node_status") or {})
        except (ValueError, AttributeError):
            pass
        try:
            for conf in self.read_resources().values():
                if conf.get("node"):
                    nodes.add(conf["node"])
        except HafenceError:
            pass
        try:
            for group in self.read_groups().values():
                nodes.update(group.get("nodes") or {})
        except HafenceError:
            pass
        return nodes

    def check_local(self) -> None:
        """Refuse a store whose configured nodes did not all run on this machine.

        Raises :class:`NotLocal` naming the nodes and pointing at etcd.
        """
        here = proc.machine_id()
        foreign, unseen = [], []
        for node in sorted(self.configured_nodes()):
            try:
                raw = self._get(f"nodes/{node}")
                rec = json.loads(raw) if raw else {}
            except (ValueError, OSError):
                rec = {}
            if not rec.get("machine_id"):
                unseen.append(node)
            elif rec["machine_id"] != here:
                foreign.append(node)
        if foreign or unseen:
            names = ", ".join(sorted(foreign + unseen))
            raise NotLocal(
                f"embedded store {self.path} names node(s) {names} whose "
                "daemons never ran on this machine: the embedded store serves one machine "
                "only (several machines with their own directory would each form a "
                "cluster of their own). For a cluster of machines use etcd "
                "(--store etcd://HOST:2379[,HOST:2379...]/CLUSTER); if these nodes do run "
                "here, start their daemons too or pass --single-machine.",
                foreign,
                unseen,
            )

    # -- leases ------------------------------------------------------------------------------
    def _lease(self, name: str) -> dict | None:
        raw = self._get(f"leases/{name}")
        return orjson.loads(raw) if raw else None

    def _set_lease(self, name: str, owner: str, expires: float, cur: dict | None) -> None:
        # a renewal keeps the incarnation that took the lease (a node's CRM and LRM share
        # its membership lease)
        held = cur is not None and cur["owner"] == owner and cur["expires"] > self.clock()
        inc = cur.get("incarnation") if held and cur else None
        rec = {"owner": owner, "expires": expires, "incarnation": inc or incarnation(owner)}
        self._put(f"leases/{name}", json.dumps(rec).encode())

    def acquire_lease(self, name: str, owner: str, ttl: float, *, keep: bool = True) -> bool:
        with self.locked():
            now = self.clock()
            cur = self._lease(name)
            if cur and cur["owner"] != owner and cur["expires"] > now:
                return False
            self._set_lease(name, owner, now + ttl, cur)
            return True

    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        with self.locked():
            now = self.clock()
            cur = self._lease(name)
            # An expired lease is lost even if nobody took it yet: the holder's watchdog may
            # already have fired, so it must acquire again rather than carry on.
            if not cur or cur["owner"] != owner or cur["expires"] <= now:
                return False
            self._set_lease(name, owner, now + ttl, cur)
            return True

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
        with self.locked():
            now = self.clock()
            cur = self._lease(name)
            if cur and cur["expires"] > now and cur["owner"] != owner:
                if cur["owner"] != from_owner:
                    return False
                if incarnation is not None and cur.get("incarnation") != incarnation:
                    return False
            self._set_lease(name, owner, now + ttl, cur)
            return True

    def lease_holder(self, name: str) -> dict[str, str] | None:
        info = self.lease_info(name)
        return {"owner": info["owner"], "incarnation": info["incarnation"]} if info else None

    def lease_info(self, name: str) -> dict[str, Any] | None:
        cur = self._lease(name)
        now = self.clock()
        if cur and cur["expires"] > now:
            inc = cur.get("incarnation") or ""
            return {"owner": cur["owner"], "incarnation": inc, "expires_in": cur["expires"] - now}
        return None

    def write_manager_status_as(self, owner: str, status: dict[str, Any]) -> bool:
        with self.locked():
            if self.lease_owner(MANAGER_LOCK) != owner:
                return False
            self.write_manager_status(status)
            return True

    def release_lease(self, name: str, owner: str) -> bool:
        with self.locked():
            cur = self._lease(name)
            if not cur or cur["owner"] != owner:
                return False
            self._delete(f"leases/{name}")
            return True

    def lease_owner(self, name: str) -> str | None:
        cur = self._lease(name)
        if cur and cur["expires"] > self.clock():
            return cur["owner"]
        return None
