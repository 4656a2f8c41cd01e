"""``vm:``/``ct:`` on Proxmox nodes: recovery moves the guest's config on the cluster
filesystem and drops a leftover lock; a container is stopped before it moves.

``qm``/``pct`` are the fake commands of tests.daemons.fakecli; the cluster filesystem is a
directory of the test (``HAFENCE_PVE_ROOT``), laid out as /etc/pve is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from hafence_resources.guests import CtType, VmType

from hafence.ha import state as st
from hafence.ha.agent import exec_resource_agent
from hafence.ha.manager import Manager
from hafence.ha.realenv import RealEnv, Timings, node_alive_lease
from hafence.ha.resources import ResourceError
from hafence.store import EmbeddedStore
from tests.daemons.fakecli import calls

T = Timings(interval=1, lease_ttl=10, watchdog_timeout=5, fence_delay=0, node_timeout=5)


@pytest.fixture
def pve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "pve"
    for node in ("node1", "node2", "node3"):
        (root / "nodes" / node / "qemu-server").mkdir(parents=True)
        (root / "nodes" / node / "lxc").mkdir(parents=True)
    monkeypatch.setenv("HAFENCE_PVE_ROOT", str(root))
    return root


def test_steal_moves_the_config_once(pve: Path) -> None:
    conf = pve / "nodes/node1/qemu-server/100.conf"
    conf.write_text("memory: 2048\n")
    vm = VmType("node2")
    vm.steal("100", "node1", "node2")
    assert not conf.exists()
    assert (pve / "nodes/node2/qemu-server/100.conf").read_text() == "memory: 2048\n"
    vm.steal("100", "node1", "node2")  # a master that died after the rename: nothing to do
    with pytest.raises(ResourceError, match=r"rename .* failed"):
        CtType("node2").steal("200", "node1", "node3")  # no such container config


def test_without_the_cluster_filesystem_a_guest_cannot_be_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAFENCE_PVE_ROOT", str(tmp_path / "nothing"))
    with pytest.raises(ResourceError, match="need Proxmox VE's cluster filesystem") as exc:
        VmType("node2").steal("100", "node1", "node2")
    assert exc.value.reason == "unavailable"


def test_remove_locks_drops_only_a_listed_lock_of_the_current_config(pve: Path) -> None:
    conf = pve / "nodes/node1/lxc/200.conf"
    conf.write_text("arch: amd64\nlock: backup\nmemory: 512\n\n[snap1]\nlock: snapshot\n")
    ct = CtType("node2")
    assert ct.remove_locks("200", ("snapshot",), "node1") is None
    assert ct.remove_locks("200", ("backup", "migrate"), "node1") == "backup"
    assert conf.read_text() == "arch: amd64\nmemory: 512\n\n[snap1]\nlock: snapshot\n"
    conf.write_text("lock: create\n")
    assert ct.remove_locks("200", ("backup",), "node1") is None  # a create is no leftover
    assert conf.read_text() == "lock: create\n"


def test_a_running_container_is_stopped_before_it_moves(
    tmp_path: Path, fake_bin: Path, pve: Path
) -> None:
    store = EmbeddedStore(tmp_path / "ha")
    store.write_text("resources.cfg", "ct: 200\n\tnode node1\n\tstate started\n")
    (fake_bin / "200").write_text("running\n")
    e = RealEnv("node1", store, role="lrm", timings=T)
    conf = e.read_service_config()["ct:200"]
    for cmd in ("migrate", "relocate"):  # a container never moves live
        (fake_bin / "200").write_text("running\n")
        (fake_bin / "calls").unlink(missing_ok=True)
        store.write_text("resources.cfg", "ct: 200\n\tnode node1\n\tstate started\n")
        got = exec_resource_agent(e, "ct:200", conf, cmd, {"target": "node2"})
        assert got == st.SUCCESS
        steps = [c.split()[:2] for c in calls(fake_bin) if c.split()[1] in ("shutdown",
                                                                            "migrate")]  # fmt: skip
        assert steps == [["pct", "shutdown"], ["pct", "migrate"]]
        assert "--restart" not in " ".join(calls(fake_bin))
        assert store.read_resources()["ct:200"]["node"] == "node2"
    e.close()


def test_recovery_moves_the_guest_config_and_drops_a_leftover_lock(
    tmp_path: Path, fake_bin: Path, pve: Path, caplog: Any
) -> None:
    store = EmbeddedStore(tmp_path / "ha")
    store.write_text("resources.cfg", "vm: 100\n\tnode node1\n\tstate started\n")
    store.write_manager_status({
        "master_node": "node2",
        "node_status": {"node1": "unknown", "node2": "online", "node3": "online"},
        "service_status": {"vm:100": {"state": "started", "node": "node1", "uid": "u1"}},
    })  # fmt: skip
    for n in ("node1", "node2", "node3"):
        store.write_lrm_status(n, {"state": "active", "mode": "active"})
    (pve / "nodes/node1/qemu-server/100.conf").write_text("memory: 1024\nlock: backup\n")
    crm = RealEnv("node2", store, role="crm", timings=T)
    for n in ("node2", "node3"):  # they are up; node1 is gone (no membership lease)
        assert store.acquire_lease(node_alive_lease(n), n, 60)
    assert crm.get_ha_manager_lock()  # the master's: only its holder writes the status
    m = Manager(crm, fence_delay=0)
    with caplog.at_level(logging.INFO, "hafence.ha"):
        for _ in range(3):
            m.manage()
    log = caplog.text
    assert "fencing: acknowledged - got agent lock for node 'node1'" in log
    removed = "removed leftover lock 'backup' from recovered service 'vm:100' to allow its start."
    assert removed in log
    target = m.ss["vm:100"]["node"]
    assert target in ("node2", "node3") and m.ss["vm:100"]["state"] == "started"
    moved = pve / "nodes" / target / "qemu-server/100.conf"
    assert moved.read_text() == "memory: 1024\n"
    assert not (pve / "nodes/node1/qemu-server/100.conf").exists()
    assert store.read_resources()["vm:100"]["node"] == target
    crm.close()
