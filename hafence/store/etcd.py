"""The etcd backend: the same Store on a real etcd v3 cluster, for multi-node setups.

It talks to etcd's v3 JSON gateway (``POST /v3/kv/range`` ...), served by etcd >= 3.4,
through :class:`~hafence.store.etcd_client.EtcdClient` (endpoints, deadlines, TLS,
authentication; why not ``etcd3gw`` is said there).

Keys live under ``/hafence/<cluster>/``: the same blob names as the embedded store
(``resources.cfg``, ``lrm_status/node1`` ...).

**Lease locks** are etcd leases: the key holds ``{"owner", "lease"}`` and is attached to
the lease, so etcd deletes it when the holder stops renewing; expiry is judged by etcd's
clock, not the caller's. Renewals go over a connection pool of their own with their own
bound, so a slow request (a big read, a watch) never delays them. A daemon also lets a
background thread renew its leases (every ttl/3), but only until the time the daemon
loop last granted (:meth:`EtcdStore.keep_leases_until`: its round start + interval +
store deadline, when the next round should have renewed them itself). Why this keeps
the self-fencing rule of :mod:`hafence.ha.timings` (a node resets before another can
take its lock): the loop sends a lock renewal at ``t`` and feeds the watchdog by
``t + store_deadline``; the node resets by that feed + ``watchdog_timeout`` +
``hw_timeout``, which the rule puts before ``t + lease_ttl``. The thread only renews
after ``t``, so it can only move the lock's end later than ``t + lease_ttl``: it never
makes a lock end before the node that held it reset, and the thread itself dies with
that node. And because it stops once the loop misses its round, a loop that is stuck
without a watchdog (disarmed, or an idle LRM) does not keep its leases alive forever.

**Read-modify-write lock** (``locked()``): the key ``.lock`` holds the holder's identity
(host, boot, PID namespace, PID, start time) and a token, attached to a lease of
``lock_ttl`` seconds (default 15). Writes inside the section are buffered and committed
at its end in one transaction that requires the lock key to still hold our token and
every key read in the section to still have the revision we read: a holder paused
longer than the lock's life (its lease expired, someone else wrote meanwhile) fails
with :class:`LockLost` and writes nothing. A holder that is known dead (same boot and
PID namespace, its PID gone or reused) is taken over at once instead of waiting for
its lease to run out.

**Manager status in chunks.** The manager status can exceed etcd's request limit (1.5
MiB by default) with a few thousand services. It is stored as a header
(``manager_status``: every field but ``service_status``, and a map of chunk digests) and
content-addressed chunks ``manager_status.d/<bucket>.<digest>`` (the services hashed
into :data:`BUCKETS` buckets). A write puts only chunks whose content changed (at most
:data:`TXN_BYTES` per transaction), then the header in one put, then deletes chunks no
longer referenced; a reader gets header and chunks in one range request, i.e. at one
revision, so it never sees a half-written status.

Quorum is "a linearizable read succeeds".
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import sha1
from typing import Any
from urllib.parse import urlsplit

from hafence.store import proc
from hafence.store.base import (
    MANAGER_LOCK,
    MANAGER_STATUS,
    LockLost,
    LockTimeout,
    Store,
    StoreUnavailable,
    encode_json,
    incarnation,
)
from hafence.store.etcd_client import EtcdClient, EtcdSettings

DEFAULT_CLUSTER = "hafence"
LOCK_TTL = 15  # a crashed ha-manager on another host holds the RMW lock at most this long
BUCKETS = 256  # manager status chunks: 30,000 services -> ~120 per chunk (~25 KiB)
CHUNKS = MANAGER_STATUS + ".d"
TXN_OPS = 100  # etcd's --max-txn-ops default is 128
TXN_BYTES = 1 << 20  # and --max-request-bytes 1.5 MiB
log = logging.getLogger("hafence.store")


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


def _prefix_end(key: str) -> str:
    """etcd's range_end for "every key starting with ``key``"."""
    raw = bytearray(key.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


def parse_etcd_url(url: str) -> tuple[list[str], str | None]:
    """``etcd://h1:2379,h2:2379/cluster`` or ``http://h:2379`` -> (endpoints, cluster)."""
    parts = urlsplit(url)
    scheme = {"etcd": "http", "etcds": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"invalid etcd URL '{url}' (expected etcd://HOST:PORT[/CLUSTER])")
    if "@" in parts.netloc:
        raise ValueError(
            "an etcd URL must not carry credentials (they would show in process lists and "
            "logs): give the user as ?user=NAME and the password in a file "
            "(?password_file=PATH) or the environment ($HAFENCE_ETCD_PASSWORD)"
        )
    endpoints = [f"{scheme}://{hp}" for hp in parts.netloc.split(",") if hp]
    cluster = parts.path.strip("/") or None
    return endpoints, cluster


def _bucket(sid: str) -> int:
    return zlib.crc32(sid.encode()) % BUCKETS


class EtcdStore(Store):
    """State in etcd below ``/hafence/<cluster>/``."""

    def __init__(
        self,
        endpoints: str | list[str],
        cluster: str = DEFAULT_CLUSTER,
        timeout: float | None = None,
        lock_ttl: int | None = None,
        settings: EtcdSettings | None = None,
    ) -> None:
        super().__init__()
        if isinstance(endpoints, str):
            endpoints, url_cluster = parse_etcd_url(endpoints)
            cluster = url_cluster or cluster
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        if not cluster or "/" in cluster:
            raise ValueError(f"invalid cluster name '{cluster}'")
        self.settings = settings or EtcdSettings()
        if timeout is not None:
            self.settings.read_timeout = timeout
        if lock_ttl is not None:
            self.settings.lock_ttl = lock_ttl
        self.endpoints = list(endpoints)
        self.cluster = cluster
        self.prefix = f"/hafence/{cluster}/"
        self.lock_ttl = self.settings.lock_ttl
        self.client = EtcdClient(self.endpoints, self.settings)
        self.keep_client = EtcdClient(self.endpoints, self.settings)  # leases: own pool
        self._section = threading.local()  # buffered writes of a locked() section
        self._chunk_keys: set[str] = set()  # manager status chunks known to exist
        self._keeper: _LeaseKeeper | None = None

    def __repr__(self) -> str:
        return f"EtcdStore({','.join(self.endpoints)!r}, cluster={self.cluster!r})"

    def location(self, name: str) -> str:
        return f"etcd:{self.prefix}{name}"

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        self.client.close()
        self.keep_client.close()

    def set_deadline(self, deadline: float | None) -> None:
        super().set_deadline(deadline)
        self.client.set_deadline(deadline)
        self.keep_client.set_deadline(deadline)

    # -- transport ---------------------------------------------------------------------------
    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.call(path, body)

    def _key(self, name: str) -> str:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid store entry name '{name}'")
        return self.prefix + name

    def _range(self, key: str) -> dict[str, Any] | None:
        kvs = self._call("/v3/kv/range", {"key": _b64(key)}).get("kvs") or []
        return kvs[0] if kvs else None

    def _txn(self, compare: list[Any], success: list[Any], failure: list[Any] | None = None) -> Any:
        body: dict[str, Any] = {"compare": compare, "success": success}
        if failure:
            body["failure"] = failure
        return self._call("/v3/kv/txn", body)

    # -- blobs -------------------------------------------------------------------------------
    def _read(self, name: str) -> tuple[bytes | None, Any]:
        sec = getattr(self._section, "s", None)
        if sec is not None and name in sec.writes:
            return sec.writes[name], None
        kv = self._range(self._key(name))
        data = _unb64(kv.get("value", "")) if kv else None
        rev = int(kv["mod_revision"]) if kv else 0
        if sec is not None:
            sec.reads.setdefault(name, rev)
        return data, rev

    def _write(self, name: str, data: bytes, unless: Any = None) -> Any:
        key = _b64(self._key(name))
        sec = getattr(self._section, "s", None)
        if sec is not None:
            sec.writes[name] = data
            return None
        put = {"request_put": {"key": key, "value": _b64(data)}}
        if unless is not None:
            # unchanged since we read or wrote it: a transaction that writes nothing
            cmp = [{"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": str(unless)}]
            out = self._txn(cmp, [], [put])
            return unless if out.get("succeeded") else int(out["header"]["revision"])
        out = self._call("/v3/kv/put", {"key": key, "value": _b64(data)})
        return int(out["header"]["revision"])

    def _delete(self, name: str) -> None:
        self._known.pop(name, None)
        sec = getattr(self._section, "s", None)
        if sec is not None:
            sec.writes[name] = None
            return
        self._call("/v3/kv/deleterange", {"key": _b64(self._key(name))})

    def _list(self, prefix: str) -> list[str]:
        base = self._key(prefix) + "/"
        body = {"key": _b64(base), "range_end": _prefix_end(base), "keys_only": True}
        kvs = self._call("/v3/kv/range", body).get("kvs") or []
        names = {_unb64(kv["key"]).decode()[len(base) :] for kv in kvs}
        sec = getattr(self._section, "s", None)
        if sec is not None:
            for full, data in sec.writes.items():
                if full.startswith(prefix + "/"):
                    rest = full[len(prefix) + 1 :]
                    (names.add if data is not None else names.discard)(rest)
        return sorted(n for n in names if n and "/" not in n)

    def quorate(self) -> bool:
        try:
            self._call("/v3/kv/range", {"key": _b64(self.prefix + ".quorum")})
        except StoreUnavailable:
            return False
        return True

    # -- manager status in chunks ------------------------------------------------------------
    def read_manager_status(self) -> dict[str, Any]:
        base = self.prefix + MANAGER_STATUS
        body = {"key": _b64(base), "range_end": _prefix_end(base)}
        kvs = self._call("/v3/kv/range", body).get("kvs") or []
        values = {_unb64(kv["key"]).decode()[len(self.prefix) :]: kv for kv in kvs}
        self._chunk_keys = {n for n in values if n.startswith(CHUNKS + "/")}
        head = values.get(MANAGER_STATUS)
        if head is None:
            self._known[MANAGER_STATUS] = (None, 0)
            return {}
        raw = _unb64(head.get("value", ""))
        self._known[MANAGER_STATUS] = (raw, int(head["mod_revision"]))
        status = json.loads(raw) if raw.strip() else {}
        if not isinstance(status, dict):
            return status
        self._status_seen[MANAGER_STATUS] = (status.get("timestamp"), raw)
        chunks = status.pop("service_status_chunks", None)
        if chunks is None:
            return status  # a status written whole (before chunks)
        services: dict[str, Any] = {}
        for bucket, digest in sorted(chunks.items()):
            kv = values.get(f"{CHUNKS}/{bucket}.{digest}")
            if kv is None:
                raise StoreUnavailable(
                    f"{self.location(MANAGER_STATUS)}: chunk {bucket}.{digest} is missing"
                )
            services.update(json.loads(_unb64(kv["value"])))
        status["service_status"] = services
        return status

    def write_manager_status(self, status: dict[str, Any]) -> None:
        self._write_ms(status, None)

    def write_manager_status_as(self, owner: str, status: dict[str, Any]) -> bool:
        """One transaction writes the header only while our manager-lock key is unchanged
        (its value names us and its lease; etcd deletes it when the lease ends). Chunks go
        first but are invisible until a header names them; stale ones are deleted under
        the same condition, so a deposed master never removes what the new one uses."""
        cur = self._lease_kv(MANAGER_LOCK)
        if cur is None or cur[0].get("owner") != owner:
            return False
        key = _b64(self._key(f"leases/{MANAGER_LOCK}"))
        guard = {"key": key, "target": "VALUE", "result": "EQUAL", "value": _b64(cur[1])}
        return self._write_ms(status, guard)

    def _write_ms(self, status: dict[str, Any], guard: dict[str, Any] | None) -> bool:
        buckets: dict[int, dict[str, Any]] = {}
        for sid, sd in (status.get("service_status") or {}).items():
            buckets.setdefault(_bucket(sid), {})[sid] = sd
        refs: dict[str, str] = {}
        puts: list[tuple[str, bytes]] = []
        for b, services in buckets.items():
            data = encode_json(services)
            digest = sha1(data).hexdigest()[:16]
            refs[f"{b:03d}"] = digest
            name = f"{CHUNKS}/{b:03d}.{digest}"
            if name not in self._chunk_keys:
                puts.append((name, data))
        self._put_many(puts)
        self._chunk_keys.update(n for n, _ in puts)
        head = {k: v for k, v in status.items() if k != "service_status"}
        if "service_status" in status:
            head["service_status_chunks"] = refs
        wanted = {f"{CHUNKS}/{b}.{d}" for b, d in refs.items()}
        stale = sorted(self._chunk_keys - wanted)
        if guard is None:
            self._put(MANAGER_STATUS, self._status_bytes(MANAGER_STATUS, head))
            if stale:
                self._delete_many(stale)
        else:
            seen = self._status_seen.get(MANAGER_STATUS)
            data = self._status_bytes(MANAGER_STATUS, head)
            if not self._put_guarded(data, stale, guard):
                self._status_seen.pop(MANAGER_STATUS, None)  # refused: we know nothing
                if seen is not None:
                    self._status_seen[MANAGER_STATUS] = seen
                return False
        self._chunk_keys -= set(stale)
        return True

    def _put_guarded(self, data: bytes, stale: list[str], guard: dict[str, Any]) -> bool:
        """Header ``data`` and the deletion of ``stale`` chunks, each transaction only while
        ``guard`` holds; a header still at the revision we know is not rewritten."""
        key = _b64(self._key(MANAGER_STATUS))
        dels = [{"request_delete_range": {"key": _b64(self._key(n))}} for n in stale]
        first, rest = dels[: TXN_OPS - 1], dels[TXN_OPS - 1 :]
        known = self._known.get(MANAGER_STATUS)
        put = {"request_put": {"key": key, "value": _b64(data)}}
        if known is not None and known[0] == data and known[1] is not None:
            same = {"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": str(known[1])}
            if self._txn([guard, same], first).get("succeeded"):
                ok, rev = True, known[1]
            else:
                out = self._txn([guard], [put, *first])
                ok, rev = bool(out.get("succeeded")), int(out["header"]["revision"])
        else:
            out = self._txn([guard], [put, *first])
            ok, rev = bool(out.get("succeeded")), int(out["header"]["revision"])
        if not ok:
            return False
        self._known[MANAGER_STATUS] = (data, rev)
        for i in range(0, len(rest), TXN_OPS):
            if not self._txn([guard], rest[i : i + TXN_OPS]).get("succeeded"):
                return True  # written; the leftovers are the next master's to clean
        return True

    def _put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Plain puts, as few transactions as etcd's request limits allow."""
        ops: list[Any] = []
        size = 0
        for name, data in items:
            if ops and (len(ops) >= TXN_OPS or size + len(data) > TXN_BYTES):
                self._txn([], ops)
                ops, size = [], 0
            ops.append({"request_put": {"key": _b64(self._key(name)), "value": _b64(data)}})
            size += len(data)
        if ops:
            self._txn([], ops)

    def _delete_many(self, names: list[str]) -> None:
        for i in range(0, len(names), TXN_OPS):
            keys = [_b64(self._key(n)) for n in names[i : i + TXN_OPS]]
            self._txn([], [{"request_delete_range": {"key": k}} for k in keys])

    def snapshot(self) -> dict[str, bytes | None]:
        snap = super().snapshot()
        ms = self.read_manager_status()
        snap[MANAGER_STATUS] = encode_json(ms) if ms else None
        return snap

    # -- change notification -----------------------------------------------------------------
    def change_token(self) -> str:
        out = self._call("/v3/kv/range", {"key": _b64(self.prefix + ".token")})
        return out["header"]["revision"]

    def wait_for_change(self, token: str, timeout: float) -> str:
        """An etcd watch from revision ``token + 1``: events already past are seen at once."""
        body = {
            "create_request": {
                "key": _b64(self.prefix),
                "range_end": _prefix_end(self.prefix),
                "start_revision": str(int(token) + 1),
            }
        }
        deadline = time.monotonic() + timeout
        errors = []
        for ep in self.client.order():
            for attempt in (0, 1):
                try:
                    return self._watch(ep, body, token, deadline)
                except _Canceled as exc:
                    if attempt == 0 and exc.auth and self.settings.user:
                        self.client.renew_token(ep)  # expired token: once more, renewed
                        continue
                    if not exc.auth:  # e.g. the history was compacted: assume a change
                        return self.change_token()
                    errors.append(f"{ep}: {exc}")
                except (OSError, ValueError, http.client.HTTPException, StoreUnavailable) as exc:
                    errors.append(f"{ep}: {exc}")
                break
        raise StoreUnavailable(f"etcd unreachable ({'; '.join(errors)})")

    def _watch(self, ep: str, body: dict[str, Any], token: str, deadline: float) -> str:
        """One watch stream on ``ep`` until an event or ``deadline``; the new token."""
        u = urlsplit(ep)
        left = max(0.01, deadline - time.monotonic())
        connect = min(self.settings.connect_timeout, left)
        if u.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                u.hostname or "", u.port, timeout=connect, context=self.client.ssl_context()
            )
        else:
            conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=connect)
        try:
            conn.request("POST", "/v3/watch", json.dumps(body).encode(), self.client.headers(ep))
            assert conn.sock is not None
            conn.sock.settimeout(min(self.settings.read_timeout, left))
            resp = conn.getresponse()
            if resp.status != 200:
                raise StoreUnavailable(f"HTTP {resp.status}")
            while (left := deadline - time.monotonic()) > 0:
                conn.sock.settimeout(left)  # the stream is open: wait only what is left
                try:
                    line = resp.readline()
                except TimeoutError:
                    return token  # connected and nothing happened: a timeout, not a failure
                if not line:
                    break
                result = json.loads(line).get("result", {})
                if result.get("canceled"):
                    raise _Canceled(str(result.get("cancel_reason") or "watch canceled"))
                if result.get("compact_revision") not in (None, "0"):
                    raise _Canceled("history compacted")
                for ev in result.get("events") or []:
                    name = _unb64(ev["kv"]["key"]).decode()[len(self.prefix) :]
                    if not name.startswith((".", "leases/")):
                        return ev["kv"]["mod_revision"]
            return token
        finally:
            conn.close()

    # -- etcd leases ---------------------------------------------------------------------------
    def _grant(self, ttl: float) -> str:
        return self._call("/v3/lease/grant", {"TTL": max(1, math.ceil(ttl))})["ID"]

    def _revoke(self, lease: str) -> None:
        try:
            self._call("/v3/lease/revoke", {"ID": lease})
        except StoreUnavailable:
            pass  # it expires by itself

    def _keepalive(self, lease: str) -> bool:
        out = self.keep_client.call("/v3/lease/keepalive", {"ID": lease})
        return int(out.get("result", {}).get("TTL", 0)) > 0

    def _create_with_lease(self, key: str, value: bytes, lease: str) -> tuple[bool, Any]:
        """Create ``key`` unless it exists; (created, the existing kv or None).

        A create that was applied but whose answer was lost (the call then went to another
        endpoint) reads as created: the existing value is ours.
        """
        cmp = [{"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}]
        put = {"request_put": {"key": _b64(key), "value": _b64(value), "lease": lease}}
        out = self._txn(cmp, [put], [{"request_range": {"key": _b64(key)}}])
        if out.get("succeeded"):
            return True, None
        kvs = out["responses"][0]["response_range"].get("kvs") or []
        kv = kvs[0] if kvs else None
        if kv is not None and _unb64(kv.get("value", "")) == value:
            return True, None
        return False, kv

    def _delete_if(self, key: str, value: bytes) -> bool:
        cmp = [{"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}]
        return bool(self._txn(cmp, [{"request_delete_range": {"key": _b64(key)}}]).get("succeeded"))

    # -- read-modify-write lock ----------------------------------------------------------------
    @contextmanager
    def locked(self, timeout: float = 10.0) -> Iterator[None]:
        sec = getattr(self._section, "s", None)
        if sec is not None:
            sec.depth += 1
            try:
                yield
            finally:
                sec.depth -= 1
            return
        key = self.prefix + ".lock"
        me = encode_json({"token": uuid.uuid4().hex, **proc.identity()})
        lease = self._grant(self.lock_ttl)
        try:
            if self._take_lock(key, me, lease, timeout):
                self._keepalive(lease)  # waited for it: the section gets the lock's whole life
            sec = _Section()
            self._section.s = sec
            try:
                yield
                self._section.s = None
                self._commit(key, me, sec)
            finally:
                self._section.s = None
                self._delete_if(key, me)
        finally:
            self._revoke(lease)

    def _take_lock(self, key: str, me: bytes, lease: str, timeout: float) -> bool:
        """Take the lock; True if that needed waiting."""
        deadline = time.monotonic() + timeout
        pause = 0.01
        waited = False
        while True:
            ok, holder = self._create_with_lease(key, me, lease)
            if ok:
                return waited
            if holder is not None and self._take_over_dead(key, holder, me, lease):
                return waited
            now = time.monotonic()
            round_deadline = self.deadline()
            if round_deadline is not None and now >= round_deadline:
                raise StoreUnavailable(f"etcd lock {key}: round deadline passed while waiting")
            if now >= deadline:
                raise LockTimeout(f"etcd lock {key} held by another process{_who(holder)}")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
            waited = True

    def _take_over_dead(self, key: str, holder: dict[str, Any], me: bytes, lease: str) -> bool:
        raw = _unb64(holder.get("value", ""))
        try:
            ident = json.loads(raw)
        except ValueError:
            return False
        if not isinstance(ident, dict) or not proc.is_gone(ident):
            return False
        cmp = [{"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(raw)}]
        put = {"request_put": {"key": _b64(key), "value": _b64(me), "lease": lease}}
        if not self._txn(cmp, [put]).get("succeeded"):
            return False
        log.info(
            "store lock %s: took over from dead process %s on %s",
            key, ident.get("pid"), ident.get("host"),
        )  # fmt: skip
        if holder.get("lease") not in (None, "0"):
            self._revoke(holder["lease"])
        return True

    def _commit(self, key: str, me: bytes, sec: _Section) -> None:
        """Write the section's buffered changes in one transaction, conditioned on the lock
        still being ours and every key read still at the revision read."""
        if not sec.writes:
            return
        cmp = [{"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(me)}]
        for name, rev in sec.reads.items():
            k = _b64(self._key(name))
            cmp.append({"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": str(rev)})
        ops: list[Any] = []
        for name, data in sec.writes.items():
            k = _b64(self._key(name))
            if data is None:
                ops.append({"request_delete_range": {"key": k}})
            else:
                ops.append({"request_put": {"key": k, "value": _b64(data)}})
        check = [{"request_range": {"key": _b64(self._key(n))}} for n in sec.writes]
        out = self._txn(cmp, ops, [{"request_range": {"key": _b64(key)}}, *check])
        if not out.get("succeeded"):
            got = [(r["response_range"].get("kvs") or [None])[0] for r in out["responses"]]
            lock_kv, written = got[0], got[1:]
            applied = (
                lock_kv is not None
                and _unb64(lock_kv.get("value", "")) == me
                and all(
                    (kv is None if data is None else kv is not None and _unb64(kv["value"]) == data)
                    for kv, data in zip(written, sec.writes.values(), strict=True)
                )
            )
            if not applied:  # not a retry of our own applied commit: someone came between
                raise LockLost(
                    f"etcd lock {key} expired while this process held it (lock life "
                    f"{self.lock_ttl}s; it was paused or too slow) and the state may have "
                    "changed since: nothing was written, run the command again"
                )
            rev = int(written[0]["mod_revision"]) if written and written[0] else None
        else:
            rev = int(out["header"]["revision"])
        for name, data in sec.writes.items():
            if data is None:
                self._known.pop(name, None)
            else:
                self._known[name] = (data, rev)

    # -- lease locks ---------------------------------------------------------------------------
    def _lease_kv(self, name: str) -> tuple[dict[str, Any], bytes] | None:
        kv = self._range(self._key(f"leases/{name}"))
        if not kv:
            return None
        raw = _unb64(kv.get("value", ""))
        return json.loads(raw), raw

    def keep_leases_until(self, until: float | None) -> None:
        if until is None:
            if self._keeper is not None:
                self._keeper.until = None
            return
        if self._keeper is None:
            self._keeper = _LeaseKeeper(self)
        self._keeper.until = until

    def _held(self, lease: str, ttl: float) -> None:
        if self._keeper is not None:
            self._keeper.hold(lease, ttl)

    def _dropped(self, lease: str) -> None:
        if self._keeper is not None:
            self._keeper.drop(lease)

    def acquire_lease(self, name: str, owner: str, ttl: float, *, keep: bool = True) -> bool:
        cur = self._lease_kv(name)
        if cur:
            held, _ = cur
            if held["owner"] != owner:
                return False
            if self._keepalive(held["lease"]):
                if keep:
                    self._held(held["lease"], ttl)
                return True
            self._dropped(held["lease"])
            # our own lease expired between the read and the keepalive: create it anew
        lease = self._grant(ttl)
        value = self._lease_value(owner, lease)
        if self._create_with_lease(self._key(f"leases/{name}"), value, lease)[0]:
            if keep:
                self._held(lease, ttl)
            return True
        self._revoke(lease)
        return False

    @staticmethod
    def _lease_value(owner: str, lease: str) -> bytes:
        return json.dumps(
            {"owner": owner, "lease": lease, "incarnation": incarnation(owner)}
        ).encode()

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
        """One transaction moves the key from ``from_owner``'s lease to a new one of ours
        (compared on its exact value, which names the lease and the incarnation, so
        nobody came between); the old lease is revoked after, when it no longer holds
        the key."""
        cur = self._lease_kv(name)
        if cur is None or cur[0]["owner"] == owner:
            return self.acquire_lease(name, owner, ttl, keep=keep)
        if cur[0]["owner"] != from_owner:
            return False
        if incarnation is not None and cur[0].get("incarnation") != incarnation:
            return False
        key = _b64(self._key(f"leases/{name}"))
        lease = self._grant(ttl)
        put = {"request_put": {"key": key, "value": _b64(self._lease_value(owner, lease)),
                               "lease": lease}}  # fmt: skip
        cmp = [{"key": key, "target": "VALUE", "result": "EQUAL", "value": _b64(cur[1])}]
        if not self._txn(cmp, [put]).get("succeeded"):
            self._revoke(lease)
            return False
        if keep:
            self._held(lease, ttl)
        self._revoke(cur[0]["lease"])
        return True

    def lease_holder(self, name: str) -> dict[str, str] | None:
        cur = self._lease_kv(name)
        if cur is None:
            return None
        return {"owner": cur[0]["owner"], "incarnation": cur[0].get("incarnation") or ""}

    def lease_info(self, name: str) -> dict[str, Any] | None:
        cur = self._lease_kv(name)
        if cur is None:
            return None
        ttl = int(self._call("/v3/lease/timetolive", {"ID": cur[0]["lease"]}).get("TTL", -1))
        if ttl < 0:  # expired: etcd deletes the key with it
            return None
        inc = cur[0].get("incarnation") or ""
        return {"owner": cur[0]["owner"], "incarnation": inc, "expires_in": float(ttl)}

    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        # etcd renews to the TTL granted at acquire time; ``ttl`` is accepted for the interface
        cur = self._lease_kv(name)
        if not cur or cur[0]["owner"] != owner:
            return False
        ok = self._keepalive(cur[0]["lease"])
        if not ok:
            self._dropped(cur[0]["lease"])
        return ok

    def release_lease(self, name: str, owner: str) -> bool:
        cur = self._lease_kv(name)
        if not cur or cur[0]["owner"] != owner:
            return False
        self._dropped(cur[0]["lease"])
        ok = self._delete_if(self._key(f"leases/{name}"), cur[1])
        self._revoke(cur[0]["lease"])
        return ok

    def lease_owner(self, name: str) -> str | None:
        cur = self._lease_kv(name)
        return cur[0]["owner"] if cur else None


class _Canceled(Exception):
    """etcd ended a watch (an expired auth token, compacted history)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.auth = "auth" in reason.lower()


class _Section:
    """Reads (name -> mod_revision) and buffered writes (name -> bytes, None = delete)."""

    def __init__(self) -> None:
        self.reads: dict[str, int] = {}
        self.writes: dict[str, bytes | None] = {}
        self.depth = 1


def _who(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return ""
    try:
        ident = json.loads(_unb64(holder.get("value", "")))
        return f" (pid {int(ident['pid'])} on {str(ident['host'])[:64]})"
    except (ValueError, KeyError, TypeError):
        return ""


class _LeaseKeeper:
    """Renews the leases a daemon holds every ttl/3, until the daemon loop's last grant.

    Runs on the store's keep-alive connection pool. A lease whose renewal says it expired
    is dropped: it stays lost until the loop acquires it again.
    """

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.until: float | None = None
        self._leases: dict[str, float] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hafence-lease-keeper", daemon=True)
        self._thread.start()

    def hold(self, lease: str, ttl: float) -> None:
        with self._mutex:
            self._leases[lease] = ttl

    def drop(self, lease: str) -> None:
        with self._mutex:
            self._leases.pop(lease, None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._mutex:
                leases = dict(self._leases)
            period = min([ttl / 3 for ttl in leases.values()] + [1.0])
            if self._stop.wait(max(0.2, period)):
                return
            until = self.until
            if until is None or time.monotonic() >= until:
                continue  # the daemon loop did not come round: let its leases run out
            for lease in leases:
                try:
                    if not self.store._keepalive(lease):
                        self.drop(lease)
                except StoreUnavailable as exc:
                    log.debug("lease keep-alive of %s failed: %s", lease, exc)
