"""``ha-manager rules``: add/set/remove/config as Proxmox 9's, checked before writing.

Every refused command leaves every file of the store byte-identical.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hafence.store import EmbeddedStore
from tests.cli_ha.test_ha_manager import files, run


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """Three known nodes, four services, no groups (they are migrated)."""
    d = tmp_path / "ha"
    s = EmbeddedStore(d)
    s.write_text(
        "resources.cfg",
        "".join(f"vm: {i}\n\tnode node{1 + i % 3}\n\tstate started\n\n" for i in range(100, 104)),
    )
    s.write_manager_status({
        "master_node": "node1",
        "node_status": {n: "online" for n in ("node1", "node2", "node3")},
        "service_status": {
            f"vm:{i}": {"node": f"node{1 + i % 3}", "state": "started", "uid": str(i)}
            for i in range(100, 104)
        },
        "timestamp": time.time(),
    })  # fmt: skip
    with s.locked():
        pass
    return d


def rules_text(d: Path) -> str:
    return (d / "rules.cfg").read_text()


def test_add_set_remove_and_config(store_dir: Path) -> None:
    r = run(store_dir, "rules", "add", "node-affinity", "prefer-1", "--resources",
            "vm:100,vm:101", "--nodes", "node1:2,node2", "--comment", "db")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert rules_text(store_dir) == (
        "node-affinity: prefer-1\n\tresources vm:100,vm:101\n\tnodes node1:2,node2\n\tcomment db\n"
    )
    r = run(store_dir, "rules", "add", "resource-affinity", "apart",
            "--resources", "vm:102,vm:103", "--affinity", "negative")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run(store_dir, "rules", "set", "node-affinity", "prefer-1", "--strict", "1",
            "--delete", "comment")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run(store_dir, "rules", "config")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["enabled", "state", "rule", "type", "resources", "comment"]
    assert lines[1].split() == ["1", "in", "use", "prefer-1", "node-affinity", "vm:100,vm:101"]
    assert lines[2].split() == ["1", "in", "use", "apart", "resource-affinity", "vm:102,vm:103"]
    listed = json.loads(run(store_dir, "rules", "list", "--type", "node-affinity").output)
    assert listed == [{"rule": "prefer-1", "type": "node-affinity", "resources": "vm:100,vm:101",
                       "nodes": "node1:2,node2", "strict": 1, "order": 1}]  # fmt: skip
    r = run(store_dir, "rules", "set", "resource-affinity", "apart", "--disable", "1")
    assert r.exit_code == 0 and "\tdisable 1\n" in rules_text(store_dir), r.output
    shown = run(store_dir, "rules", "config", "--resource", "vm:103").output.splitlines()
    assert shown[1].split()[:2] == ["0", "in"]
    assert run(store_dir, "rules", "remove", "apart").exit_code == 0
    assert "apart" not in rules_text(store_dir)


REFUSED = [
    (("add", "node-affinity", "r1", "--resources", "vm:100"), "rule 'r1': missing --nodes"),
    (("add", "node-affinity", "x", "--resources", "vm:100"), "invalid rule ID 'x'"),
    (("add", "resource-affinity", "r1", "--resources", "vm:100,vm:101"), "missing --affinity"),
    (("add", "node-affinity", "r1", "--resources", "vm:100", "--nodes", "node1",
      "--affinity", "positive"), "--affinity: not a property of node-affinity rules"),
    (("add", "node-affinity", "1r", "--resources", "vm:100", "--nodes", "node1"),
     "invalid rule ID '1r'"),
    (("add", "node-affinity", "r1", "--resources", "vm:999", "--nodes", "node1"),
     "cannot use unmanaged resource(s) vm:999."),
    (("add", "node-affinity", "r1", "--resources", "vm:100", "--nodes", "node7"),
     "cannot use non-existent node(s) node7."),
    (("add", "node-affinity", "r1", "--resources", "vm:100", "--nodes", "node1:x"),
     "--nodes: invalid priority"),
    (("add", "node-affinity", "r1", "--resources", "vm100", "--nodes", "node1"),
     "--resources: invalid service ID"),
    (("add", "node-affinity", "dup", "--resources", "vm:100", "--nodes", "node2"),
     "Rule 'dup' is invalid.\nresources: resource 'vm:100' is already used in another node "
     "affinity rule"),
    (("add", "resource-affinity", "r1", "--resources", "vm:100,vm:101,vm:102,vm:103",
      "--affinity", "negative"), "resources: rule defines more resources than available nodes"),
    (("add", "resource-affinity", "r1", "--resources", "vm:100", "--affinity", "positive"),
     "resources: rule is ineffective as there are less than two resources"),
    (("add", "node-affinity", "keep", "--resources", "vm:101", "--nodes", "node1"),
     "HA rule 'keep' already defined"),
    (("set", "node-affinity", "keep", "--nodes", "node1"), "HA rule 'keep' is a "
     "resource-affinity rule"),
    (("set", "node-affinity", "nope", "--nodes", "node1"), "HA rule 'nope' does not exist"),
    (("set", "node-affinity", "old", "--delete", "nodes"), "cannot delete property 'nodes'"),
    (("set", "node-affinity", "old", "--delete", "comment", "--comment", "x"),
     "both set and deleted"),
    (("add", "resource-affinity", "neg", "--resources", "vm:101,vm:102", "--affinity",
      "negative"), "Rule 'neg' is invalid.\nresources: rule shares two or more resources with "
     "a positive resource affinity rule"),
    (("remove", "nope"), "no such ha rule 'nope'"),
    (("add", "wrong-type", "r1", "--resources", "vm:100"), "Invalid value for 'TYPE'"),
]  # fmt: skip


@pytest.mark.parametrize("args,message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_a_refused_rules_command_changes_nothing(
    store_dir: Path, args: tuple[str, ...], message: str
) -> None:
    base = ("--resources", "vm:100", "--nodes", "node1")
    assert run(store_dir, "rules", "add", "node-affinity", "old", *base).exit_code == 0
    r = run(store_dir, "rules", "add", "resource-affinity", "keep",
            "--resources", "vm:101,vm:102", "--affinity", "positive")  # fmt: skip
    assert r.exit_code == 0, r.output
    before = files(store_dir)
    r = run(store_dir, "rules", *args)
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert "Traceback" not in r.output
    assert files(store_dir) == before


def test_rules_wait_for_the_group_migration(store_dir: Path) -> None:
    s = EmbeddedStore(store_dir)
    s.write_groups({"g": {"nodes": {"node1": 0}, "restricted": False, "nofailback": False,
                          "comment": None}})  # fmt: skip
    before = files(store_dir)
    r = run(store_dir, "rules", "add", "node-affinity", "r1", "--resources", "vm:100",
            "--nodes", "node1")  # fmt: skip
    assert r.exit_code != 0 and "ha groups have not been migrated yet" in r.output
    assert files(store_dir) == before


def test_a_handwritten_conflict_is_shown_as_ignored(store_dir: Path) -> None:
    (store_dir / "rules.cfg").write_text(
        "node-affinity: aa\n\tresources vm:100\n\tnodes node1\n\n"
        "node-affinity: bb\n\tresources vm:100\n\tnodes node2\n"
    )
    r = run(store_dir, "rules", "config")
    assert r.exit_code == 0
    assert "ignored (conflicts)" in r.stdout
    assert "rule 'aa' ignored: resources: resource 'vm:100' is already used in another node " \
           "affinity rule" in r.stderr  # fmt: skip


def test_removing_a_resource_purges_it_from_rules(store_dir: Path) -> None:
    assert run(store_dir, "rules", "add", "node-affinity", "solo", "--resources", "vm:100",
               "--nodes", "node1").exit_code == 0  # fmt: skip
    assert run(store_dir, "rules", "add", "resource-affinity", "pair", "--resources",
               "vm:101,vm:102,vm:103", "--affinity", "positive").exit_code == 0  # fmt: skip
    assert run(store_dir, "remove", "vm:101", "--no-purge").exit_code == 0
    assert "vm:101" in rules_text(store_dir)
    assert run(store_dir, "remove", "vm:100").exit_code == 0
    assert run(store_dir, "remove", "vm:102").exit_code == 0
    assert rules_text(store_dir) == (
        "resource-affinity: pair\n\tresources vm:101,vm:103\n\taffinity positive\n"
    )


def test_migrate_honours_resource_affinity(store_dir: Path) -> None:
    # vm:100 on node2, vm:101 on node3, vm:102 on node1 (node = 1 + id % 3)
    assert run(store_dir, "rules", "add", "resource-affinity", "apart", "--resources",
               "vm:100,vm:102", "--affinity", "negative").exit_code == 0  # fmt: skip
    assert run(store_dir, "rules", "add", "resource-affinity", "along", "--resources",
               "vm:100,vm:101", "--affinity", "positive").exit_code == 0  # fmt: skip
    before = files(store_dir)
    r = run(store_dir, "migrate", "vm:100", "node1")
    assert r.exit_code != 0
    assert (
        "cannot migrate resource 'vm:100' to node 'node1':\n\n- resource 'vm:102' on "
        "target node 'node1' in negative affinity with resource 'vm:100'"
    ) in r.output
    assert files(store_dir) == before
    r = run(store_dir, "migrate", "vm:100", "node3")
    assert r.exit_code == 0, r.output
    assert r.output == ("also migrate resource 'vm:101' in positive affinity with resource "
                        "'vm:100' to target node 'node3'\n")  # fmt: skip
    assert EmbeddedStore(store_dir).read_crm_commands() == ["migrate vm:100 node3"]
