"""End to end with real processes: three nodes' hafence-crm + hafence-lrm on one store.

Node1's fence device is a real BMC (OpenIPMI ipmi_sim). The test plays the physics the
machine cannot: when node1's BMC powers node1 off, node1's service processes die before
the BMC answers (tests/daemons/power_cut.py). The
service is a ``dummy:`` resource: a real process per running copy, so "never twice" is
checked on the processes themselves, every 50 ms, for the whole test.
"""

from __future__ import annotations

import json
import os
import re
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
from hafence.simdevices.ipmi_sim import IpmiSim
from hafence.simdevices.ipmi_sim import available as ipmi_sim_available
from hafence.store import EmbeddedStore
from tests.daemons import power_cut
from tests.daemons.reaper import kill_tagged, tagged_env

NODES = ("node1", "node2", "node3")
# self-fencing rule: lease 6 > watchdog 3 + hardware 2 (a mux configured so) + store 0.5
TIMINGS = ["--interval", "0.5", "--lease-ttl", "6", "--watchdog-timeout", "3",
           "--fence-delay", "2", "--node-timeout", "2", "--watchdog-hw-timeout", "2"]  # fmt: skip
SID = "dummy:web"

pytestmark = pytest.mark.skipif(not ipmi_sim_available(), reason="ipmi_sim not installed")


def _dummy_pid(state_dir: Path) -> int | None:
    """The live dummy:web process recorded under a node's state dir, if any."""
    try:
        pid = int((state_dir / "dummy" / "web.pid").read_text().split()[0])
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if SID.encode() in cmd[0].split() and stat not in ("Z", "X") else None


class Cluster:
    def __init__(self, tmp: Path, bmc: IpmiSim) -> None:
        self.tmp = tmp
        self.store_dir = tmp / "ha"
        self.bmc = bmc
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.max_copies = 0
        self.copies_seen: list[tuple[float, dict[str, int]]] = []
        self.node1_powered = True
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        power_cut.install(bmc, f"{shlex.quote(str(self.state_dir('node1')))}/dummy/*.pid")

    def state_dir(self, node: str) -> Path:
        return self.tmp / "state" / node

    def fence_cfg(self, password: str, **extra: Any) -> Path:
        pw = self.tmp / "bmc.pw"
        pw.write_text(password + "\n")
        pw.chmod(0o600)
        opts = self.bmc.driver_options(**extra)
        opts.pop("password")
        args = " ".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in opts.items())
        cfg = self.tmp / "fence.cfg"
        cfg.write_text(f"device bmc1 ipmi {args} password_file={pw}\nconnect bmc1 node=node1\n")
        cfg.chmod(0o600)
        return cfg

    def start(self, fence_cfg: Path) -> None:
        py = sys.executable
        for node in NODES:
            common = ["--node", node, "--store", str(self.store_dir), "--no-watchdog", *TIMINGS]
            crm = [py, "-c", "from hafence.daemons import crm_main; crm_main()", *common,
                   "--fence-config", str(fence_cfg)]  # fmt: skip
            lrm = [py, "-c", "from hafence.daemons import lrm_main; lrm_main()", *common,
                   "--state-dir", str(self.state_dir(node)),
                   "--shutdown-flag", str(self.tmp / f"{node}.shutdown")]  # fmt: skip
            self.procs[node] = [
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=tagged_env(str(self.tmp)),
                                 stderr=open(self.tmp / f"{node}-{role}.log", "wb"))
                for argv, role in ((crm, "crm"), (lrm, "lrm"))
            ]  # fmt: skip
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self._look()
            except Exception as exc:  # a watcher that died would see no copy at all: say so
                self.copies_seen.append((time.monotonic(), {"watcher error": repr(exc)}))
            time.sleep(0.05)

    def _look(self) -> None:
        if self.node1_powered and self.bmc.power == "off":
            # node1 lost power: everything on it dies
            self.node1_powered = False
            pid = _dummy_pid(self.state_dir("node1"))
            if pid:
                os.kill(pid, signal.SIGKILL)
        copies = {n: p for n in NODES if (p := _dummy_pid(self.state_dir(n)))}
        if len(copies) > self.max_copies:
            self.max_copies = len(copies)
            self.copies_seen.append((time.monotonic(), copies))

    def kill_daemons(self, node: str) -> None:
        for p in self.procs[node]:
            p.send_signal(signal.SIGKILL)
            p.wait()

    def stop(self) -> None:
        self._stop.set()
        for procs in self.procs.values():
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
        kill_tagged(str(self.tmp))  # the services too, also one no pid file names yet

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("node*.log")))

    def ha(self, *args: str) -> Any:
        return CliRunner().invoke(ha_manager, ["--store", str(self.store_dir), *args])

    def where(self) -> str | None:
        running = [n for n in NODES if _dummy_pid(self.state_dir(n))]
        # a sample like the watcher's: a copy that where() saw and the watcher (asleep, or
        # waiting for a core) did not is still a copy seen; max_copies == 1 then holds
        self.max_copies = max(self.max_copies, len(running))
        assert len(running) <= 1, f"{SID} runs on {running}"
        return running[0] if running else None

    def service_status(self) -> dict[str, Any]:
        ms = EmbeddedStore(self.store_dir).read_manager_status()
        return (ms.get("service_status") or {}).get(SID, {})


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with IpmiSim(workdir=tmp_path / "bmc") as bmc:
        c = Cluster(tmp_path, bmc)
        try:
            yield c
        finally:
            c.stop()


def _bring_up(
    c: Cluster, bmc_password: str, policy: str = "conditional", **fence_opts: Any
) -> None:
    store = EmbeddedStore(c.store_dir)
    store.write_datacenter({"ha": {"shutdown_policy": policy}})
    c.start(c.fence_cfg(bmc_password, **fence_opts))
    wait_for(lambda: set(store.lrm_nodes()) >= set(NODES), 30, "all LRMs to report")
    r = c.ha("add", SID, "--node", "node1")
    assert r.exit_code == 0, r.output
    wait_for(lambda: c.where() == "node1", 30, f"{SID} to start on node1")
    assert c.service_status().get("state") == "started"


def test_dead_node_is_fenced_through_its_bmc_before_its_service_moves(cluster: Cluster) -> None:
    c = cluster
    _bring_up(c, c.bmc.password)
    # the LRM writes its state at the end of the round whose worker started the service
    # (ten rounds of --interval 0.5 at most)
    wait_for(lambda: "lrm node1 (active, " in c.ha("status").output, 10 * 0.5, "node1's LRM active")
    status = c.ha("status")
    assert "service dummy:web (node1, started)" in status.output, status.output
    assert status.output.startswith("quorum OK\n"), status.output
    assert re.search(r"^master node[123] \(active, ", status.output, re.M), status.output

    c.kill_daemons("node1")  # the HA stack of node1 dies; its service process lives on
    wait_for(lambda: c.where() not in (None, "node1"), 60, f"{SID} to be recovered")

    assert c.bmc.power == "off"
    assert c.max_copies == 1, c.copies_seen
    log = c.log()
    confirmed = log.index("fencing: node 'node1' confirmed off")
    acked = log.index("fencing: acknowledged - got agent lock for node 'node1'")
    recovered = log.index(f"recover service '{SID}' from fenced node 'node1'")
    assert confirmed < acked < recovered
    assert c.bmc.password not in log
    new_node = c.where()
    wait_for(lambda: f"service {SID} ({new_node}, started)" in c.ha("status").output, 10,
             "ha-manager status to show the new node")  # fmt: skip


def test_failing_fence_keeps_the_service_fenced_and_retries(cluster: Cluster) -> None:
    c = cluster
    _bring_up(c, "not-the-password")
    c.kill_daemons("node1")
    wait_for(lambda: c.service_status().get("state") == "fence", 30, f"{SID} in fence")
    wait_for(lambda: c.log().count("hardware fence of node 'node1' failed") >= 3, 60,
             "three failed fence attempts")  # fmt: skip
    time.sleep(7)  # past the agent lock's lease: only the hardware fence holds it back
    assert c.service_status().get("state") == "fence"
    assert c.where() == "node1"  # never started elsewhere; node1's copy still runs
    assert c.bmc.power == "on"
    assert c.max_copies == 1
    log = c.log()
    assert "auth_failed" in log and "recover service" not in log
    assert "not-the-password" not in log


def test_stuck_bmc_keeps_the_service_fenced_until_it_really_powers_off(cluster: Cluster) -> None:
    c = cluster
    _bring_up(c, c.bmc.password, power_timeout=1.0)
    c.bmc.set_stuck()  # the BMC accepts 'power off' and the node stays on
    c.kill_daemons("node1")
    wait_for(lambda: c.log().count("hardware fence of node 'node1' failed") >= 2, 60,
             "two failed fence attempts")  # fmt: skip
    assert c.service_status().get("state") == "fence"
    assert c.where() == "node1" and c.bmc.power == "on"
    assert "still_on" in c.log() and "recover service" not in c.log()

    c.bmc.set_stuck(False)  # the BMC heals: the next retry powers node1 off for real
    wait_for(lambda: c.where() not in (None, "node1"), 60, f"{SID} to be recovered")
    assert c.bmc.power == "off"
    assert c.max_copies == 1, c.copies_seen
    log = c.log()
    last_failure = log.rindex("hardware fence of node 'node1' failed")
    confirmed = log.index("fencing: node 'node1' confirmed off")
    recovered = log.index(f"recover service '{SID}' from fenced node 'node1'")
    assert last_failure < confirmed < recovered


def test_node_shutdown_with_migrate_policy_moves_the_service_first(cluster: Cluster) -> None:
    c = cluster
    _bring_up(c, c.bmc.password, policy="migrate")
    (c.tmp / "node1.shutdown").write_text("shutdown\n")  # what systemd would report
    lrm = c.procs["node1"][1]
    lrm.send_signal(signal.SIGTERM)
    assert lrm.wait(timeout=60) == 0  # exits once no service is assigned to its node
    # As in Proxmox: node1's LRM stopped the service and left once the master had placed
    # it elsewhere; the target's LRM starts it on its next round. That round comes
    # within the node timeout (an LRM missing it would count as offline), and starting a
    # dummy takes one round.
    target = c.service_status().get("node")
    assert target in ("node2", "node3") and c.where() in (None, target)
    node1_log = (c.tmp / "node1-lrm.log").read_text()
    moved = node1_log.index(f"service {SID} - end relocate to node '{target}'")
    assert moved < node1_log.index("exit (loop end)")
    interval = float(TIMINGS[TIMINGS.index("--interval") + 1])
    node_timeout = float(TIMINGS[TIMINGS.index("--node-timeout") + 1])
    wait_for(lambda: c.where() == target, node_timeout + interval, f"{SID} to run on {target}")
    assert c.max_copies == 1
    log = c.log()
    assert "got shutdown request with shutdown policy 'migrate'" in log
    assert "shutdown LRM, doing maintenance, removing this node from active list" in log
    assert "node 'node1': state changed from 'online' => 'maintenance'" in log
    assert c.bmc.power == "on"  # a clean shutdown is no failure: nobody fences node1
    assert "FENCE" not in log


# -- a damaged file never stops HA ----------------------------------------------------------


def _new_master_after(c: Cluster, damage: Any) -> None:
    """Freeze the master, damage the file, kill it and node1: a new master starts from
    the damaged file and must still recover node1's service."""
    store = EmbeddedStore(c.store_dir)
    master = store.read_manager_status()["master_node"]
    crm = c.procs[master][0]
    crm.send_signal(signal.SIGSTOP)  # it can no longer repair the file with its next write
    damage(c.store_dir / "manager_status")
    crm.send_signal(signal.SIGKILL)
    crm.wait()
    c.kill_daemons("node1")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
                     id="truncated"),
        pytest.param(lambda p: p.write_text(json.dumps({**json.loads(p.read_text()),
                                                        "node_status": 5})),
                     id="node_status-not-an-object"),
    ],
)  # fmt: skip
def test_a_damaged_manager_status_is_rebuilt_by_the_next_master(
    cluster: Cluster, damage: Any
) -> None:
    c = cluster
    _bring_up(c, c.bmc.password)
    _new_master_after(c, damage)
    wait_for(lambda: c.where() not in (None, "node1"), 90, f"{SID} to be recovered")
    assert c.max_copies == 1, c.copies_seen
    log = c.log()
    assert "manager status damaged" in log and "rebuilt the manager status" in log
    confirmed = log.index("fencing: node 'node1' confirmed off")
    assert confirmed < log.index(f"recover service '{SID}' from fenced node 'node1'")
    ms = EmbeddedStore(c.store_dir).read_manager_status()  # repaired by the new master
    assert isinstance(ms["node_status"], dict) and ms["service_status"][SID]["state"] == "started"


def test_damaged_config_files_never_stop_a_recovery(cluster: Cluster) -> None:
    c = cluster
    _bring_up(c, c.bmc.password)
    d = c.store_dir
    # a byte that is not UTF-8 in comments; a parse error in another service's section
    (d / "resources.cfg").write_bytes(
        b"# caf\xe9\n" + (d / "resources.cfg").read_bytes() + b"\ndummy: other\n\tstate bogus\n"
    )
    (d / "rules.cfg").write_bytes(b"# r\xe8gles\n")
    dc = json.loads((d / "datacenter.cfg").read_text())
    (d / "datacenter.cfg").write_bytes(json.dumps(dc).encode()[:-1] + b', "note": "\xff"}')
    c.kill_daemons("node1")
    wait_for(lambda: c.where() not in (None, "node1"), 60, f"{SID} to be recovered")
    assert c.max_copies == 1, c.copies_seen
    log = c.log()
    assert "got unexpected error" not in log, log[-3000:]
    assert "is not UTF-8, read as U+FFFD" in log and "service config unreadable" in log
    kept = sorted(d.glob("resources.cfg.damaged-*"))  # the broken edit is kept aside
    assert kept and b"dummy: other" in kept[0].read_bytes()
    conf = EmbeddedStore(d).read_resources()
    assert conf[SID]["node"] == c.where()


def test_fence_ack_recovers_a_node_whose_bmc_died_with_it(cluster: Cluster) -> None:
    c = cluster
    _bring_up(c, "not-the-password")  # its fence can never succeed
    c.kill_daemons("node1")
    pid = _dummy_pid(c.state_dir("node1"))
    assert pid
    os.kill(pid, signal.SIGKILL)  # node1 lost power, BMC and all
    wait_for(lambda: c.log().count("hardware fence of node 'node1' failed") >= 2, 60,
             "two failed fence attempts")  # fmt: skip
    r = c.ha("crm-command", "fence-ack", "node1", "--yes")
    assert r.exit_code == 0, r.output
    wait_for(lambda: c.where() not in (None, "node1"), 60, f"{SID} to be recovered")
    assert c.max_copies == 1, c.copies_seen
    log = c.log()
    acked = log.index("fencing: node 'node1' confirmed off by hand by ")
    assert acked < log.index(f"recover service '{SID}' from fenced node 'node1'")
