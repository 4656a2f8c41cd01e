"""The etcd backend: the same Store on a real etcd v3 cluster, for multi-node setups.

It talks to etcd's v3 JSON gateway (``POST /v3/kv/range`` ...), served by etcd >= 3.4,
with the standard library only: the Python gRPC clients (``etcd3``) are unmaintained and
break with protobuf >= 4, and one JSON POST per operation is all the store needs.

Keys live under ``/hafence/<cluster>/``: the same blob names as the embedded store
(``resources.cfg``, ``lrm_status/node1`` ...). Lease locks are etcd leases: the key holds
``{"owner", "lease"}`` and is attached to the lease, so etcd deletes it when the holder
stops renewing; expiry is judged by etcd's clock, not the caller's. ``locked()`` is the
same pattern on ``.lock``. Quorum is "a linearizable read succeeds".
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from hafence.store.base import LockTimeout, Store, StoreUnavailable

DEFAULT_CLUSTER = "hafence"
LOCK_TTL = 15  # a crashed ha-manager holds the RMW lock at most this long


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
    endpoints = [f"{scheme}://{hp}" for hp in parts.netloc.split(",") if hp]
    cluster = parts.path.strip("/") or None
    return endpoints, cluster


class EtcdStore(Store):
    """State in etcd below ``/hafence/<cluster>/``."""

    def __init__(
        self,
        endpoints: str | list[str],
        cluster: str = DEFAULT_CLUSTER,
        timeout: float = 5.0,
        lock_ttl: int = LOCK_TTL,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints, url_cluster = parse_etcd_url(endpoints)
            cluster = url_cluster or cluster
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        if not cluster or "/" in cluster:
            raise ValueError(f"invalid cluster name '{cluster}'")
        self.endpoints = list(endpoints)
        self.cluster = cluster
        self.prefix = f"/hafence/{cluster}/"
        self.timeout = timeout
        self.lock_ttl = lock_ttl
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"EtcdStore({','.join(self.endpoints)!r}, cluster={self.cluster!r})"

    def location(self, name: str) -> str:
        return f"etcd:{self.prefix}{name}"

    # -- transport ---------------------------------------------------------------------------
    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        last: Exception | None = None
        for ep in self.endpoints:
            req = urllib.request.Request(
                ep + path, data=data, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    out = json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:200]
                raise StoreUnavailable(f"etcd {ep}{path}: HTTP {exc.code}: {detail}") from None
            except (OSError, ValueError) as exc:
                last = exc
                continue
            if "error" in out and "result" not in out:
                raise StoreUnavailable(f"etcd {ep}{path}: {out['error']}")
            return out
        raise StoreUnavailable(f"etcd unreachable ({', '.join(self.endpoints)}): {last}")

    def _key(self, name: str) -> str:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid store entry name '{name}'")
        return self.prefix + name

    def _range(self, key: str) -> dict[str, Any] | None:
        kvs = self._call("/v3/kv/range", {"key": _b64(key)}).get("kvs") or []
        return kvs[0] if kvs else None

    # -- blobs -------------------------------------------------------------------------------
    def _get(self, name: str) -> bytes | None:
        kv = self._range(self._key(name))
        return _unb64(kv.get("value", "")) if kv else None

    def _put(self, name: str, data: bytes) -> None:
        self._call("/v3/kv/put", {"key": _b64(self._key(name)), "value": _b64(data)})

    def _delete(self, name: str) -> None:
        self._call("/v3/kv/deleterange", {"key": _b64(self._key(name))})

    def _list(self, prefix: str) -> list[str]:
        base = self._key(prefix) + "/"
        body = {"key": _b64(base), "range_end": _prefix_end(base), "keys_only": True}
        kvs = self._call("/v3/kv/range", body).get("kvs") or []
        names = (_unb64(kv["key"]).decode()[len(base) :] for kv in kvs)
        return [n for n in names if n and "/" not in n]

    def quorate(self) -> bool:
        try:
            self._call("/v3/kv/range", {"key": _b64(self.prefix + ".quorum")})
        except StoreUnavailable:
            return False
        return True

    def change_token(self) -> str:
        out = self._call("/v3/kv/range", {"key": _b64(self.prefix + ".token")})
        return out["header"]["revision"]

    def wait_for_change(self, token: str, timeout: float) -> str:
        """An etcd watch from revision ``token + 1``: events already past are seen at once."""
        start = int(token) + 1
        body = {
            "create_request": {
                "key": _b64(self.prefix),
                "range_end": _prefix_end(self.prefix),
                "start_revision": str(start),
            }
        }
        deadline = time.monotonic() + timeout
        for ep in self.endpoints:
            u = urlsplit(ep)
            cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
            conn = cls(u.hostname or "", u.port, timeout=min(self.timeout, max(0.01, timeout)))
            streaming = False
            try:
                conn.request("POST", "/v3/watch", json.dumps(body).encode())
                resp = conn.getresponse()
                streaming = True
                while (left := deadline - time.monotonic()) > 0:
                    assert conn.sock is not None
                    conn.sock.settimeout(left)  # the stream is open: wait only what is left
                    line = resp.readline()
                    if not line:
                        break
                    for ev in json.loads(line).get("result", {}).get("events") or []:
                        name = _unb64(ev["kv"]["key"]).decode()[len(self.prefix) :]
                        if not name.startswith((".", "leases/")):
                            return ev["kv"]["mod_revision"]
                return token
            except TimeoutError:
                if streaming:  # connected and nothing happened: a timeout, not a failure
                    return token
            except (OSError, ValueError, http.client.HTTPException):
                continue
            finally:
                conn.close()
        raise StoreUnavailable(f"etcd unreachable ({', '.join(self.endpoints)})")

    # -- etcd leases ---------------------------------------------------------------------------
    def _grant(self, ttl: float) -> str:
        return self._call("/v3/lease/grant", {"TTL": max(1, math.ceil(ttl))})["ID"]

    def _revoke(self, lease: str) -> None:
        try:
            self._call("/v3/lease/revoke", {"ID": lease})
        except StoreUnavailable:
            pass  # it expires by itself

    def _keepalive(self, lease: str) -> bool:
        out = self._call("/v3/lease/keepalive", {"ID": lease})
        return int(out.get("result", {}).get("TTL", 0)) > 0

    def _create_with_lease(self, key: str, value: bytes, lease: str) -> bool:
        body = {
            "compare": [{"key": _b64(key), "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value), "lease": lease}}],
        }
        return bool(self._call("/v3/kv/txn", body).get("succeeded"))

    def _delete_if(self, key: str, value: bytes) -> bool:
        body = {
            "compare": [{"key": _b64(key), "target": "VALUE", "value": _b64(value)}],
            "success": [{"request_delete_range": {"key": _b64(key)}}],
        }
        return bool(self._call("/v3/kv/txn", body).get("succeeded"))

    @contextmanager
    def locked(self, timeout: float = 10.0) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        key = self.prefix + ".lock"
        token = uuid.uuid4().hex.encode()
        lease = self._grant(self.lock_ttl)
        deadline = time.monotonic() + timeout
        try:
            while not self._create_with_lease(key, token, lease):
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"etcd lock {key} held by another process")
                time.sleep(0.02)
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
                self._delete_if(key, token)
        finally:
            self._revoke(lease)

    # -- lease locks ---------------------------------------------------------------------------
    def _lease_kv(self, name: str) -> tuple[dict[str, Any], bytes] | None:
        kv = self._range(self._key(f"leases/{name}"))
        if not kv:
            return None
        raw = _unb64(kv.get("value", ""))
        return json.loads(raw), raw

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        cur = self._lease_kv(name)
        if cur:
            held, _ = cur
            if held["owner"] != owner:
                return False
            if self._keepalive(held["lease"]):
                return True
            # our own lease expired between the read and the keepalive: create it anew
        lease = self._grant(ttl)
        value = json.dumps({"owner": owner, "lease": lease}).encode()
        if self._create_with_lease(self._key(f"leases/{name}"), value, lease):
            return True
        self._revoke(lease)
        return False

    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        # etcd renews to the TTL granted at acquire time; ``ttl`` is accepted for the interface
        cur = self._lease_kv(name)
        if not cur or cur[0]["owner"] != owner:
            return False
        return self._keepalive(cur[0]["lease"])

    def release_lease(self, name: str, owner: str) -> bool:
        cur = self._lease_kv(name)
        if not cur or cur[0]["owner"] != owner:
            return False
        ok = self._delete_if(self._key(f"leases/{name}"), cur[1])
        self._revoke(cur[0]["lease"])
        return ok

    def lease_owner(self, name: str) -> str | None:
        cur = self._lease_kv(name)
        return cur[0]["owner"] if cur else None
