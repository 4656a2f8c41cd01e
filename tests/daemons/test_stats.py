"""Scheduler figures on real nodes: node size and load from /proc and cgroups, services'
maxima and usage from their resource types, carried in the LRM status to the CRM."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hafence_resources.dummy import DummyType
from hafence_resources.guests import CtType, VmType
from hafence_resources.systemd import SystemdType

from hafence import __version__
from hafence.ha.nodestats import NodeSampler, process_usage
from hafence.ha.realenv import RealEnv
from hafence.store import EmbeddedStore
from tests.daemons.fakecli import calls

GIB = 1024**3


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


MEMINFO = "MemTotal:       16384000 kB\nMemFree: 1000 kB\nMemAvailable:    8192000 kB\n"


def test_node_size_and_load_in_a_cgroup_v2(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "proc/self/cgroup": "0::/machine/node2\n",
        "proc/meminfo": MEMINFO,
        "proc/cpuinfo": "processor\t: 0\nprocessor\t: 1\nprocessor\t: 2\nprocessor\t: 3\n",
        "sys/fs/cgroup/machine/node2/cgroup.controllers": "cpu memory\n",
        "sys/fs/cgroup/machine/node2/memory.max": f"{4 * GIB}\n",
        "sys/fs/cgroup/machine/node2/memory.current": f"{GIB}\n",
        "sys/fs/cgroup/machine/node2/cpu.max": "150000 100000\n",
        "sys/fs/cgroup/machine/node2/cpu.stat": "usage_usec 10000000\nuser_usec 1\n",
    })  # fmt: skip
    now = [100.0]
    s = NodeSampler(root, clock=lambda: now[0])
    assert s.sample() == {"maxcpu": 2, "maxmem": 4 * GIB, "cpu": 0.0, "mem": GIB}
    (root / "sys/fs/cgroup/machine/node2/cpu.stat").write_text("usage_usec 13000000\n")
    now[0] = 102.0
    assert s.cpu() == 1.5  # 3 s of CPU in 2 s


def test_node_size_and_load_in_a_cgroup_v1_and_without_limits(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "proc/self/cgroup": "4:memory:/lxc/n1\n3:cpu,cpuacct:/lxc/n1\n0::/\n",
        "proc/meminfo": MEMINFO,
        "proc/cpuinfo": "processor\t: 0\nprocessor\t: 1\n",
        "sys/fs/cgroup/memory/lxc/n1/memory.limit_in_bytes": "9223372036854771712\n",
        "sys/fs/cgroup/cpu,cpuacct/lxc/n1/cpu.cfs_quota_us": "-1\n",
        "sys/fs/cgroup/cpu,cpuacct/lxc/n1/cpu.cfs_period_us": "100000\n",
        "proc/stat": "cpu  100 0 100 800 0 0 0 0 0 0\n",
    })  # fmt: skip
    s = NodeSampler(root)
    # no limit: the machine's figures
    assert (s.maxcpu(), s.maxmem(), s.mem()) == (2, 16384000 * 1024, 8192000 * 1024)
    (root / "sys/fs/cgroup/memory/lxc/n1/memory.limit_in_bytes").write_text(f"{2 * GIB}\n")
    (root / "sys/fs/cgroup/memory/lxc/n1/memory.usage_in_bytes").write_text("12345\n")
    (root / "sys/fs/cgroup/cpu,cpuacct/lxc/n1/cpu.cfs_quota_us").write_text("50000\n")
    assert (s.maxcpu(), s.maxmem(), s.mem()) == (1, 2 * GIB, 12345)


def test_this_machine() -> None:
    s = NodeSampler()
    first = s.sample()
    assert first["maxcpu"] >= 1 and first["maxmem"] > 0 and 0 < first["mem"] <= first["maxmem"]
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # a busy loop: some CPU is used
        pass
    assert s.cpu() > 0.0
    cpu, rss = process_usage(os.getpid()) or (0.0, 0)
    assert cpu > 0 and rss > 0


def test_dummy_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = DummyType("node1", tmp_path)
    assert d.static_stats("web") == {"maxcpu": 1.0, "maxmem": 64 * 1024**2}
    assert d.dynamic_stats("web") is None  # not running
    d.start("web")
    try:
        dyn = d.dynamic_stats("web")
        assert dyn is not None and dyn["cpu"] == 0.0 and dyn["mem"] > 0  # its sleep's RSS
        decl = tmp_path / "decl.json"
        decl.write_text(json.dumps({"web": {"maxcpu": 4, "maxmem": GIB, "cpu": 2.5}}))
        monkeypatch.setenv("HAFENCE_DUMMY_STATS", str(decl))
        assert d.static_stats("web") == {"maxcpu": 4.0, "maxmem": float(GIB)}
        dyn = d.dynamic_stats("web")
        assert dyn is not None and dyn["cpu"] == 2.5 and dyn["mem"] > 0
    finally:
        d.stop("web", 5)


def test_systemd_figures(fake_bin: Path) -> None:
    (fake_bin / "web.service.props").write_text(
        "CPUQuotaPerSecUSec=1s 500ms\nMemoryMax=1073741824\nActiveState=active\n"
        "CPUUsageNSec=2000000000\nMemoryCurrent=52428800\n"
    )
    t = SystemdType("node1")
    assert t.static_stats("web") == {"maxcpu": 1.5, "maxmem": float(GIB)}
    assert t.dynamic_stats("web") == {"cpu": 0.0, "mem": 52428800.0}  # first sample
    (fake_bin / "web.service.props").write_text(
        "CPUQuotaPerSecUSec=infinity\nMemoryMax=infinity\nActiveState=inactive\n"
    )
    assert t.static_stats("web") == {"maxcpu": 0.0, "maxmem": 0.0}  # unlimited
    assert t.dynamic_stats("web") is None
    assert any(c.startswith("systemctl show --property=CPUQuotaPerSecUSec") for c in
               calls(fake_bin))  # fmt: skip


def test_guest_figures(fake_bin: Path) -> None:
    (fake_bin / "100.conf").write_text("sockets: 2\ncores: 4\nmemory: 8192\n")
    (fake_bin / "100").write_text("running\n")
    (fake_bin / "100.verbose").write_text("cpu: 0.25\ncpus: 8\nmem: 2147483648\n")
    vm = VmType("node1")
    assert vm.static_stats("100") == {"maxcpu": 8.0, "maxmem": 8 * GIB}
    assert vm.dynamic_stats("100") == {"cpu": 2.0, "mem": 2.0 * GIB}
    (fake_bin / "100.conf").write_text("cores: 4\ncpulimit: 1.5\n")
    assert vm.static_stats("100") == {"maxcpu": 1.5, "maxmem": 512 * 1024**2}
    (fake_bin / "200.conf").write_text("memory: 1024\n")
    assert CtType("node1").static_stats("200") == {"maxcpu": 0.0, "maxmem": GIB}  # all CPUs
    assert CtType("node1").dynamic_stats("200") is None  # stopped


def test_the_lrm_status_carries_the_figures_to_the_crm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path / "ha")
    store.write_text("resources.cfg", "dummy: web\n\tnode node1\n\tstate started\n\n"
                     "dummy: db\n\tnode node2\n\tstate stopped\n")  # fmt: skip
    decl = tmp_path / "decl.json"
    decl.write_text(json.dumps({"web": {"maxcpu": 2, "maxmem": GIB},
                                "db": {"maxcpu": 1, "maxmem": 2 * GIB}}))  # fmt: skip
    monkeypatch.setenv("HAFENCE_DUMMY_STATS", str(decl))

    def lrm_env(node: str) -> RealEnv:
        return RealEnv(node, store, role="lrm", state_dir=tmp_path / node)

    envs = [lrm_env("node1"), lrm_env("node2")]
    for e in envs:  # the basic scheduler needs no figures
        assert e.lrm_status_extra() == {"version": __version__}
    store.write_datacenter({"crs": {"ha": "static"}})
    crm = RealEnv("node1", store, role="crm")
    for e in envs:
        e.cluster_state_update()
        e.write_lrm_status({"state": "active", "mode": "active", **e.lrm_status_extra()})
    crm.cluster_state_update()
    assert crm.crs_options() == {"ha": "static"}
    nodes = crm.get_static_node_stats()
    assert set(nodes) == {"node1", "node2"} and nodes["node1"]["maxmem"] > 0
    stats = crm.get_static_service_stats()
    assert stats["dummy:web"] == {"node": "node1", "state": "started", "running": True,
                                  "usage": {"maxcpu": 2.0, "maxmem": float(GIB)}}  # fmt: skip
    assert stats["dummy:db"]["usage"] == {"maxcpu": 1.0, "maxmem": 2.0 * GIB}
    dyn = crm.get_dynamic_node_stats()
    assert set(dyn["node2"]) == {"maxcpu", "maxmem", "cpu", "mem"}
    for e in (*envs, crm):
        e.close()
