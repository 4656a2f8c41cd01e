"""Fencing while the master runs: fence.cfg changes take effect at once, fence-ack.

A real RealEnv (embedded store) and the master's NodeStatus drive the fence of node1;
fence.cfg is edited under the running master.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hafence.ha.env import FENCE_FAILED, FENCE_NONE
from hafence.ha.nodestatus import NodeStatus
from hafence.ha.realenv import RealEnv, Timings
from hafence.store import EmbeddedStore

T = Timings(interval=1, lease_ttl=10, watchdog_timeout=5, fence_delay=2, node_timeout=5)
BROKEN = "device bmc1 ipmi ip=127.0.0.1 bogus=1\nconnect bmc1 node=node1\n"


def _master(tmp_path: Path, fence_cfg: str) -> tuple[RealEnv, NodeStatus, Path]:
    cfg = tmp_path / "fence.cfg"
    cfg.write_text(fence_cfg)
    env = RealEnv("node2", EmbeddedStore(tmp_path / "ha"), timings=T, fence_config=cfg)
    return env, NodeStatus(env, {"node1": "unknown", "node2": "online"}), cfg


def _rounds(ns: NodeStatus, n: int = 5) -> bool:
    return any(ns.fence_node("node1") for _ in range(n))


def test_removing_a_failing_nodes_entry_takes_effect_without_a_restart(
    tmp_path: Path, caplog: Any
) -> None:
    env, ns, cfg = _master(tmp_path, BROKEN)
    try:
        assert not _rounds(ns)
        assert env.fence_poll("node1") == FENCE_FAILED
        cfg.write_text("")  # the admin drops node1's (broken) hardware fencing
        assert _rounds(ns), "the master still uses the failed result of the old fence.cfg"
        assert env.fence_poll("node1") == FENCE_NONE
    finally:
        env.close()


# -- one fence.cfg for the whole cluster ---------------------------------------------------


def _crm(tmp_path: Path, node: str, fence_config: str | Path | None) -> RealEnv:
    store = EmbeddedStore(tmp_path / "ha")
    env = RealEnv(node, store, timings=T, fence_config=fence_config)
    env.heartbeat()  # alive, and tells the others which fence.cfg it uses
    return env


def test_differing_fence_cfg_copies_fail_every_fence(tmp_path: Path, caplog: Any) -> None:
    (tmp_path / "pw").write_text("secret\n")
    good = BROKEN.replace("bogus=1", f"username=x password_file={tmp_path / 'pw'}")
    (tmp_path / "a.cfg").write_text(good)
    (tmp_path / "b.cfg").write_text("")  # node3 has no hardware fencing for node1
    node2 = _crm(tmp_path, "node2", tmp_path / "a.cfg")
    node3 = _crm(tmp_path, "node3", tmp_path / "b.cfg")
    try:
        with caplog.at_level(logging.ERROR, "hafence.ha"):
            assert node2.fence_start("node1") == FENCE_FAILED
            assert node3.fence_start("node1") == FENCE_FAILED  # not NONE: never on the lock alone
        assert "fence.cfg differs between nodes: node3 use(s) another one" in caplog.text
        assert "fence.cfg differs between nodes: node2 use(s) another one" in caplog.text
        (tmp_path / "b.cfg").write_text(good)  # one copy again
        node3.heartbeat()
        assert node2.fencer.has_chain("node1") is True  # usable again (None: refused)
    finally:
        node2.close()
        node3.close()


def test_the_clusters_fence_cfg_in_the_store(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hafence.cli.ha_manager import cli

    store_dir = tmp_path / "ha"
    cfg = tmp_path / "fence.cfg"
    cfg.write_text("device bmc1 ipmi ip=127.0.0.1 username=x password=s3cret\n"
                   "connect bmc1 node=node1\n")  # fmt: skip
    r = CliRunner().invoke(cli, ["--store", str(store_dir), "fence-config", "import", str(cfg)])
    assert r.exit_code == 1 and "fence.cfg:1: password" in r.output and "s3cret" not in r.output
    cfg.write_text(BROKEN)
    r = CliRunner().invoke(cli, ["--store", str(store_dir), "fence-config", "import", str(cfg)])
    assert r.exit_code == 1 and "bogus" in r.output  # checked before it is shared
    (tmp_path / "pw").write_text("secret\n")
    cfg.write_text(BROKEN.replace("bogus=1", f"username=x password_file={tmp_path / 'pw'}"))
    r = CliRunner().invoke(cli, ["--store", str(store_dir), "fence-config", "import", str(cfg)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["--store", str(store_dir), "fence-config", "show"])
    assert r.output == cfg.read_text()
    env = _crm(tmp_path, "node2", "store")
    try:
        assert env.fencer.has_chain("node1") is True  # read from the store
        EmbeddedStore(store_dir).write_text("fence.cfg", "")  # dropped for the cluster
        assert env.fence_start("node1") == FENCE_NONE  # at once, no restart
    finally:
        env.close()


def test_a_crm_with_its_own_file_is_refused_when_the_store_holds_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    EmbeddedStore(tmp_path / "ha").write_text("fence.cfg", "")  # an empty one: none
    (tmp_path / "f.cfg").write_text("")
    argv = [sys.executable, "-c", "from hafence.daemons import crm_main; crm_main()",
            "--node", "node1", "--store", str(tmp_path / "ha"), "--no-watchdog",
            "--fence-config", str(tmp_path / "f.cfg"), "--interval", "0.2",
            "--lease-ttl", "2", "--watchdog-timeout", "1", "--node-timeout", "1"]  # fmt: skip
    EmbeddedStore(tmp_path / "ha").write_text("fence.cfg", BROKEN.replace("bogus=1", "x=1"))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "the cluster keeps its fence.cfg in the store" in proc.stderr
