"""The embedded store: a directory like /etc/pve/ha, for one machine, tests and the simulator.

Layout: ``resources.cfg``, ``groups.cfg``, ``datacenter.cfg``, ``manager_status``,
``crm_commands``, ``lrm_status/<node>``, ``leases/<name>`` (JSON owner + expiry) and
``.lock`` (the fcntl lock for read-modify-write). Every write is atomic (temp file, fsync,
``os.replace``) and mode 0600; the directory is 0700.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hafence.store.atomic import write_atomic
from hafence.store.base import LockTimeout, Store

DEFAULT_DIR = "/etc/hafence/ha"
ENV_DIR = "HAFENCE_HA_DIR"


def default_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR)


class EmbeddedStore(Store):
    """State in a local directory; lease expiry judged by ``clock`` (virtual time allowed)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path) if path is not None else default_dir()
        self.clock = clock
        self.poll_interval = 0.05
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.path)!r})"

    def location(self, name: str) -> str:
        return str(self.path / name)

    def _file(self, name: str) -> Path:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid store entry name '{name}'")
        return self.path.joinpath(*parts)

    def _ensure_dir(self, d: Path) -> None:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _get(self, name: str) -> bytes | None:
        try:
            return self._file(name).read_bytes()
        except FileNotFoundError:
            return None

    def _put(self, name: str, data: bytes) -> None:
        f = self._file(name)
        self._ensure_dir(f.parent)
        write_atomic(f, data, 0o600)

    def _delete(self, name: str) -> None:
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
        depth = getattr(self._local, "depth", 0)
        if depth:  # re-entrant: the outer frame already holds the flock
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        self._ensure_dir(self.path)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"{self.path}/.lock held by another process") from None
                    time.sleep(0.01)
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
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

    # -- leases ------------------------------------------------------------------------------
    def _lease(self, name: str) -> dict | None:
        raw = self._get(f"leases/{name}")
        return json.loads(raw) if raw else None

    def _set_lease(self, name: str, owner: str, expires: float) -> None:
        self._put(f"leases/{name}", json.dumps({"owner": owner, "expires": expires}).encode())

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        with self.locked():
            now = self.clock()
            cur = self._lease(name)
            if cur and cur["owner"] != owner and cur["expires"] > now:
                return False
            self._set_lease(name, owner, now + ttl)
            return True

    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        with self.locked():
            now = self.clock()
            cur = self._lease(name)
            # An expired lease is lost even if nobody took it yet: the holder's watchdog may
            # already have fired, so it must acquire again rather than carry on.
            if not cur or cur["owner"] != owner or cur["expires"] <= now:
                return False
            self._set_lease(name, owner, now + ttl)
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
