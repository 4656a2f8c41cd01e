"""etcd must not grow without bound: a round that changes nothing writes nothing, the
manager status of a large cluster fits etcd's request limit, and a full etcd is a clear
error."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from hafence.cli.ha_manager import cli as ha_cli
from hafence.ha.realenv import node_alive_lease
from hafence.store import Store, StoreFull, StoreUnavailable, open_store
from hafence.store.base import encode_json
from hafence.store.etcd import BUCKETS, CHUNKS, EtcdStore
from tests.peers import etcd as peer


def _status(n: int, ts: int, state: str = "started") -> dict:
    services = {
        f"vm:{100 + i}": {"node": "node1", "state": state, "uid": f"u{i}"} for i in range(n)
    }
    return {"master_node": "node1", "node_status": {"node1": "online"},
            "service_status": services, "timestamp": ts}  # fmt: skip


def _round(s: Store, ts: int, state: str = "started") -> None:
    """What a master and an LRM write in one round (only the timestamps move)."""
    assert s.acquire_lease(node_alive_lease("node1"), "node1", 30)
    assert s.acquire_lease("ha_manager_lock", "node1", 60)
    s.read_manager_status()
    s.take_crm_commands()
    s.write_manager_status(_status(3, ts, state))
    s.write_lrm_status("node1", {"state": "active", "results": {}, "timestamp": ts})


def test_rounds_that_change_nothing_write_nothing(store: Store) -> None:
    _round(store, 1000)
    token = store.change_token()
    for ts in range(1001, 1006):
        _round(store, ts)
    assert store.change_token() == token
    assert store.read_manager_status()["timestamp"] == 1000  # only the timestamp moved
    _round(store, 1006, state="stopped")  # a real change is written at once
    assert store.change_token() != token
    assert store.read_manager_status()["service_status"]["vm:100"]["state"] == "stopped"
    assert store.read_manager_status()["timestamp"] == 1006


def test_timestamp_only_change_is_written_after_the_refresh_period(store: Store) -> None:
    store.write_lrm_status("node1", {"state": "active", "timestamp": 1000})
    store.write_lrm_status("node1", {"state": "active", "timestamp": 1000 + 59})
    assert store.read_lrm_status("node1")["timestamp"] == 1000
    store.write_lrm_status("node1", {"state": "active", "timestamp": 1000 + 60})
    assert store.read_lrm_status("node1")["timestamp"] == 1060


def test_an_unchanged_write_over_someone_elses_change_is_not_skipped(spec: str) -> None:
    a, b = open_store(spec), open_store(spec)
    try:
        a.write_manager_status(_status(2, 1, "started"))
        b.write_manager_status(_status(2, 2, "stopped"))  # another master meanwhile
        a.write_manager_status(_status(2, 3, "started"))  # same as a last wrote
        assert b.read_manager_status()["service_status"]["vm:100"]["state"] == "started"
        a.write_text("crm_commands", "")
        b.write_text("crm_commands", "stop vm:100 0\n")
        a.write_text("crm_commands", "")
        assert b.read_crm_commands() == []
    finally:
        a.close()
        b.close()


def test_ha_manager_status_reads_liveness_from_the_leases(store: Store, spec: str) -> None:
    """The stored timestamps may be old now: a master or node holding its lease is alive."""
    old = int(time.time()) - 600
    store.write_manager_status({**_status(1, old), "master_node": "node1"})
    store.write_lrm_status("node1", {"state": "active", "mode": "active", "timestamp": old})
    store.write_lrm_status("node2", {"state": "active", "mode": "active", "timestamp": old})
    assert store.acquire_lease("ha_manager_lock", "node1", 60)
    assert store.acquire_lease(node_alive_lease("node1"), "node1", 60)
    out = CliRunner().invoke(ha_cli, ["--store", spec, "status"]).output
    assert f"master node1 (active, {time.ctime(old)})" in out, out
    assert f"lrm node1 (active, {time.ctime(old)})" in out, out
    assert f"lrm node2 (old timestamp - dead?, {time.ctime(old)})" in out, out


# -- etcd specifics -----------------------------------------------------------------------------
def _revision(s: EtcdStore) -> int:
    return int(s.change_token())


@pytest.mark.peer("etcd")
def test_large_manager_status_is_chunked_below_the_request_limit(etcd_url: str) -> None:
    """12,000 services (~1.9 MB of status) on an etcd with the default 1.5 MiB limit: one
    value would be refused; chunks are not, and a change of one service rewrites one."""
    cluster = f"t{uuid.uuid4().hex[:8]}"
    s = EtcdStore(etcd_url, cluster)
    reader = EtcdStore(etcd_url, cluster)
    try:
        status = _status(12_000, 1)
        for sd in status["service_status"].values():
            sd["failed_nodes"] = ["node2", "node3"]
            sd["comment"] = "x" * 80
        with pytest.raises(StoreUnavailable, match=r"too large|larger than max"):  # one value
            s.write_text("whole_status", encode_json(status).decode())
        s.write_manager_status(status)
        assert reader.read_manager_status() == status
        before = _revision(s)
        status["service_status"]["vm:5000"]["state"] = "stopped"
        status["timestamp"] = 2
        s.write_manager_status(status)
        # one new chunk, the header, the replaced chunk deleted: three revisions
        assert _revision(s) - before == 3
        got = reader.read_manager_status()
        assert got["service_status"]["vm:5000"]["state"] == "stopped"
        assert got == status
        chunk_keys = reader._list(CHUNKS)
        assert 200 < len(chunk_keys) <= BUCKETS  # stale chunks were deleted
        assert all(len(reader._get(f"{CHUNKS}/{k}") or b"") < 64 * 1024 for k in chunk_keys)
    finally:
        s.close()
        reader.close()


@pytest.mark.peer("etcd")
def test_full_etcd_is_a_clear_error(tmp_path: Path) -> None:
    if not peer.available():
        pytest.skip("etcd binary not installed")
    with peer.etcd_cluster(tmp_path, extra_args=["--quota-backend-bytes=400000"]) as c:
        url = c.url("full")
        s = open_store(url)
        try:
            s.write_resources({})
            with pytest.raises(StoreFull) as exc:
                for i in range(200):
                    s.write_text(f"lrm_status/n{i}", "x" * 100_000)
            msg = str(exc.value)
            assert "database space exceeded" in msg and "docs/daemons.md" in msg
            assert isinstance(exc.value, StoreUnavailable)  # the daemon loop logs it per round
            assert s.read_resources() == {}  # reads still work
            r = CliRunner().invoke(ha_cli, ["--store", url, "add", "vm:100"])
            assert r.exit_code == 1 and "database space exceeded" in r.output, r.output
            assert "Traceback" not in r.output
        finally:
            s.close()
