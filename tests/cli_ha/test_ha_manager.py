"""``ha-manager`` through click's CliRunner (and a few runs of the installed script)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hafence.cli.ha_manager import cli
from hafence.store import EmbeddedStore, open_store


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A store with three known nodes, a group, two services; vm:102 is in error state."""
    d = tmp_path / "ha"
    s = EmbeddedStore(d)
    now = time.time()
    s.write_groups({"g1": {"nodes": {"node1": 2, "node2": 0}, "restricted": False,
                           "nofailback": False, "comment": None}})  # fmt: skip
    s.write_text(
        "resources.cfg",
        "vm: 100\n\tnode node1\n\tstate started\n\tgroup g1\n\n"
        "vm: 102\n\tnode node2\n\tstate started\n",
    )
    s.write_manager_status(
        {
            "master_node": "node1",
            "node_status": {"node1": "online", "node2": "online", "node3": "online"},
            "service_status": {
                "vm:100": {"node": "node1", "state": "started", "uid": "a"},
                "vm:102": {"node": "node2", "state": "error", "uid": "b"},
            },
            "timestamp": now,
        }
    )
    s.write_lrm_status("node1", {"state": "active", "mode": "active", "timestamp": now})
    s.write_lrm_status(
        "node2", {"state": "wait_for_agent_lock", "mode": "active", "timestamp": now}
    )
    s.write_lrm_status("node3", {"state": "active", "mode": "maintenance", "timestamp": now - 600})
    with s.locked():  # a used store has its (empty) lock file; it is not state
        pass
    return d


def run(store_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--store", str(store_dir), *args])


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_status_output(store_dir: Path) -> None:
    r = run(store_dir, "status")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "quorum OK"
    assert lines[1].startswith("master node1 (active, ")
    assert lines[2] == "fencing armed (CRM watchdog active)"  # as Proxmox prints it
    assert lines[3].startswith("lrm node1 (active, ")
    assert lines[4].startswith("lrm node2 (idle, ")
    assert lines[5].startswith("lrm node3 (maintenance mode, ")  # stale, but in maintenance
    assert lines[6:] == ["service vm:100 (node1, started)", "service vm:102 (node2, error)"]
    ts = EmbeddedStore(store_dir).read_manager_status()["timestamp"]
    assert lines[1] == f"master node1 (active, {time.ctime(ts)})"


def test_status_dead_lrm_and_queued_service(store_dir: Path) -> None:
    s = EmbeddedStore(store_dir)
    s.write_lrm_status("node3", {"state": "active", "mode": "active", "timestamp": 1})
    ms = s.read_manager_status()
    ms["node_status"]["node4"] = "unknown"  # the CRM knows it, its LRM never wrote a status
    s.write_manager_status(ms)
    assert run(store_dir, "add", "ct:200", "--node", "node3").exit_code == 0
    out = run(store_dir, "status").output.splitlines()
    assert f"lrm node3 (old timestamp - dead?, {time.ctime(1)})" in out
    assert "lrm node4 (unable to read lrm status)" in out
    assert "service ct:200 (node3, queued)" in out


def test_status_verbose_dumps_full_state(store_dir: Path) -> None:
    r = run(store_dir, "status", "--verbose")
    assert r.exit_code == 0
    head, _, tail = r.output.partition("full cluster state:\n")
    assert "service vm:100" in head
    full = json.loads(tail)
    assert full["manager_status"]["master_node"] == "node1"
    assert full["lrm_status"]["node2"]["state"] == "wait_for_agent_lock"


def test_add_set_remove_and_config(store_dir: Path) -> None:
    assert run(store_dir, "add", "101", "--node", "node2", "--max_restart", "3").exit_code == 0
    r = run(store_dir, "add", "ct:103", "--node", "node3", "--state", "stopped",
            "--group", "g1", "--comment", "db server")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run(store_dir, "set", "vm:101", "--state", "disabled", "--max_relocate", "2")
    assert r.exit_code == 0, r.output
    r = run(store_dir, "config")
    assert r.exit_code == 0
    assert r.output == (
        "ct:103\n\tcomment db server\n\tgroup g1\n\tnode node3\n\tstate stopped\n\n"
        "vm:100\n\tgroup g1\n\tnode node1\n\tstate started\n\n"
        "vm:101\n\tmax_relocate 2\n\tmax_restart 3\n\tnode node2\n\tstate disabled\n\n"
        "vm:102\n\tnode node2\n\tstate started\n\n"
    )
    assert run(store_dir, "config", "--type", "ct").output.startswith("ct:103\n")
    assert "vm:" not in run(store_dir, "config", "--type", "ct").output
    r = run(store_dir, "set", "ct:103", "--delete", "group,comment", "--state", "enabled")
    assert r.exit_code == 0, r.output
    res = EmbeddedStore(store_dir).read_resources()
    assert res["ct:103"]["group"] is None and res["ct:103"]["comment"] is None
    assert res["ct:103"]["state"] == "started"
    assert run(store_dir, "set", "vm:101", "--node", "node3").exit_code == 0  # not yet managed
    assert run(store_dir, "set", "vm:100", "--node", "node1").exit_code == 0  # unchanged: fine
    assert run(store_dir, "remove", "101").exit_code == 0
    assert "vm:101" not in EmbeddedStore(store_dir).read_resources()
    # the file on disk is section-config, as Proxmox writes it
    text = (store_dir / "resources.cfg").read_text()
    assert text.startswith("vm: 100\n\tnode node1\n\tstate started\n\tgroup g1\n\n")


def test_groups(store_dir: Path) -> None:
    r = run(store_dir, "groupadd", "g2", "--nodes", "node3:5,node1", "--restricted", "1")
    assert r.exit_code == 0, r.output
    assert run(store_dir, "groupset", "g2", "--nofailback", "1", "--comment", "x").exit_code == 0
    r = run(store_dir, "groupconfig")
    assert r.output == (
        "group: g1\n\tnodes node1:2,node2\n\n"
        "group: g2\n\tcomment x\n\tnodes node3:5,node1\n\tnofailback 1\n\trestricted 1\n\n"
    )
    assert run(store_dir, "groupset", "g2", "--delete", "restricted,comment").exit_code == 0
    g2 = EmbeddedStore(store_dir).read_groups()["g2"]
    assert g2 == {"nodes": {"node3": 5, "node1": 0}, "restricted": False,
                  "nofailback": True, "comment": None}  # fmt: skip
    assert run(store_dir, "groupremove", "g2").exit_code == 0
    assert "g2" not in EmbeddedStore(store_dir).read_groups()


def test_crm_commands_are_queued(store_dir: Path) -> None:
    for args in (
        ("migrate", "vm:100", "node2"),
        ("relocate", "100", "node3"),
        ("crm-command", "migrate", "vm:100", "node3"),
        ("crm-command", "relocate", "vm:100", "node2"),
        ("crm-command", "stop", "vm:100", "30"),
        ("crm-command", "node-maintenance", "enable", "node1"),
        ("crm-command", "node-maintenance", "disable", "node1"),
        ("crm-command", "disarm-ha", "ignore"),
        ("crm-command", "arm-ha"),
    ):
        r = run(store_dir, *args)
        assert r.exit_code == 0, (args, r.output)
    assert EmbeddedStore(store_dir).read_crm_commands() == [
        "migrate vm:100 node2",
        "relocate vm:100 node3",
        "migrate vm:100 node3",
        "relocate vm:100 node2",
        "stop vm:100 30",
        "enable-node-maintenance node1",
        "disable-node-maintenance node1",
        "disarm-ha ignore",
        "arm-ha",
    ]


REFUSED = [
    (("add", "vm:99", "--node", "node1"), "invalid vm ID"),
    (("add", "qemu:100", "--node", "node1"), "unknown resource type 'qemu'"),
    (("add", "vm:100", "--node", "node1"), "already defined"),
    (("add", "vm:105", "--node", "node9"), "unknown node 'node9'"),
    (("add", "vm:105", "--node", "node1", "--group", "nope"), "unknown group 'nope'"),
    (("add", "vm:105", "--node", "node1", "--comment", "a\nb"), "single line"),
    (("add", "vm:105", "--node", "node1", "--state", "running"), "Invalid value"),
    (("add", "vm:105", "--node", "node1", "--max_restart", "11"), "Invalid value"),
    (("set", "vm:104", "--state", "stopped"), "no such resource"),
    (("set", "vm:100", "--group", "nope"), "unknown group"),
    (("set", "vm:100", "--delete", "node"), "cannot delete property 'node'"),
    (("set", "vm:100", "--delete", "group", "--group", "g1"), "both set and deleted"),
    (("set", "vm:102", "--state", "started"), "in error state, must be disabled"),
    (("set", "vm:102", "--state", "stopped"), "in error state"),
    (("set", "vm:102", "--delete", "state"), "in error state"),
    (("remove", "vm:104"), "no such resource"),
    (("set", "vm:100", "--node", "node2"), "use 'ha-manager migrate'"),
    (("migrate", "vm:100", "node9"), "unknown node 'node9'"),
    (("migrate", "vm:104", "node2"), "not HA managed"),
    (("migrate", "vm:102", "node1"), "in error state"),
    (("relocate", "ct:abc", "node2"), "invalid ct ID"),
    (("crm-command", "stop", "vm:100", "--", "-1"), "Invalid value"),
    (("crm-command", "stop", "vm:100", "soon"), "Invalid value"),
    (("crm-command", "stop", "vm:102", "0"), "in error state"),
    (("crm-command", "node-maintenance", "enable", "node9"), "unknown node"),
    (("crm-command", "node-maintenance", "on", "node1"), "Invalid value"),
    (("crm-command", "disarm-ha", "off"), "Invalid value"),
    (("groupadd", "g1", "--nodes", "node1"), "already defined"),
    (("groupadd", "g3", "--nodes", "node1:x"), "invalid priority"),
    (("groupadd", "g3", "--nodes", "node7"), "unknown node 'node7'"),
    (("groupadd", "3g", "--nodes", "node1"), "invalid group name"),
    (("groupadd", "g3"), "Missing option '--nodes'"),
    (("groupset", "nope", "--nodes", "node1"), "no such group"),
    (("groupset", "g1", "--delete", "nodes"), "cannot delete property 'nodes'"),
    (("groupremove", "g1"), "still used by vm:100"),
    (("groupremove", "nope"), "no such group"),
]


@pytest.mark.parametrize(
    ("args", "why"), REFUSED, ids=lambda v: " ".join(v) if isinstance(v, tuple) else None
)
def test_refused_commands_change_nothing(store_dir: Path, args: tuple[str, ...], why: str) -> None:
    before = files(store_dir)
    r = run(store_dir, *args)
    assert r.exit_code != 0
    assert why in r.output
    assert files(store_dir) == before


def test_disable_from_error_is_allowed(store_dir: Path) -> None:
    r = run(store_dir, "set", "vm:102", "--state", "disabled")
    assert r.exit_code == 0, r.output
    assert EmbeddedStore(store_dir).read_resources()["vm:102"]["state"] == "disabled"


def test_broken_config_is_reported_with_location(store_dir: Path) -> None:
    (store_dir / "resources.cfg").write_text("vm: 100\n\tstate started\n\tspeed 3\n")
    before = files(store_dir)
    r = run(store_dir, "add", "vm:105", "--node", "node1")
    assert r.exit_code == 1
    assert f"{store_dir}/resources.cfg:3: speed: unknown property in section 'vm:100'" in r.output
    assert files(store_dir) == before


def test_fresh_store_accepts_any_node_for_add(tmp_path: Path) -> None:
    d = tmp_path / "fresh"
    assert run(d, "groupadd", "g", "--nodes", "pve1,pve2:3").exit_code == 0
    assert run(d, "add", "vm:100", "--node", "pve1", "--group", "g").exit_code == 0
    r = run(d, "migrate", "vm:100", "pve2")  # but moving needs a node the CRM knows
    assert r.exit_code == 1 and "unknown node 'pve2' (cluster nodes: none)" in r.output


def test_store_from_environment(store_dir: Path) -> None:
    r = CliRunner().invoke(cli, ["config"], env={"HAFENCE_STORE": str(store_dir)})
    assert r.exit_code == 0 and r.output.startswith("vm:100\n")
    r = CliRunner().invoke(cli, ["config"], env={"HAFENCE_STORE": None,
                                                 "HAFENCE_HA_DIR": str(store_dir)})  # fmt: skip
    assert r.exit_code == 0 and r.output.startswith("vm:100\n")


@pytest.mark.peer("etcd")
def test_cli_on_etcd(etcd_url: str) -> None:
    spec = etcd_url.replace("http://", "etcd://") + "/clitest"
    s = open_store(spec)
    s.write_manager_status({"master_node": "node1", "timestamp": time.time(),
                            "node_status": {"node1": "online", "node2": "online"}})  # fmt: skip
    cmds = [
        ("groupadd", "g", "--nodes", "node1:1,node2"),
        ("add", "vm:100", "--node", "node1", "--group", "g"),
        ("migrate", "vm:100", "node2"),
    ]
    for args in cmds:
        r = CliRunner().invoke(cli, ["--store", spec, *args])
        assert r.exit_code == 0, r.output
    assert s.read_crm_commands() == ["migrate vm:100 node2"]
    before = s.snapshot()
    r = CliRunner().invoke(cli, ["--store", spec, "groupremove", "g"])
    assert r.exit_code == 1 and "still used" in r.output
    assert s.snapshot() == before
    r = CliRunner().invoke(cli, ["--store", spec, "status"])
    assert r.output.splitlines()[0] == "quorum OK"
    assert "service vm:100 (node1, queued)" in r.output


def test_cli_etcd_down_says_so() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"etcd://127.0.0.1:{sock.getsockname()[1]}/x"
        r = CliRunner().invoke(cli, ["--store", url, "status"])
    assert r.exit_code == 1
    assert r.output.startswith("quorum No quorum on node ")
    assert "etcd unreachable" in r.output


@pytest.fixture
def script() -> str:
    path = shutil.which("ha-manager")
    if not path:
        pytest.skip("ha-manager console script not installed (pip install -e .)")
    return path


def test_installed_script(store_dir: Path, script: str) -> None:
    env = {**os.environ, "HAFENCE_STORE": str(store_dir)}

    def sh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *args], env=env, capture_output=True, text=True, timeout=60)

    r = sh("status")
    assert r.returncode == 0 and r.stdout.startswith("quorum OK\nmaster node1 (active, ")
    before = files(store_dir)
    r = sh("set", "vm:102", "--state", "started")
    assert r.returncode == 1
    assert "service 'vm:102' in error state, must be disabled and fixed first" in r.stderr
    assert files(store_dir) == before
    assert sh("crm-command", "node-maintenance", "enable", "node2").returncode == 0
    assert EmbeddedStore(store_dir).read_crm_commands() == ["enable-node-maintenance node2"]
    r = sh("--help")
    for cmd in ("add", "remove", "set", "config", "status", "migrate", "relocate", "groupadd",
                "groupconfig", "groupset", "groupremove", "crm-command"):  # fmt: skip
        assert cmd in r.stdout


def test_unwritable_store_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    r = run(blocker / "ha", "add", "vm:100", "--node", "node1")
    assert r.exit_code == 1
    assert "Not a directory" in r.output and "Traceback" not in r.output


def test_add_warns_about_a_service_enabled_outside_ha(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.daemons.fakecli import install, put

    state = install(tmp_path, monkeypatch)
    put(state, "enabled", "web.service")
    r = run(store_dir, "add", "systemd:web", "--node", "node1")
    assert r.exit_code == 0, r.output
    assert "warning: systemd:web also starts outside HA" in r.output
    assert "systemctl disable web.service" in r.output
    assert "systemd:web" in EmbeddedStore(store_dir).read_resources()  # added all the same
    r = run(store_dir, "add", "systemd:db", "--node", "node1")  # not enabled: no warning
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    put(state, "enabled", "200")
    r = run(store_dir, "add", "ct:200", "--node", "node1")
    assert "warning: ct:200 also starts outside HA" in r.output
    assert "'pct set 200 --onboot 0'" in r.output


def test_no_maintenance_while_disarmed(store_dir: Path) -> None:
    s = EmbeddedStore(store_dir)
    ms = s.read_manager_status()
    ms["disarm"] = {"mode": "freeze", "state": "disarmed"}
    s.write_manager_status(ms)
    before = files(store_dir)
    r = run(store_dir, "crm-command", "node-maintenance", "enable", "node1")
    assert r.exit_code == 1 and "HA stack is disarmed" in r.output, r.output
    assert files(store_dir) == before
    r = run(store_dir, "crm-command", "node-maintenance", "disable", "node1")
    assert r.exit_code == 0, r.output  # leaving maintenance is always allowed


@pytest.mark.parametrize("damage", [b'{"node_status": 5}', b'{"master_node": "no', b"\xff"])
def test_a_damaged_manager_status_blocks_no_command(store_dir: Path, damage: bytes) -> None:
    (store_dir / "manager_status").write_bytes(damage)
    r = run(store_dir, "add", "vm:300", "--node", "node1")
    assert r.exit_code == 0, r.output
    assert "warning: manager status damaged, ignoring it:" in r.output
    assert f"{store_dir / 'manager_status'}: " in r.output
    r = run(store_dir, "status")
    assert r.exit_code == 0 and "service vm:300 (node1, queued)" in r.output, r.output
    assert "Traceback" not in r.output


def _queued(store_dir: Path) -> list[str]:
    return EmbeddedStore(store_dir).read_crm_commands()


def test_fence_ack_asks_and_queues_who_and_when(store_dir: Path) -> None:
    s = EmbeddedStore(store_dir)
    ms = s.read_manager_status()
    ms["node_status"]["node2"] = "fence"
    s.write_manager_status(ms)
    before = files(store_dir)
    r = CliRunner().invoke(
        cli, ["--store", str(store_dir), "crm-command", "fence-ack", "node2"], input="n\n"
    )
    assert r.exit_code == 1 and "powered off" in r.output and files(store_dir) == before
    t0 = int(time.time())
    r = CliRunner().invoke(
        cli, ["--store", str(store_dir), "crm-command", "fence-ack", "node2"], input="y\n"
    )
    assert r.exit_code == 0, r.output
    (line,) = _queued(store_dir)
    cmd, node, who, at = line.split()
    assert (cmd, node) == ("fence-ack", "node2") and "@" in who and t0 <= int(at) <= t0 + 60


def test_fence_ack_is_refused_while_the_node_is_reachable(store_dir: Path) -> None:
    from hafence.ha.realenv import node_alive_lease

    s = EmbeddedStore(store_dir)
    before = files(store_dir)
    r = run(store_dir, "crm-command", "fence-ack", "node1", "--yes")  # online for the master
    assert r.exit_code == 1 and "is online for the master" in r.output
    ms = s.read_manager_status()
    ms["node_status"]["node2"] = "fence"
    s.write_manager_status(ms)
    assert s.acquire_lease(node_alive_lease("node2"), "node2", 30)  # but its lease lives
    before = files(store_dir)
    r = run(store_dir, "crm-command", "fence-ack", "node2", "--yes")
    assert r.exit_code == 1 and "membership lease is alive" in r.output
    assert files(store_dir) == before
    r = run(store_dir, "crm-command", "fence-ack", "node9", "--yes")
    assert r.exit_code == 1 and "unknown node 'node9'" in r.output
