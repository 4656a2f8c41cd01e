"""Fence history: durable JSON lines, 0600, bounded, queryable by node."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from hafence.fence import FenceHistory, FenceRecord, default_history_path


def rec(node: str, ok: bool = True, **kw) -> FenceRecord:
    return FenceRecord(actor="nodeA", node=node, action="off", ok=ok, devices=["ipmi"], **kw)


def test_append_survives_restart_and_queries_by_node(tmp_path: Path) -> None:
    path = tmp_path / "state" / "fence-history.jsonl"
    h = FenceHistory(path)
    h.append(rec("node1", duration=1.5, level=1))
    h.append(rec("node2", ok=False, error_kind="unreachable", message="no answer"))
    h.append(rec("node1", ok=False, error_kind="still_on"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = FenceHistory(path)  # a new process would see the same
    assert [r.node for r in again.records()] == ["node1", "node2", "node1"]
    n1 = again.records("node1")
    assert [(r.ok, r.error_kind) for r in n1] == [(True, None), (False, "still_on")]
    assert again.last("node2").error_kind == "unreachable"
    assert again.last("node9") is None
    assert again.records(limit=1)[0].error_kind == "still_on"
    first = json.loads(path.read_text().splitlines()[0])
    assert first["actor"] == "nodeA" and first["level"] == 1 and first["duration"] == 1.5


def test_bounded_size_rotates_and_still_queries(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    h = FenceHistory(path, max_bytes=2000)
    for i in range(100):
        h.append(rec(f"node{i % 3}", attempt=i))
    assert path.stat().st_size <= 2000
    rotated = path.with_name("h.jsonl.1")
    assert rotated.stat().st_size <= 2000
    assert stat.S_IMODE(os.stat(rotated).st_mode) == 0o600
    attempts = [r.attempt for r in h.records()]
    assert attempts == sorted(attempts) and attempts[-1] == 99
    assert len(attempts) < 100  # the oldest were dropped


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    h = FenceHistory(path)
    h.append(rec("node1"))
    with open(path, "a") as fh:
        fh.write('{"actor": "x", "node": "nod')  # crash mid-write
    assert len(h.records()) == 1
    h.append(rec("node1", ok=False))
    assert [r.ok for r in h.records("node1")] == [True, False]  # the next record is whole


def test_default_path_from_state_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HAFENCE_STATE_DIR", str(tmp_path))
    assert default_history_path() == tmp_path / "fence-history.jsonl"
    assert FenceHistory().path == tmp_path / "fence-history.jsonl"
