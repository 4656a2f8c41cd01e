"""Resource types: ``dummy`` against real processes; ``systemd``/``vm``/``ct`` through fake
``systemctl``/``qm``/``pct`` scripts on PATH (systemd does not run in this container and
Proxmox is not installed: the seam is the process boundary, the command lines are real).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from hafence_resources import CtType, DummyType, SystemdType, VmType

from hafence.ha.resources import (
    RUNNING,
    STOPPED,
    UNKNOWN,
    ResourceError,
    ResourceType,
    load_resource_types,
    split_sid,
)
from hafence.plugins import PluginRegistry
from tests.daemons.fakecli import calls, put

# -- registry ------------------------------------------------------------------------


def test_plugin_registers_all_types_and_sid_validates() -> None:
    reg = PluginRegistry()
    types = reg.resource_types()
    assert {"vm", "ct", "systemd", "dummy"} <= set(types)
    assert reg.owner("hafence_resource_types", "dummy") == "resources"
    from hafence.ha.config import parse_sid

    assert parse_sid("dummy:web-1") == "dummy:web-1"
    assert parse_sid("systemd:nginx.service") == "systemd:nginx.service"


def test_load_resource_types_skips_a_broken_type(tmp_path: Path) -> None:
    class Broken(ResourceType):
        name = "broken"

        def __init__(self, *a: object, **k: object) -> None:
            raise RuntimeError("boom")

    class Plugin:
        from hafence.hookspecs import hookimpl

        @hookimpl
        def hafence_resource_types(self) -> list[type]:
            return [Broken, DummyType]

    reg = PluginRegistry(load_entry_points=False)
    reg.register(Plugin(), "p")
    types = load_resource_types("node1", tmp_path, registry=reg)
    assert list(types) == ["dummy"]


def test_split_sid() -> None:
    assert split_sid("vm:100") == ("vm", "100")
    assert split_sid("systemd:a:b") == ("systemd", "a:b")
    with pytest.raises(ValueError):
        split_sid("100")


def test_resource_error_reason_is_checked() -> None:
    with pytest.raises(ValueError):
        ResourceError("vm:1", "weird", "x")


# -- dummy: real processes --------------------------------------------------------------


@pytest.fixture
def dummies(tmp_path: Path):
    made: list[DummyType] = []

    def make(node: str) -> DummyType:
        d = DummyType(node, tmp_path / node)
        made.append(d)
        return d

    yield make
    for d in made:  # never leave a process behind
        for pidfile in (d._dir()).glob("*.pid") if d._dir().exists() else []:
            d.stop(pidfile.stem, 1)


def test_dummy_start_status_stop_real_process(dummies) -> None:
    d = dummies("node1")
    assert d.exists("web") and d.status("web") == STOPPED
    d.start("web")
    pid = d.pid("web")
    assert pid is not None and d.status("web") == RUNNING
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[0].split() == [b"hafence-dummy", b"dummy:web", b"node1"]
    d.start("web")  # idempotent: no second process
    assert d.pid("web") == pid
    d.stop("web", 5)
    assert d.status("web") == STOPPED and not d.pidfile("web").exists()
    assert not Path(f"/proc/{pid}").exists() or b"Z" in Path(f"/proc/{pid}/stat").read_bytes()
    d.stop("web", 5)  # stopping a stopped dummy is fine


def test_dummy_nodes_keep_separate_state(dummies) -> None:
    a, b = dummies("node1"), dummies("node2")
    a.start("db")
    assert a.status("db") == RUNNING and b.status("db") == STOPPED
    assert a.pidfile("db") != b.pidfile("db")


def test_dummy_killed_process_reads_stopped(dummies) -> None:
    d = dummies("node1")
    d.start("x")
    pid = d.pid("x")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert d.status("x") == STOPPED


def test_dummy_pid_reuse_is_not_mistaken(dummies) -> None:
    d = dummies("node1")
    other = subprocess.Popen(["sleep", "30"])
    try:
        d.pidfile("x").parent.mkdir(parents=True, exist_ok=True)
        d.pidfile("x").write_text(f"{other.pid}\n")  # a stale pidfile naming someone else
        assert d.status("x") == STOPPED
        d.stop("x", 1)
        assert other.poll() is None  # stop never kills a process that is not ours
    finally:
        other.kill()
        other.wait()


def test_dummy_stop_escalates_to_sigkill(dummies) -> None:
    d = dummies("node1")
    d.start("stubborn")
    pid = d.pid("stubborn")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    d.stop("stubborn", 0.2)
    assert d.status("stubborn") == STOPPED


def test_dummy_bad_name_is_a_config_error(dummies) -> None:
    with pytest.raises(ResourceError) as ei:
        dummies("node1").start("../etc")
    assert ei.value.reason == "config" and "dummy:../etc" in str(ei.value)


def test_dummy_migrate_not_supported(dummies) -> None:
    with pytest.raises(ResourceError) as ei:
        dummies("node1").migrate("x", "node2", True)
    assert ei.value.reason == "not_supported"


# -- systemd through a fake systemctl ---------------------------------------------------


def test_systemd_unavailable_without_systemd(monkeypatch: pytest.MonkeyPatch, fake_bin) -> None:
    monkeypatch.setenv("FAKE_SYSTEM_STATE", "offline")
    t = SystemdType("node1")
    assert "systemd is not running" in (t.available() or "")
    with pytest.raises(ResourceError) as ei:
        t.start("nginx.service")
    assert ei.value.reason == "unavailable"


def test_systemd_commands(fake_bin: Path) -> None:
    t = SystemdType("node1")
    assert t.available() is None
    assert t.status("nginx") == STOPPED
    t.start("nginx")
    assert t.status("nginx") == RUNNING
    assert t.status("nginx.service") == RUNNING  # the same unit
    log = calls(fake_bin)
    assert "systemctl start -- nginx.service" in log
    assert "systemctl show --property=LoadState --value -- nginx.service" in log
    t.stop("nginx", 5)
    assert "systemctl stop -- nginx.service" in calls(fake_bin)
    assert t.status("nginx") == STOPPED


def test_systemd_status_words(fake_bin: Path) -> None:
    t = SystemdType("node1")
    (fake_bin / "web.service").write_text("running")
    assert t.status("web.service") == RUNNING
    (fake_bin / "web.service").write_text("stopped")
    assert t.status("web.service") == STOPPED


def test_systemd_missing_unit_and_failure(fake_bin: Path) -> None:
    t = SystemdType("node1")
    (fake_bin / "missing").write_text("gone.service\n")
    assert not t.exists("gone.service")
    with pytest.raises(ResourceError) as ei:
        t.start("gone.service")
    assert ei.value.reason == "not_found"
    (fake_bin / "fail").write_text("bad.service\n")
    with pytest.raises(ResourceError) as ei:
        t.start("bad.service")
    assert ei.value.reason == "failed" and "something broke" in str(ei.value)


def test_systemd_refuses_option_like_names(fake_bin: Path) -> None:
    with pytest.raises(ResourceError) as ei:
        SystemdType("node1").start("--now")
    assert ei.value.reason == "config"


# -- vm / ct through fake qm / pct ------------------------------------------------------


def test_vm_unavailable_without_qm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    t = VmType("node1")
    assert "'qm' not found" in (t.available() or "")
    with pytest.raises(ResourceError) as ei:
        t.status("100")
    assert ei.value.reason == "unavailable" and "vm:100" in str(ei.value)


def test_vm_commands(fake_bin: Path) -> None:
    t = VmType("node1")
    assert t.available() is None and t.exists("100")
    assert t.status("100") == STOPPED
    t.start("100")
    assert t.status("100") == RUNNING
    t.stop("100", 30)
    assert t.status("100") == STOPPED
    t.migrate("100", "node2", online=True)
    log = calls(fake_bin)
    assert "qm start 100" in log
    assert "qm shutdown 100 --timeout 30 --forceStop 1" in log
    # as Proxmox's HA migrates: local disks along, local resources allowed
    assert "qm migrate 100 node2 --with-local-disks 1 --force 1 --online 1" in log


def test_vm_status_unknown_and_start_failure(fake_bin: Path) -> None:
    t = VmType("node1")
    (fake_bin / "101").write_text("paused")
    assert t.status("101") == UNKNOWN
    (fake_bin / "fail").write_text("102\n")
    with pytest.raises(ResourceError) as ei:
        t.start("102")
    assert ei.value.reason == "failed" and "qm start 102" in str(ei.value)
    (fake_bin / "missing").write_text("103\n")
    with pytest.raises(ResourceError) as ei:
        t.start("103")
    assert ei.value.reason == "not_found"


def test_a_container_is_always_stopped_and_relocated(fake_bin: Path) -> None:
    t = CtType("node1")
    for online in (True, False):  # a container never moves live (Proxmox's PVECT.pm)
        (fake_bin / "200").write_text("running")
        t.migrate("200", "node3", online=online)
    log = calls(fake_bin)
    assert log.count("pct migrate 200 node3") == 2 and "--restart" not in " ".join(log)
    first = log.index("pct shutdown 200 --timeout 60 --forceStop 1")
    assert first < log.index("pct migrate 200 node3")


def test_command_timeout_is_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    qm = bindir / "qm"
    qm.write_text("#!/bin/sh\nexec sleep 30\n")
    qm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    t = VmType("node1", command_timeout=0.3)
    with pytest.raises(ResourceError) as ei:
        t.start("100")
    assert ei.value.reason == "timeout"


def test_vm_offline_move_shuts_the_guest_down_first(fake_bin: Path) -> None:
    (fake_bin / "100").write_text("running")
    VmType("node1").migrate("100", "node2", online=False)
    log = calls(fake_bin)
    shutdown = log.index("qm shutdown 100 --timeout 60 --forceStop 1")
    assert shutdown < log.index("qm migrate 100 node2 --with-local-disks 1 --force 1")


def test_enabled_outside_ha(fake_bin: Path, tmp_path: Path) -> None:
    put(fake_bin, "enabled", "web.service", "100")
    assert SystemdType("node1").enabled_outside_ha("web") is True
    assert SystemdType("node1").enabled_outside_ha("db") is False
    assert VmType("node1").enabled_outside_ha("100") is True  # onboot: 1
    assert VmType("node1").enabled_outside_ha("101") is False
    assert DummyType("node1", tmp_path).enabled_outside_ha("x") is False
    assert ResourceType("node1").enabled_outside_ha("x") is None  # a type that cannot tell
