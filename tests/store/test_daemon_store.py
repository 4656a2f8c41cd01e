"""The store's side of the daemons: one machine per embedded store, and a loop that wakes
when the store changes (not faster than its minimum spacing, and not when nothing did)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hafence.daemons import MAX_MIN_GAP, MIN_GAP_FRACTION, run_daemon
from hafence.ha import config as hacfg
from hafence.ha.realenv import RealEnv
from hafence.ha.timings import Timings
from hafence.store import EmbeddedStore, NotLocal
from tests.peers import etcd as etcd_peer


def _lrm(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from hafence.daemons import lrm_main; lrm_main()"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-watchdog", "--node", "node1", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_embedded_store_refuses_nodes_that_never_ran_on_this_machine(tmp_path: Path) -> None:
    d = tmp_path / "ha"
    s = EmbeddedStore(d)
    s.claim_node("node1")
    s.write_groups({"g": {**hacfg.default_group(), "nodes": {"node1": 0, "node2": 0}}})
    # node2's daemons ran on another machine (its own embedded store there): refused
    s._put("nodes/node2", json.dumps({"machine_id": "another-machine"}).encode())
    r = _lrm("--store", str(d))
    assert r.returncode == 2, r.stderr
    assert "node(s) node2 whose daemons never ran on this machine" in r.stderr
    assert "etcd://" in r.stderr and "Traceback" not in r.stderr
    # a node named only by a service, never run anywhere: refused once its daemons did
    # not start here within 2 node timeouts either
    s._delete("nodes/node2")
    s.write_resources({"vm:100": {**hacfg.default_resource(), "node": "node3"}})
    r = _lrm("--store", str(d), "--interval", "0.5", "--node-timeout", "2")
    assert r.returncode == 2, r.stderr
    assert "waiting for node(s) node2, node3 to start on this machine" in r.stderr
    assert "node(s) node2, node3 whose daemons never ran on this machine" in r.stderr
    try:
        s.check_local()
        raise AssertionError("node2, node3 accepted")
    except NotLocal as exc:
        assert exc.unseen == ["node2", "node3"] and not exc.foreign


def test_nodes_of_this_machine_share_an_embedded_store(tmp_path: Path) -> None:
    """node1..node3 on one machine (tests, demos): each daemon claims its node here."""
    s = EmbeddedStore(tmp_path / "ha")
    for n in ("node1", "node2", "node3"):
        s.claim_node(n)
    s.write_groups({"g": {**hacfg.default_group(), "nodes": {"node1": 0, "node2": 0, "node3": 0}}})
    s.check_local()  # no exception


def test_nodes_of_one_machine_may_start_in_any_order(tmp_path: Path) -> None:
    """A store whose config names node1..node2 before any daemon ran: node1's daemon waits
    for node2's to start on this machine (they start together), then runs."""
    d = tmp_path / "ha"
    s = EmbeddedStore(d)
    s.write_groups({"g": {**hacfg.default_group(), "nodes": {"node1": 0, "node2": 0}}})
    code = "from hafence.daemons import lrm_main; lrm_main()"
    argv = [sys.executable, "-c", code, "--no-watchdog", "--store", str(d),
            "--interval", "0.5", "--node-timeout", "30"]  # fmt: skip
    node1 = subprocess.Popen([*argv, "--node", "node1"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while s._get("nodes/node1") is None:  # node1's daemon is up and waiting
            assert time.monotonic() < deadline and node1.poll() is None
            time.sleep(0.05)
        s.claim_node("node2")  # what node2's daemon does first
        while s.read_lrm_status("node1") == {}:  # node1 got past the check: its rounds run
            assert time.monotonic() < deadline and node1.poll() is None, "node1 refused"
            time.sleep(0.05)
    finally:
        node1.terminate()
        node1.communicate(timeout=60)


class Recorder:
    """A daemon state machine that only notes when its rounds run."""

    def __init__(self, stop_after: int) -> None:
        self.starts: list[float] = []
        self.stop_after = stop_after
        self.shutdown = False

    def shutdown_request(self) -> None:
        self.shutdown = True

    def do_one_iteration(self) -> bool:
        self.starts.append(time.monotonic())
        return not self.shutdown and len(self.starts) < self.stop_after


def test_loop_wakes_on_a_store_change_but_not_faster_than_its_spacing(tmp_path: Path) -> None:
    t = Timings(interval=4, lease_ttl=30, watchdog_timeout=12, fence_delay=5, node_timeout=12)
    store = EmbeddedStore(tmp_path / "ha")
    env = RealEnv("node1", store, role="lrm", timings=t, watchdog_socket=None)
    daemon = Recorder(stop_after=4)
    events: dict[str, float] = {}
    starts: list[float] = []  # a round's heartbeat is its first step: when it started
    heartbeat = env.heartbeat
    env.heartbeat = lambda: starts.append(time.monotonic()) or heartbeat()  # type: ignore[method-assign]

    def writer() -> None:
        while not daemon.starts:
            time.sleep(0.01)
        events["write"] = time.monotonic()  # right after round 1 started: wakes round 2
        store.write_manager_status({"master_node": "node2", "node_status": {}})
        while len(daemon.starts) < 3:
            time.sleep(0.01)
        time.sleep(0.2)
        events["term"] = time.monotonic()  # SIGTERM: round 4 at once, with the request
        os.kill(os.getpid(), signal.SIGTERM)

    th = threading.Thread(target=writer)
    th.start()
    try:
        assert run_daemon(env, daemon, t.interval) == 0
    finally:
        th.join(60)
    assert len(daemon.starts) == 4
    r1, r2, r3, r4 = starts
    min_gap = min(t.interval * MIN_GAP_FRACTION, MAX_MIN_GAP)
    assert r2 - r1 >= min_gap  # never closer than the minimum spacing
    assert r2 < r1 + t.interval  # woken by the change, not by the timer
    assert r3 - r2 > t.interval / 2  # nothing changed: the timer, no busy loop
    assert events["term"] <= r4 < events["term"] + t.interval and daemon.shutdown


def test_daemon_etcd_options_are_checked_at_start(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    r = _lrm("--store", "etcds://127.0.0.1:1/c", "--etcd-cert", str(cert))
    assert r.returncode == 2 and "certificate and key must be given together" in r.stderr
    r = _lrm("--store", "etcd://127.0.0.1:1/c", "--etcd-user", "hafence",
             "--etcd-password-file", str(tmp_path / "missing"))  # fmt: skip
    assert r.returncode == 2 and "etcd password file" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_crm_started_while_the_store_does_not_answer_waits_for_it(tmp_path: Path) -> None:
    # A node that boots cut off from its cluster: its CRM starts, cannot read the
    # store's fence.cfg, and waits (no traceback, no exit and restart loop) until the
    # store answers; then it carries on as any CRM.
    if not etcd_peer.available():
        pytest.skip("etcd binary not installed (apt install etcd-server)")
    log_file = tmp_path / "crm.log"
    code = "from hafence.daemons import crm_main; crm_main()"
    with etcd_peer.etcd_cluster(tmp_path) as etcd:
        etcd.pause(0)  # connections are accepted, nothing is answered
        crm = subprocess.Popen(
            [sys.executable, "-c", code, "--no-watchdog", "--node", "node1",
             "--store", etcd.url("boot-cut-off"), "--timings", "fast",
             "--log-file", str(log_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _wait_line(log_file, "waiting for the store before starting", crm)
            assert crm.poll() is None
            etcd.resume(0)
            _wait_line(log_file, "node1/crm: status change", crm)
            assert crm.poll() is None
        finally:
            crm.kill()
            _, err = crm.communicate()
    assert "Traceback" not in err, err[-2000:]


def _wait_line(log_file: Path, text: str, proc: subprocess.Popen[str]) -> None:
    """Until ``text`` is in the log; a daemon that exits first fails the test at once."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log_file.exists() and text in log_file.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the CRM exited ({proc.returncode}) before {text!r}:\n"
                                 f"{err[-2000:]}")  # fmt: skip
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in {log_file} within 60 s")
