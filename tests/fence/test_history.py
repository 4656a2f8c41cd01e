"""Fence history: durable JSON lines, 0600, bounded, queryable by node."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hafence.errors import ConfigError
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


def test_bad_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    h = FenceHistory(path)
    h.append(rec("node1"))
    bad = [
        b'{"actor": "x", "node": "node1", "action": "off"}\n',  # 2: no "ok"
        b"\xff\xfe not UTF-8\n",  # 3
        b'{"actor": "x", "node": "node1", "action": "off", "ok": "yes"}\n',  # 4
        b'{"actor": "x", "node": "node1", "action": "off", "ok": true, "time": 1e999}\n',  # 5
        b'{"actor": "x", "node": "node1", "action": "off", "ok": true, "duration": NaN}\n',
        b'{"actor": "x", "node": "node1", "action": "off", "ok": true, "time": 1'
        + b"0" * 400
        + b"}\n",  # 7
        b"[" * 50_000 + b"\n",  # 8
        b"[1, 2]\n",  # 9
        b"\n",  # 10: blank, not an error
        b'{"actor": "x", "node": "node1", "action": "off", "ok": true, "level": 0}\n',  # 11
    ]
    with open(path, "ab") as fh:
        fh.write(b"".join(bad))
    h.append(rec("node1", ok=False))  # 12
    found = h.scan()
    assert [r.ok for r in found.records] == [True, False]
    assert [(e.file, e.line) for e in found.skipped] == [
        (str(path), n) for n in (2, 3, 4, 5, 6, 7, 8, 9, 11)
    ]
    why = [e.message for e in found.skipped]
    assert why[0] == "skipped: ok: missing" and "not UTF-8" in why[1]
    assert "ok: must be true or false" in why[2] and "time: must be a finite number" in why[3]
    assert "NaN is not a number" in why[4] and "time: must be 0.." in why[5]
    assert "nested too deeply" in why[6] and "not a JSON object" in why[7]
    assert "level: must be a positive integer" in why[8]
    assert h.records() == found.records  # records() logs the same lines and goes on


def test_unreadable_history_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        FenceHistory("/dev/zero").scan()  # would never end
    with pytest.raises(ConfigError, match="Is a directory"):
        FenceHistory(tmp_path).scan()
    with pytest.raises(ConfigError, match="not a usable file name"):
        FenceHistory("bad\x00name")


def test_appends_only_to_a_regular_file() -> None:
    before = os.stat("/dev/null").st_mode
    with pytest.raises(OSError, match="not a regular file"):
        FenceHistory("/dev/null").append(rec("node1"))
    assert os.stat("/dev/null").st_mode == before  # never chmod'ed to 0600


def test_an_overlong_line_is_skipped_without_reading_it_whole(tmp_path: Path) -> None:
    from hafence.fence.history import MAX_LINE

    path = tmp_path / "h.jsonl"
    path.write_bytes(b"x" * (3 * MAX_LINE) + b"\n")
    h = FenceHistory(path)
    h.append(rec("node1"))
    found = h.scan()
    assert len(found.records) == 1
    assert [e.message for e in found.skipped] == [f"skipped: longer than {MAX_LINE} bytes"]
