"""HTTP transport to etcd's v3 JSON gateway: endpoints, timeouts, TLS, authentication.

Why our own client and not ``etcd3gw`` (which speaks the same gateway): etcd3gw 2.7 talks
to one host only, has one timeout for the whole client (not per call, no connect/read
split) and no user/password authentication; wrapping it would leave endpoint fail-over,
per-round deadlines and auth tokens to us anyway. The Python gRPC clients (``etcd3``) are
unmaintained and break with protobuf >= 4. So this module keeps the gateway code small and
puts the HTTP on ``urllib3`` (connection pools with keep-alive, separate connect and read
timeouts, TLS with a CA and client certificates).

Behaviour of :meth:`EtcdClient.call`:

- **sticky endpoint**: the endpoint that answered last is tried first; on a failure the
  others follow in order and the one that answers becomes the sticky one. A hung member
  (SIGSTOPped: the kernel still accepts TCP connections, nothing answers) therefore costs
  one read timeout once, not one per call.
- **time bounds**: ``connect_timeout`` (short: a dead host) and ``read_timeout`` per try;
  with a ``deadline`` (monotonic seconds, see :meth:`set_deadline`) each try gets at most
  its share of what is left (``left / endpoints still to try``), and a call after the
  deadline fails at once with :class:`StoreUnavailable`, before any network I/O.
- **fall-through** to the next endpoint on connection errors and timeouts, HTTP 5xx and
  etcd's "no leader" / "not leader" / "leader changed" / "request timed out" answers. A
  request the member may have applied before it failed is retried elsewhere, so every
  caller keeps its writes idempotent (puts, or transactions that read back their result).
- **authentication**: with ``user``, a token from ``/v3/auth/authenticate`` per endpoint
  (simple tokens are only known to the member that issued them), renewed once when etcd
  says it is invalid or stale. The password is held in memory only; it never reaches a
  log line, an exception text or ``repr``.
- errors that another endpoint cannot fix are raised at once: :class:`StoreFull` for
  etcd's space quota (``mvcc: database space exceeded``), :class:`StoreUnavailable` naming
  etcd's reason for other refusals (e.g. ``request is too large``, ``permission denied``).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3

from hafence.store.base import StoreFull, StoreUnavailable

# etcd answers that mean "this member cannot serve now, another one may"
_RETRY_ELSEWHERE = (
    "no leader",
    "not leader",
    "leader changed",
    "request timed out",
    "not capable",
    "too many requests",
    "server stopped",
    "raft: stopped",
)
_AUTH_RETRY = ("invalid auth token", "revision in header is old", "user name is empty")
NOSPACE = "database space exceeded"


@dataclass
class EtcdSettings:
    """How to reach etcd: everything but the endpoints and the cluster name.

    ``password`` is the secret itself (read from a file or the environment by the caller);
    it is excluded from ``repr``.
    """

    connect_timeout: float = 1.0
    read_timeout: float = 3.0
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    lock_ttl: int = 15

    def check(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("etcd client certificate and key must be given together")
        if self.password is not None and not self.user:
            raise ValueError("an etcd password needs a user")
        for name in ("connect_timeout", "read_timeout"):
            v = getattr(self, name)
            if not (v > 0 and v < float("inf")):
                raise ValueError(f"etcd {name.replace('_', ' ')} must be a positive number")
        if self.lock_ttl < 2:
            raise ValueError("etcd lock_ttl must be at least 2 seconds")


class _Deadline(threading.local):
    """Per thread: the daemon loop's round deadline binds the loop, not helper threads."""

    at: float | None = None


class EtcdClient:
    """One JSON POST per call to the first endpoint that answers (see the module doc)."""

    def __init__(self, endpoints: list[str], settings: EtcdSettings, *, pool_size: int = 2) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        settings.check()
        self.endpoints = list(endpoints)
        self.settings = settings
        self._sticky = 0
        self._pools: dict[str, urllib3.HTTPConnectionPool] = {}
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._deadline = _Deadline()
        self._pool_size = pool_size

    # -- deadline ------------------------------------------------------------------------------
    def set_deadline(self, deadline: float | None) -> None:
        """This thread's calls after ``deadline`` (``time.monotonic()``) fail fast."""
        self._deadline.at = deadline

    def _left(self) -> float | None:
        at = self._deadline.at
        return None if at is None else at - time.monotonic()

    # -- connections ---------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.settings.cacert)
        if self.settings.cert:
            ctx.load_cert_chain(self.settings.cert, self.settings.key)
        return ctx

    def _pool(self, ep: str) -> urllib3.HTTPConnectionPool:
        with self._lock:
            pool = self._pools.get(ep)
            if pool is None:
                u = urlsplit(ep)
                kw: dict[str, Any] = {"maxsize": self._pool_size, "block": False, "retries": False}
                if u.scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        u.hostname, u.port, ssl_context=self.ssl_context(), **kw
                    )
                else:
                    pool = urllib3.HTTPConnectionPool(u.hostname, u.port, **kw)
                self._pools[ep] = pool
            return pool

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for p in pools:
            p.close()

    def order(self) -> list[str]:
        """Endpoints in the order the next call tries them (the sticky one first)."""
        n = len(self.endpoints)
        return [self.endpoints[(self._sticky + i) % n] for i in range(n)]

    def headers(self, ep: str) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.settings.user:
            h["Authorization"] = self._token(ep)
        return h

    # -- auth ----------------------------------------------------------------------------------
    def renew_token(self, ep: str) -> None:
        """Authenticate on ``ep`` again (its token expired), if a user is set."""
        if self.settings.user:
            self._token(ep, renew=True)

    def _token(self, ep: str, renew: bool = False) -> str:
        if not renew and ep in self._tokens:
            return self._tokens[ep]
        body = {"name": self.settings.user, "password": self.settings.password or ""}
        out = self._post(ep, "/v3/auth/authenticate", body, auth=False)
        if "token" not in out:
            who = self.settings.user
            raise StoreUnavailable(f"etcd {ep}: authentication of user '{who}' failed")
        self._tokens[ep] = out["token"]
        return out["token"]

    # -- calls ---------------------------------------------------------------------------------
    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers; the decoded reply."""
        order = self.order()
        errors: list[str] = []
        for i, ep in enumerate(order):
            try:
                out = self._post(ep, path, body, tries_left=len(order) - i)
            except _TryElsewhere as exc:
                errors.append(f"{ep}: {exc}")
                continue
            if i:
                with self._lock:
                    self._sticky = self.endpoints.index(ep)
            return out
        raise StoreUnavailable(f"etcd unreachable ({'; '.join(errors)})")

    def _post(
        self,
        ep: str,
        path: str,
        body: dict[str, Any],
        *,
        tries_left: int = 1,
        auth: bool = True,
    ) -> dict[str, Any]:
        for attempt in (0, 1):
            left = self._left()
            if left is not None and left <= 0:
                raise StoreUnavailable(f"etcd {path}: round deadline passed, not sent")
            share = None if left is None else left / max(1, tries_left)
            s = self.settings
            timeout = urllib3.Timeout(
                connect=s.connect_timeout if share is None else min(s.connect_timeout, share),
                read=s.read_timeout if share is None else min(s.read_timeout, share),
            )
            headers = self.headers(ep) if auth else {"Content-Type": "application/json"}
            try:
                resp = self._pool(ep).urlopen(
                    "POST", path, body=json.dumps(body).encode(), headers=headers,
                    timeout=timeout, retries=False, redirect=False,
                )  # fmt: skip
            except urllib3.exceptions.HTTPError as exc:
                raise _TryElsewhere(_why(exc)) from None
            data = resp.data
            try:
                out = json.loads(data or b"{}")
            except ValueError:
                raise _TryElsewhere(f"HTTP {resp.status}: not JSON") from None
            if resp.status == 200 and not ("error" in out and "result" not in out):
                return out
            msg = str(out.get("message") or out.get("error") or f"HTTP {resp.status}")
            low = msg.lower()
            if NOSPACE in low:
                raise StoreFull(
                    f"etcd {ep}: {msg} - the cluster refuses every write until it is "
                    "compacted, defragmented and its NOSPACE alarm disarmed (see "
                    "docs/daemons.md, 'etcd space'); HA cannot record decisions meanwhile"
                )
            if auth and self.settings.user and attempt == 0 and any(a in low for a in _AUTH_RETRY):
                self._token(ep, renew=True)
                continue
            if resp.status >= 500 or any(r in low for r in _RETRY_ELSEWHERE):
                raise _TryElsewhere(msg)
            raise StoreUnavailable(f"etcd {ep}{path}: {msg}")
        raise StoreUnavailable(f"etcd {ep}{path}: authentication keeps failing")


class _TryElsewhere(Exception):
    """This endpoint failed in a way another endpoint may not."""


def _why(exc: Exception) -> str:
    """A short reason without urllib3's pool repr."""
    inner = getattr(exc, "reason", None) or exc
    text = str(inner)
    if "timed out" in text.lower():
        return "timed out"
    return text.split(": ", 1)[-1][:200]
