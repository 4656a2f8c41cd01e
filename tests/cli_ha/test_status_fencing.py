"""``ha-manager status``: the fencing mode line (as Proxmox prints it) and each fence's
progress as the master records it in the manager status."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from hafence.cli.ha_manager import cli
from hafence.store import EmbeddedStore


def _status(tmp_path: Path, **ms: Any) -> list[str]:
    s = EmbeddedStore(tmp_path / "ha")
    s.write_manager_status({"master_node": "node2", "node_status": {"node1": "fence",
                            "node2": "online"}, "service_status": {}, **ms})  # fmt: skip
    r = CliRunner().invoke(cli, ["--store", str(tmp_path / "ha"), "status"])
    assert r.exit_code == 0, r.output
    return r.output.splitlines()


def test_fencing_mode_armed_standby_disarmed(tmp_path: Path) -> None:
    now = time.time()
    assert "fencing armed (CRM watchdog active)" in _status(tmp_path, timestamp=now)
    # the master's status is old and it holds no lock: no CRM watchdog is active
    assert "fencing standby (CRM watchdog standby)" in _status(tmp_path, timestamp=now - 600)
    out = _status(tmp_path, timestamp=now, disarm={"mode": "freeze", "state": "disarmed"})
    assert "fencing disarmed, resource mode: freeze (CRM watchdog released)" in out
    out = _status(tmp_path, timestamp=now, disarm={"mode": "ignore", "state": "disarming"})
    assert "fencing disarming, resource mode: ignore (CRM watchdog active)" in out


def test_fence_progress_per_node(tmp_path: Path) -> None:
    now = time.time()
    chain = [{"name": "bmc", "devices": [{"name": "bmc", "kind": "power"}]},
             {"name": "sw", "devices": [{"name": "sw:1", "kind": "fabric"},
                                        {"name": "sw:2", "kind": "fabric"}]}]  # fmt: skip
    fencing = {"node1": {"step": "failed, retrying", "state": "fencing", "levels": chain,
                         "attempt": 3, "error": "auth_failed", "since": now - 12}}  # fmt: skip
    out = _status(tmp_path, timestamp=now, fencing=fencing)
    line = next(ln for ln in out if ln.startswith("fence node1 "))
    assert line == (
        "fence node1 (failed, retrying, chain bmc (power) / sw:1 (fabric), sw:2 (fabric), "
        "attempt 3, last error auth_failed, since 12s)"
    )
    fencing = {"node1": {"step": "confirmed off, waiting for agent lock", "state": "confirmed",
                         "devices": ["sw:1", "sw:2"], "power": False, "since": now - 3,
                         "lock": "lease expiry (not a power device)"}}  # fmt: skip
    out = _status(tmp_path, timestamp=now, fencing=fencing)
    assert (
        "fence node1 (confirmed off, waiting for agent lock, by sw:1, sw:2 (fabric), "
        "agent lock: lease expiry (not a power device), since 3s)"
    ) in out
    # a hand-edited entry of the wrong shape never breaks the command
    assert "fence node1 (fencing)" in _status(tmp_path, timestamp=now, fencing={"node1": {}})
