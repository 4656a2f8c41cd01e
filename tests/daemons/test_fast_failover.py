"""The fast failover end to end: real hafence-crm/hafence-lrm processes with the ``fast``
timings, every node's fence device a real BMC (ipmi_sim), on the embedded store or on a
real etcd. docs/fencing.md says which premise of the safety argument each test breaks.

A BMC that powers its node off kills the node's daemons and its service process before
it answers (unless the test makes the BMC lie; tests/daemons/power_cut.py), a node whose watchdog
expired (a real hafence-watchdog-mux on a fake device) dies the same way. The service is
a ``dummy:`` resource, a real process per running copy: "never twice" is checked on the
processes themselves every 50 ms for the whole test.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hafence.cli.ha_manager import cli as ha_manager
from hafence.ha import state as st
from hafence.simdevices.ipmi_sim import IpmiSim
from hafence.simdevices.ipmi_sim import available as ipmi_sim_available
from hafence.store import Store, open_store
from hafence.store.base import MANAGER_STATUS
from hafence.watchdog.muxproc import MuxProcess
from tests.daemons import power_cut
from tests.daemons.holdproxy import HoldProxy
from tests.daemons.reaper import kill_tagged, tagged_env
from tests.daemons.test_daemons_e2e import wait_for

NODES = ("node1", "node2", "node3")
SID = "dummy:web"
# The fast preset as it ships: 1 s rounds, 5 s membership, 20 s locks; without a mux
# the hardware timeout is the mux's default (10 s): 20 > 5 + 10 + 2
FAST = ["--timings", "fast"]

pytestmark = pytest.mark.skipif(not ipmi_sim_available(), reason="ipmi_sim not installed")


def dummy_pid(state_dir: Path, sid: str = SID) -> int | None:
    """The live process of ``sid`` recorded under a node's state dir, if any."""
    name = sid.split(":", 1)[1]
    try:
        pid = int((state_dir / "dummy" / f"{name}.pid").read_text().split()[0])
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if sid.encode() in cmd[0].split() and stat not in ("Z", "X") else None


class Cluster:
    def __init__(self, tmp: Path, spec: str, bmcs: dict[str, IpmiSim]) -> None:
        self.tmp = tmp
        self.spec = spec
        self.bmcs = bmcs
        self.timings = list(FAST)
        self.procs: dict[str, dict[str, subprocess.Popen[bytes]]] = {n: {} for n in NODES}
        self.starts: dict[str, int] = {n: 0 for n in NODES}
        self.muxes: dict[str, MuxProcess] = {}
        self.lying: set[str] = set()  # nodes whose BMC reports off and leaves them on
        self.powered = dict.fromkeys(NODES, True)
        self.events: list[tuple[float, str]] = []
        self.max_copies = 0
        self.copies_seen: list[tuple[float, dict[str, int]]] = []
        self.stores: list[Store] = []
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        for node, bmc in bmcs.items():
            pids, services = tmp / f"{node}.pids", self.state_dir(node) / "dummy"
            glob = f"{shlex.quote(str(pids))} {shlex.quote(str(services))}/*.pid"
            power_cut.install(bmc, glob, unless=tmp / f"{node}.lying")

    def state_dir(self, node: str) -> Path:
        return self.tmp / "state" / node

    def lie(self, node: str) -> None:
        """``node``'s BMC will report off and leave the node running."""
        self.lying.add(node)
        (self.tmp / f"{node}.lying").touch()

    def store(self) -> Store:
        s = open_store(self.spec)
        self.stores.append(s)
        return s

    def fence_cfg(self, **extra: Any) -> Path:
        lines = []
        for node, bmc in sorted(self.bmcs.items()):
            pw = self.tmp / f"{node}.pw"
            pw.write_text(bmc.password + "\n")
            pw.chmod(0o600)
            opts = bmc.driver_options(**extra.get(node, {}))
            opts.pop("password")
            args = " ".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in opts.items())
            lines += [f"device bmc-{node} ipmi {args} password_file={pw}",
                      f"connect bmc-{node} node={node}"]  # fmt: skip
        cfg = self.tmp / "fence.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        cfg.chmod(0o600)
        return cfg

    def start(self, node: str, roles: tuple[str, ...] = ("crm", "lrm"),
              store: str | None = None) -> None:  # fmt: skip
        py = sys.executable
        wd = ["--no-watchdog"]
        if node in self.muxes:
            wd = ["--watchdog-socket", self.muxes[node].socket]
        common = ["--node", node, "--store", store or self.spec, *wd, *self.timings]
        if not self.spec.startswith("etcd"):
            common.append("--single-machine")  # every node runs here (started one by one)
        self.starts[node] += 1
        for role in roles:
            argv = [py, "-c", f"from hafence.daemons import {role}_main; {role}_main()", *common]
            if role == "crm":
                argv += ["--fence-config", str(self.tmp / "fence.cfg")]
            else:
                argv += ["--state-dir", str(self.state_dir(node)),
                         "--shutdown-flag", str(self.tmp / f"{node}.shutdown")]  # fmt: skip
            with open(self.tmp / f"{node}-{role}.log", "ab") as logf:
                self.procs[node][role] = subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, stderr=logf, env=tagged_env(str(self.tmp))
                )
        pids = "".join(f"{p.pid}\n" for p in self.procs[node].values() if p.poll() is None)
        (self.tmp / f"{node}.pids").write_text(pids)  # what a power cut kills

    def watch(self) -> None:
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for node, bmc in self.bmcs.items():
                if self.powered[node] and bmc.power == "off" and node not in self.lying:
                    self.die(node, "power off")  # the node lost power: everything on it dies
                mux = self.muxes.get(node)
                if self.powered[node] and mux is not None and mux.kernel.events("reset"):
                    self.die(node, "watchdog reset")
            copies = {n: p for n in NODES if (p := dummy_pid(self.state_dir(n)))}
            if len(copies) > self.max_copies:
                self.max_copies = len(copies)
                self.copies_seen.append((time.monotonic(), copies))
            time.sleep(0.05)

    def die(self, node: str, why: str) -> None:
        self.powered[node] = False
        self.events.append((time.time(), f"{node} {why}"))
        self.kill_daemons(node)
        pid = dummy_pid(self.state_dir(node))
        if pid:
            os.kill(pid, signal.SIGKILL)

    def kill_daemons(self, node: str) -> None:
        for p in self.procs[node].values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()

    def signal(self, node: str, sig: int) -> None:
        for p in self.procs[node].values():
            if p.poll() is None:
                p.send_signal(sig)

    def stop(self) -> None:
        self._stop.set()
        for node in NODES:
            self.signal(node, signal.SIGCONT)
            self.kill_daemons(node)
        kill_tagged(str(self.tmp))  # every service, also one no pid file names yet
        for s in self.stores:
            s.close()

    def log(self, node: str | None = None) -> str:
        files = sorted(self.tmp.glob(f"{node or 'node*'}-*.log"))
        return "".join(p.read_text(errors="replace") for p in files)

    def ha(self, *args: str) -> Any:
        return CliRunner().invoke(ha_manager, ["--store", self.spec, *args])

    def where(self) -> str | None:
        running = [n for n in NODES if dummy_pid(self.state_dir(n))]
        self.max_copies = max(self.max_copies, len(running))  # a sample like the watcher's
        assert len(running) <= 1, f"{SID} runs on {running}"
        return running[0] if running else None

    def master(self) -> str | None:
        if not self.stores:
            self.store()
        return self.stores[0].lease_owner(st.MANAGER_LOCK)

    def lrm_runs(self, node: str) -> list[str]:
        """``node``'s LRM log cut where each start begins (each appends to the file)."""
        text = (self.tmp / f"{node}-lrm.log").read_text(errors="replace")
        return text.split(f"{node}/lrm: timings")

    def lrm_log(self, node: str, run: int = -1) -> str:
        """The log of one run of ``node``'s LRM, or from that run on."""
        return f"{node}/lrm: timings".join(self.lrm_runs(node)[run:])


@pytest.fixture
def cluster(tmp_path: Path, spec: str) -> Iterator[Cluster]:
    bmcs: dict[str, IpmiSim] = {}
    try:
        for n in NODES:
            bmcs[n] = IpmiSim(workdir=tmp_path / f"bmc-{n}").start()
        c = Cluster(tmp_path, spec, bmcs)
        try:
            yield c
        finally:
            c.stop()
            for mux in c.muxes.values():
                mux.stop(grace=2)
    finally:
        for b in bmcs.values():
            b.stop()


def bring_up(c: Cluster, on: str, first: str, store: str | None = None, **fence: Any) -> None:
    """The service configured on node ``on``; ``first``'s CRM started alone until it is
    master (through ``store`` if given), then every other daemon; the service running."""
    c.fence_cfg(**fence)
    r = c.ha("add", SID, "--node", on)
    assert r.exit_code == 0, r.output
    c.start(first, ("crm",), store=store)
    wait_for(lambda: c.master() == first, 30, f"{first} to become master")
    for n in NODES:
        c.start(n, ("lrm",) if n == first else ("crm", "lrm"))
    c.watch()
    wait_for(lambda: c.where() == on, 30, f"{SID} to start on {on}")
    s = c.store()  # every LRM has reported: ha-manager knows every node (not before)
    wait_for(lambda: set(s.lrm_nodes()) >= set(NODES), 30, "every LRM's first status")
    assert c.master() == first


def log_time(log: str, needle: str) -> float:
    """When the log line holding ``needle`` was written (epoch seconds)."""
    line = next(ln for ln in log.splitlines() if needle in ln)
    stamp, _, ms = line[:23].partition(",")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000


def recovered(c: Cluster, dead: str) -> None:
    wait_for(lambda: c.where() not in (None, dead), 60, f"{SID} to be recovered")
    assert c.max_copies == 1, c.copies_seen


def test_a_power_fenced_node_is_recovered_at_once(cluster: Cluster) -> None:
    c = cluster
    bring_up(c, on="node3", first="node1")
    service = dummy_pid(c.state_dir("node3"))
    c.kill_daemons("node3")  # node3's HA stack dies; its service lives on until the BMC
    recovered(c, "node3")
    assert c.bmcs["node3"].power == "off"
    assert service in power_cut.killed(c.bmcs["node3"])  # the power cut killed it
    log = c.log("node1")
    confirmed = log.index("fencing: node 'node3' confirmed off by level 1")
    taken = log.index("node 'node3' confirmed off by power device(s) bmc-node3 and silent since")
    recovery = log.index(f"recover service '{SID}' from fenced node 'node3'")
    assert confirmed < taken < recovery  # taken over: not after the 20 s lease
    assert c.bmcs["node3"].password not in c.log()


@pytest.mark.parametrize("spec", ["etcd"], indirect=True)
def test_the_masters_node_is_fenced_and_its_lock_taken_over(cluster: Cluster) -> None:
    c = cluster
    bring_up(c, on="node1", first="node1")
    c.kill_daemons("node1")  # the master's node: its CRM and LRM die, its service lives on
    recovered(c, "node1")
    log = c.log()
    assert "fencing: master node 'node1' is offline: fencing it to take over the manager" in log
    took = log.index("fencing: took over the manager lock of fenced master node 'node1'")
    taken = log.index("node 'node1' confirmed off by power device(s) bmc-node1 and silent since")
    assert took < taken < log.index(f"recover service '{SID}' from fenced node 'node1'")
    assert c.master() in ("node2", "node3")


@pytest.mark.parametrize("spec", ["etcd"], indirect=True)
def test_a_lying_bmc_falls_back_to_the_lease_and_alerts(cluster: Cluster) -> None:
    """node1 freezes (membership runs out), is fenced, and thaws while its BMC, which
    only pretends to cut the power, says off: node1 renews again. The master must not take
    its lock: node1's watchdog resets it, then its lock expires, then the recovery."""
    c = cluster
    # membership 3 s, watchdog 8 s: a 4 s freeze makes node1 offline but not reset yet
    c.timings = ["--timings", "fast", "--store-deadline", "1", "--node-timeout", "3",
                 "--watchdog-timeout", "8", "--watchdog-hw-timeout", "4"]  # fmt: skip
    c.muxes["node1"] = MuxProcess(c.tmp / "mux-node1", timeout=4).start()
    c.lie("node1")
    bring_up(c, on="node1", first="node2", node1={"delay": 2})  # thaw before the off
    c.signal("node1", signal.SIGSTOP)
    frozen = time.monotonic()
    wait_for(lambda: "start hardware fence of node 'node1'" in c.log("node2"), 30, "the fence")
    c.signal("node1", signal.SIGCONT)
    assert time.monotonic() - frozen < 8, "node1 stayed frozen past its watchdog: no lie"
    recovered(c, "node1")
    log = c.log("node2")
    alert = "node 'node1' still renews its leases after bmc-node1 confirmed its power off"
    assert log.count(alert) == 1 and f"CRITICAL node2/crm: fencing: {alert}" in log
    assert "took over its agent lock" not in log
    assert c.bmcs["node1"].power == "off"  # the BMC lied; the watchdog did not:
    reset = next(t for t, what in c.events if what == "node1 watchdog reset")
    assert "node1/lrm: status change active => lost_agent_lock" in c.lrm_log("node1")
    assert reset < log_time(log, f"recover service '{SID}' from fenced node 'node1'")


@pytest.mark.parametrize("spec", ["etcd"], indirect=True)
def test_a_deposed_masters_late_status_write_is_refused(cluster: Cluster, etcd_url: str) -> None:
    c = cluster
    host, port = etcd_url.removeprefix("http://").split(":")
    cluster_name = c.spec.rsplit("/", 1)[1]
    proxy = HoldProxy((host, int(port)), f"/hafence/{cluster_name}/{MANAGER_STATUS}")
    try:
        bring_up(c, on="node2", first="node1", store=proxy.url(cluster_name))  # node1's CRM
        s = c.store()  # talks through the proxy, everything else straight to etcd
        proxy.armed = True  # node1's next status write is held, then node1 is cut off
        r = c.ha("add", "dummy:other", "--node", "node3")
        assert r.exit_code == 0, r.output
        wait_for(lambda: proxy.held is not None, 30, "the master's status write")
        wait_for(lambda: c.master() in ("node2", "node3"), 60, "a new master")
        new = c.master()
        wait_for(lambda: s.read_manager_status().get("master_node") == new, 30,
                 "the new master's status")  # fmt: skip
        answer = proxy.release()  # node1's write arrives, late
        assert not answer.get("succeeded"), answer  # refused by etcd itself
        # the new master may write again meanwhile; node1's status never lands
        assert s.read_manager_status().get("master_node") == new
        assert c.max_copies == 1
    finally:
        proxy.close()


@pytest.mark.parametrize("spec", ["embedded"], indirect=True)  # etcd: test_fast_realenv
def test_a_restarted_lrm_takes_a_fresh_lock(cluster: Cluster) -> None:
    c = cluster
    bring_up(c, on="node2", first="node1")
    s = c.store()
    old = s.lease_holder(st.agent_lock_name("node2"))["incarnation"]
    pid = dummy_pid(c.state_dir("node2"))
    c.procs["node2"]["lrm"].kill()  # crashed (no watchdog here to reset the node)
    c.procs["node2"]["lrm"].wait()
    c.start("node2", ("lrm",))
    wait_for(lambda: f"of an earlier incarnation ({old}) dropped" in c.log("node2"), 30,
             "the new LRM to drop the dead one's lock")  # fmt: skip
    wait_for(lambda: (h := s.lease_holder(st.agent_lock_name("node2"))) is not None
             and h["incarnation"] != old, 10, "a fresh lock")  # fmt: skip
    lrm_pid = c.procs["node2"]["lrm"].pid
    assert f":{lrm_pid}:" in s.lease_holder(st.agent_lock_name("node2"))["incarnation"]
    time.sleep(3)  # a few rounds of the new LRM: the running service is left alone
    assert dummy_pid(c.state_dir("node2")) == pid and c.max_copies == 1


@pytest.mark.parametrize("spec", ["etcd"], indirect=True)
def test_a_node_powered_on_again_starts_nothing_it_ran(cluster: Cluster) -> None:
    c = cluster
    bring_up(c, on="node3", first="node1")
    c.kill_daemons("node3")
    wait_for(lambda: not c.powered["node3"], 30, "node3's power-off")
    # Powered on again as soon as its fence is done (by hand or its BMC). Not before: a
    # power-on while the fencer still polls for off is "still on", and the fencer's next
    # attempt powers it off again, new daemons and all (seen at load 9).
    wait_for(lambda: "fencing: node 'node3' confirmed off" in c.log(), 60, "node3's fence")
    c.bmcs["node3"].set_power(True)
    c.powered["node3"] = True
    c.start("node3")
    recovered(c, "node3")

    def new_lrm_started() -> bool:  # its second run, not the first one's lines
        starts = len(c.lrm_runs("node3")) - 1
        return starts >= 2 and "status change startup" in c.lrm_log("node3")

    wait_for(new_lrm_started, 60, "node3's new LRM")
    time.sleep(3)  # rounds of node3's new LRM
    assert c.where() != "node3" and c.max_copies == 1
    assert f"starting service {SID}" in c.lrm_log("node3", 0)  # the first run did
    assert f"starting service {SID}" not in c.lrm_log("node3")  # the one powered on not
