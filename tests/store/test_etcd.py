"""etcd backend specifics: real lease expiry, unreachable cluster, key layout."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
import time
import urllib.request
import uuid

import pytest

from hafence.store import StoreUnavailable
from hafence.store.etcd import EtcdStore, parse_etcd_url

pytestmark = pytest.mark.peer("etcd")


def _cluster() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def test_parse_etcd_url() -> None:
    assert parse_etcd_url("etcd://127.0.0.1:2379/prod") == (["http://127.0.0.1:2379"], "prod")
    assert parse_etcd_url("etcds://a:1,b:2") == (["https://a:1", "https://b:2"], None)
    assert parse_etcd_url("http://[::1]:2379") == (["http://[::1]:2379"], None)
    with pytest.raises(ValueError):
        parse_etcd_url("/var/lib/x")


def test_keys_live_under_the_cluster_prefix(etcd_url: str) -> None:
    name = _cluster()
    s = EtcdStore(etcd_url, name)
    s.write_text("resources.cfg", "vm: 100\n")
    key = base64.b64encode(f"/hafence/{name}/resources.cfg".encode()).decode()
    req = urllib.request.Request(etcd_url + "/v3/kv/range", data=json.dumps({"key": key}).encode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        kvs = json.loads(resp.read())["kvs"]
    assert base64.b64decode(kvs[0]["value"]) == b"vm: 100\n"
    assert EtcdStore(etcd_url, _cluster()).read_text("resources.cfg") == ""  # other cluster


def test_lease_expires_when_not_renewed(etcd_url: str) -> None:
    s = EtcdStore(etcd_url, _cluster())
    assert s.acquire_lease("ha_agent_node1_lock", "node1", 1)
    assert not s.acquire_lease("ha_agent_node1_lock", "node2", 1)
    deadline = time.monotonic() + 60  # etcd rounds tiny TTLs up; wait, do not time
    while s.lease_owner("ha_agent_node1_lock") is not None:
        assert time.monotonic() < deadline, "etcd never expired the lease"
        time.sleep(0.2)
    assert not s.renew_lease("ha_agent_node1_lock", "node1", 1)
    assert s.acquire_lease("ha_agent_node1_lock", "node2", 30)
    assert s.lease_owner("ha_agent_node1_lock") == "node2"


def test_unreachable_etcd_is_no_quorum() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        s = EtcdStore(f"http://127.0.0.1:{port}", "x", timeout=2)
        assert not s.quorate()
        with pytest.raises(StoreUnavailable, match="unreachable"):
            s.read_resources()
        with pytest.raises(StoreUnavailable):
            s.acquire_lease("ha_manager_lock", "node1", 5)


def test_second_endpoint_is_tried(etcd_url: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
        live = etcd_url.removeprefix("http://")
        s = EtcdStore(f"etcd://{dead},{live}/{_cluster()}")
        s.write_text("crm_commands", "stop vm:100 0\n")
        assert s.read_crm_commands() == ["stop vm:100 0"]


class _NoLeader(http.server.BaseHTTPRequestHandler):
    """A member that answers every call with etcd's "no leader" (HTTP 503)."""

    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}'
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_no_leader_answer_falls_through_and_connections_are_kept(etcd_url: str) -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoLeader)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        bad = f"127.0.0.1:{srv.server_address[1]}"
        live = etcd_url.removeprefix("http://")
        s = EtcdStore(f"etcd://{bad},{live}/{_cluster()}")
        s.write_text("crm_commands", "stop vm:100 0\n")
        assert _NoLeader.hits == 1  # tried once, then the live member stuck
        for _ in range(20):
            assert s.read_crm_commands() == ["stop vm:100 0"]
        assert _NoLeader.hits == 1
        assert s.client._pools[etcd_url].num_connections == 1  # one kept-alive connection
        s.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_watch_from_a_compacted_revision_reports_a_change(etcd_url: str) -> None:
    s = EtcdStore(etcd_url, _cluster())
    try:
        token = s.change_token()
        s.write_text("crm_commands", "stop vm:100 0\n")
        s.write_text("crm_commands", "stop vm:101 0\n")
        now = s.change_token()
        s._call("/v3/kv/compaction", {"revision": now, "physical": True})  # as auto-compaction
        assert s.wait_for_change(token, 30) != token
    finally:
        s.close()
