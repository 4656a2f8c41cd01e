"""ocf:heartbeat:Dummy through the real daemons (tests/daemons' 3-node harness): the LRMs
run the agent, a migration stops it on one node before it starts on the other, and a
definition the agent's meta-data refuses never starts anywhere."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from hafence.store import EmbeddedStore
from tests.daemons.test_daemons_e2e import NODES, Cluster, cluster, wait_for

__all__ = ["cluster"]


def running_on(c: Cluster) -> list[str]:
    """Nodes where Dummy's own state file says ocf:web runs."""
    return [n for n in NODES if (c.state_dir(n) / "ocf" / "Dummy-web.state").exists()]


@pytest.fixture
def ocf_cluster(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    cfg = cluster.tmp / "ocf.cfg"
    cfg.write_text("ocf: web\n\tagent heartbeat:Dummy\n\tfake hello\n\n"
                   "ocf: broken\n\tagent heartbeat:Dummy\n\tcolour blue\n")  # fmt: skip
    monkeypatch.setenv("HAFENCE_OCF_CFG", str(cfg))  # the daemons inherit it
    store = EmbeddedStore(cluster.store_dir)
    cluster.start(cluster.fence_cfg(cluster.bmc.password))
    wait_for(lambda: set(store.lrm_nodes()) >= set(NODES), 30, "all LRMs to report")
    yield cluster


def test_dummy_starts_migrates_and_stops_through_the_lrm(ocf_cluster: Cluster) -> None:
    c = ocf_cluster
    seen: list[list[str]] = []
    stop = threading.Event()

    def watch() -> None:  # never on two nodes, checked on the agent's own state files
        while not stop.is_set():
            seen.append(running_on(c))
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        r = c.ha("add", "ocf:web", "--node", "node1")
        assert r.exit_code == 0, r.output
        wait_for(lambda: running_on(c) == ["node1"], 30, "ocf:web to start on node1")
        wait_for(lambda: "service ocf:web (node1, started)" in c.ha("status").output, 30,
                 "ha-manager status to show it started")  # fmt: skip
        assert c.ha("migrate", "ocf:web", "node2").exit_code == 0
        wait_for(lambda: running_on(c) == ["node2"], 30, "ocf:web to move to node2")
        assert c.ha("set", "ocf:web", "--state", "stopped").exit_code == 0
        wait_for(lambda: running_on(c) == [], 30, "ocf:web to stop")
    finally:
        stop.set()
        watcher.join()
    assert max(len(s) for s in seen) == 1, "ocf:web ran on two nodes at once"
    log = c.log()
    assert "starting service ocf:web" in log and "stopping service ocf:web" in log


def test_a_definition_the_agent_refuses_never_starts(ocf_cluster: Cluster) -> None:
    c = ocf_cluster
    cfg = c.tmp / "ocf.cfg"
    broken = cfg.read_text()
    # ha-manager add refuses it; so the definition breaks after the add, in an edit
    assert c.ha("add", "ocf:broken", "--node", "node1").exit_code != 0
    cfg.write_text(broken.replace("\tcolour blue\n", "\tfake x\n"))
    assert c.ha("add", "ocf:broken", "--node", "node1", "--state", "stopped").exit_code == 0
    cfg.write_text(broken)
    assert c.ha("set", "ocf:broken", "--state", "started").exit_code == 0
    wait_for(lambda: "colour" in c.log(), 30, "the LRM to report the bad parameter")
    line = next(ln for ln in c.log().splitlines() if "colour" in ln)
    # one log line naming the service, the file, the line and the field
    assert "ocf:broken" in line and "(config)" in line, line
    assert f"{c.tmp / 'ocf.cfg'}:7: colour: agent heartbeat:Dummy has no parameter" in line
    assert not any((c.state_dir(n) / "ocf" / "Dummy-broken.state").exists() for n in NODES)
