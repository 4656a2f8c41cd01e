"""The LRM's resource procedure on the real Env: only a confirmed stop counts as stopped.

A real LRM and RealEnv on an embedded store act on ``systemd:`` and ``vm:`` services
through fake ``systemctl``/``qm`` (tests.daemons.fakecli): a unit systemd keeps
restarting (``activating``), a ``qm status`` that fails. Whatever the type reports, a
stop is only a success once the type says STOPPED, and a relocate moves the config only
then: otherwise the source may still run the service while the target starts it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hafence.ha import state as st
from hafence.ha.config import default_resource
from hafence.ha.lrm import LRM
from hafence.ha.realenv import RealEnv, Timings
from hafence.store import EmbeddedStore
from tests.daemons.fakecli import calls, put

T = Timings(interval=1, lease_ttl=10, watchdog_timeout=5, fence_delay=2, node_timeout=5)


class Node:
    """node1's LRM on a store where the master's decisions are written by the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = EmbeddedStore(tmp_path / "ha")
        self.env = RealEnv("node1", self.store, role="lrm", timings=T,
                           state_dir=tmp_path / "state")  # fmt: skip
        self.lrm = LRM(self.env)

    def add(self, sid: str, node: str = "node1") -> None:
        res = self.store.read_resources()
        res[sid] = {**default_resource(), "node": node}
        self.store.write_resources(res)

    def command(self, sid: str, state: str, uid: str, **extra: Any) -> int:
        """Write the master's command for ``sid``; run LRM rounds until its result."""
        self.store.write_manager_status({
            "master_node": "node2",
            "node_status": {"node1": "online", "node2": "online"},
            "service_status": {sid: {"state": state, "node": "node1", "uid": uid, **extra}},
        })  # fmt: skip
        deadline = time.monotonic() + 60  # a bound against hangs, not a speed assertion
        while time.monotonic() < deadline:
            self.lrm.do_one_iteration()
            res = (self.store.read_lrm_status("node1").get("results") or {}).get(uid)
            if res is not None:
                return int(res["exit_code"])
            time.sleep(0.02)
        raise AssertionError(f"no LRM result for {sid} {state}")

    def close(self) -> None:
        self.env.close()


@pytest.fixture
def node(tmp_path: Path, fake_bin: Path) -> Any:
    n = Node(tmp_path)
    yield n
    n.close()


def test_stop_of_an_activating_unit_stops_it(node: Node, fake_bin: Path) -> None:
    (fake_bin / "web.service").write_text("activating")  # systemd auto-restart in progress
    node.add("systemd:web")
    assert node.command("systemd:web", "request_stop", "u1") == st.SUCCESS
    assert "systemctl stop -- web.service" in calls(fake_bin)
    assert (fake_bin / "web.service").read_text().strip() == "stopped"


def test_stop_that_does_not_take_is_an_error(node: Node, fake_bin: Path) -> None:
    (fake_bin / "web.service").write_text("activating")
    put(fake_bin, "respawn", "web.service")  # crash loop: systemd starts it again
    node.add("systemd:web")
    assert node.command("systemd:web", "request_stop", "u1") == st.ERROR
    assert "systemctl stop -- web.service" in calls(fake_bin)


def test_relocate_moves_the_config_only_after_a_confirmed_stop(node: Node, fake_bin: Path) -> None:
    (fake_bin / "web.service").write_text("activating")
    put(fake_bin, "respawn", "web.service")
    node.add("systemd:web")
    code = node.command("systemd:web", "relocate", "u1", target="node2")
    assert code == st.ERROR
    assert node.store.read_resources()["systemd:web"]["node"] == "node1"


def test_relocate_of_an_activating_unit_stops_it_before_the_move(
    node: Node, fake_bin: Path
) -> None:
    (fake_bin / "web.service").write_text("activating")
    node.add("systemd:web")
    assert node.command("systemd:web", "relocate", "u1", target="node2") == st.SUCCESS
    assert (fake_bin / "web.service").read_text().strip() == "stopped"
    assert node.store.read_resources()["systemd:web"]["node"] == "node2"


def test_failed_status_command_counts_as_running(node: Node, fake_bin: Path) -> None:
    (fake_bin / "100").write_text("running")
    put(fake_bin, "statusfail", "100")  # 'qm status 100' fails: nobody knows
    node.add("vm:100")
    assert node.command("vm:100", "request_stop", "u1") == st.ERROR
    assert any(c.startswith("qm shutdown 100") for c in calls(fake_bin))
