"""A proxy in front of etcd's JSON gateway that delivers one manager status write late.

One daemon reaches etcd through it. Armed, it holds the first request that writes the
manager status (hafence's is a ``/v3/kv/txn`` that compares the writer's lock key and
puts the status): the request never reaches etcd, and from then on the daemon's
traffic is dropped (a partition: its calls time out). :meth:`HoldProxy.release`
delivers the held request late, as a slow network would after another master took
over, and returns etcd's answer.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
from typing import Any


class HoldProxy:
    def __init__(self, upstream: tuple[str, int], status_key: str) -> None:
        self.upstream = upstream
        self.marker = base64.b64encode(status_key.encode())
        self.armed = False
        self.partitioned = False
        self.held: tuple[str, dict[str, str], bytes] | None = None
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, cluster: str) -> str:
        return f"etcd://127.0.0.1:{self.port}/{cluster}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            self._socks.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        up: socket.socket | None = None
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                if self.partitioned:
                    continue  # dropped: the client waits for an answer until it gives up
                if self.armed and self._is_status_write(head, body):
                    self.held = (*_request(head), body)
                    self.partitioned = True
                    continue
                if up is None:
                    up = socket.create_connection(self.upstream)
                    self._socks.append(up)
                    threading.Thread(target=_pump, args=(up, client), daemon=True).start()
                up.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            return

    def _is_status_write(self, head: bytes, body: bytes) -> bool:
        """A request that puts the manager status (its header key), guarded or not."""
        path = head.split(b" ", 2)[1]
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return False
        key = self.marker.decode()
        if path == b"/v3/kv/put":
            return req.get("key") == key
        if path == b"/v3/kv/txn":
            puts = [op.get("request_put") or {} for op in req.get("success") or []]
            return any(put.get("key") == key for put in puts)
        return False

    def release(self) -> dict[str, Any]:
        """Deliver the held request to etcd now; etcd's answer."""
        assert self.held is not None, "no manager status write was held"
        path, headers, body = self.held
        conn = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            conn.request("POST", path, body, headers)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def close(self) -> None:
        self._srv.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


def _request(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() not in ("host", "content-length", "connection"):
            headers[name] = value.strip()
    return path, headers


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
