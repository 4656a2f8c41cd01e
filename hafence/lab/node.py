"""One lab node's processes: its boot, its daemons (what systemd does), its death.

A node boots like a Debian host with hafence installed: after ``boot_delay`` (firmware,
kernel) its etcd member, ``hafence-watchdog-mux`` and its ``web`` server (the TCP service
behind the lab's service address, :mod:`hafence.lab.web`) start; once the mux answers,
``hafence-lrm`` and ``hafence-crm`` follow (they require the mux). The LRM, CRM, etcd and
web server are restarted after ``restart_delay`` when they fail (systemd's
Restart=on-failure); the mux never is (Restart=no: a mux that died owes its node a reset).

A boot starts from what a real reboot leaves: ``/run`` is empty (the mux's socket and
its active marker, the watchdog hardware's state), services' pid files are gone; the
etcd data, the fence history and the logs stay.

Death is the whole namespace at once: every process in it gets SIGKILL, in rounds until
none is left (a fork racing the first round dies in the next one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hafence.lab import etcd, web
from hafence.lab.events import EventLog
from hafence.lab.inbox import METRICS_PORTS
from hafence.lab.layout import LabError, Layout
from hafence.lab.network import Network
from hafence.lab.timings import LabTimings

DAEMONS = ("etcd", "mux", "lrm", "crm", "web")
RESTARTED = ("etcd", "lrm", "crm", "web")  # Restart=on-failure; the mux is Restart=no
USAGE_ERROR = 2  # a daemon that refused its options exits so (click); not restarted
# Environment a node's processes do not inherit from whoever started the lab.
_SCRUB = (
    "HAFENCE_WATCHDOG_FAKE",
    "HAFENCE_STORE",
    "HAFENCE_HA_DIR",
    "HAFENCE_FENCE_CFG",
    "HAFENCE_OCF_CFG",
)


def executable(name: str) -> str:
    """A console script of this installation (the venv's own first)."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise LabError(f"{name} not found (pip install hafence)")
    return found


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Node:
    def __init__(
        self, layout: Layout, name: str, timings: LabTimings, net: Network, events: EventLog
    ) -> None:
        self.layout = layout
        self.name = name
        self.timings = timings
        self.net = net
        self.events = events
        self.state = "off"  # off | booting | starting | up | halted
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.held: set[str] = set()  # daemons a fault keeps stopped (etcd-stop)
        self.frozen: set[str] = set()  # frozen daemons, or {"node"}
        self.boot_at = 0.0
        self.boots = 0
        self.restart_at: dict[str, float] = {}
        self.restarting: set[str] = set()  # clean restarts waiting for the old one to exit

    # -- command lines -------------------------------------------------------------------
    def argv(self, daemon: str) -> list[str]:
        lay, t, node = self.layout, self.timings, self.name
        sock = str(lay.mux_socket(node))
        if daemon == "etcd":
            return etcd.member_argv(lay, node, t)
        if daemon == "web":
            return [sys.executable, "-m", "hafence.lab.web", "--addr", lay.vip_addr,
                    "--port", str(web.PORT), "--node", node]  # fmt: skip
        if daemon == "mux":  # the fake watchdog hardware is chosen here, and only here
            return [
                executable("hafence-watchdog-mux"),
                "--fake-device",
                str(lay.watchdog_state(node)),
                "--socket",
                sock,
                "--module",
                "softdog",
                "--timeout",
                str(t.mux_timeout),
                "--feed-interval",
                f"{t.feed_interval:g}",
                "--no-noboot",
            ]
        common = [
            "--node",
            node,
            "--store",
            lay.store_url(node),
            "--watchdog-socket",
            sock,
            *t.daemon_args(),
            "--metrics",  # on the node's own address: the host scrapes it over the bridge
            f"{lay.node_addr(node)}:{METRICS_PORTS.get(daemon, 0)}",
        ]
        nd = lay.node_dir(node)
        if daemon == "lrm":
            return [
                executable("hafence-lrm"),
                *common,
                "--state-dir",
                str(nd / "resources"),
                "--shutdown-flag",
                str(nd / "shutdown"),
            ]
        if daemon == "crm":
            return [
                executable("hafence-crm"),
                *common,
                "--fence-config",
                str(lay.fence_cfg),
                "--fence-history",
                str(nd / "fence-history.jsonl"),
                "--notify-config",
                str(lay.state_dir / "notify.cfg"),
            ]
        raise LabError(f"unknown daemon '{daemon}' (known: {', '.join(DAEMONS)})")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env["HAFENCE_WRITER_DIR"] = str(self.layout.writer_dir)
        env["HAFENCE_OCF_CFG"] = str(self.layout.ocf_cfg)
        return env

    def spawn(self, daemon: str) -> None:
        log_dir = self.layout.log_dir(self.name)
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{daemon}.log", "ab") as log:
            proc = subprocess.Popen(
                [*self.net.nsenter(self.name), *self.argv(daemon)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
            )
        self.procs[daemon] = proc
        self.events.add("start", self.name, daemon=daemon, pid=proc.pid, boot=self.boots)

    def running(self, daemon: str) -> bool:
        p = self.procs.get(daemon)
        return p is not None and p.poll() is None

    def pid(self, daemon: str) -> int | None:
        return self.procs[daemon].pid if self.running(daemon) else None

    # -- life cycle ----------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.state in ("starting", "up")

    def power_on(self, now: float) -> None:
        if self.state in ("off", "halted"):
            self.state = "booting"
            self.boot_at = now + self.timings.boot_delay

    def die(self, why: str) -> None:
        """Every process of the node dies at once (power loss, reset, crash)."""
        signal_all([p.pid for p in self.procs.values()], signal.SIGKILL)  # even mid-nsenter
        for _ in range(100):
            pids = self.net.pids(self.name)
            if not pids:
                break
            signal_all(pids, signal.SIGKILL)
            time.sleep(0.01)
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        self.procs.clear()
        self.net.reset_addresses(self.name)  # what agents added lived in its memory
        self.frozen.clear()
        self.restart_at.clear()
        self.restarting.clear()
        self.state = "off"
        self.events.add("died", self.name, why=why)

    def _boot(self) -> None:
        lay, node = self.layout, self.name
        self.boots += 1
        shutil.rmtree(lay.node_run_dir(node), ignore_errors=True)
        lay.node_run_dir(node).mkdir(parents=True)
        for pidfile in (lay.node_dir(node) / "resources").glob("*/*.pid"):
            pidfile.unlink(missing_ok=True)
        (lay.node_dir(node) / "shutdown").unlink(missing_ok=True)
        stamp = f"---- hafence lab: {node} boot {self.boots} at {time.ctime()} ----\n"
        lay.log_dir(node).mkdir(parents=True, exist_ok=True)
        for d in DAEMONS:
            with open(lay.log_dir(node) / f"{d}.log", "a") as fh:
                fh.write(stamp)
        self.events.add("boot", node, boot=self.boots)
        for d in ("etcd", "mux", "web"):
            if d not in self.held:
                self.spawn(d)
        self.state = "starting"

    def step(self, now: float) -> None:
        """Advance the boot, reap what exited, restart what systemd would."""
        for d, p in list(self.procs.items()):
            rc = p.poll()
            if rc is None:
                continue
            del self.procs[d]
            self.events.add("exit", self.name, daemon=d, rc=rc)
            if d in self.restarting:
                self.restarting.discard(d)
                self.restart_at[d] = now
            elif d in ("lrm", "crm") and rc == USAGE_ERROR:  # the units' RestartPreventExitStatus
                self.events.add("refused", self.name, daemon=d, rc=rc)
            elif d in RESTARTED and rc != 0 and d not in self.held:
                self.restart_at[d] = now + self.timings.restart_delay
        if self.state == "booting" and now >= self.boot_at:
            self._boot()
        if self.state == "starting":
            mux_gone = "mux" not in self.procs
            if self.layout.mux_socket(self.name).exists() or mux_gone:
                for d in ("lrm", "crm"):
                    if d not in self.held:
                        self.spawn(d)
                self.state = "up"
        if self.state == "up":
            for d, at in list(self.restart_at.items()):
                if now >= at and d not in self.procs and d not in self.held:
                    del self.restart_at[d]
                    self.spawn(d)

    # -- faults ----------------------------------------------------------------------------
    def freeze(self, daemon: str | None = None) -> None:
        """SIGSTOP the whole node (a hung kernel) or one daemon (a long GC pause)."""
        if daemon is None:
            for _ in range(3):  # a process forked meanwhile is stopped in the next round
                signal_all(self.net.pids(self.name), signal.SIGSTOP)
            self.frozen.add("node")
        else:
            pid = self.pid(daemon)
            if pid is None:
                raise LabError(f"{self.name}: {daemon} is not running")
            signal_all([pid], signal.SIGSTOP)
            self.frozen.add(daemon)
        self.events.add("freeze", self.name, daemon=daemon)

    def thaw(self) -> None:
        if self.frozen:
            signal_all(self.net.pids(self.name), signal.SIGCONT)
            self.frozen.clear()
            self.events.add("thaw", self.name)

    def kill_daemon(self, daemon: str) -> None:
        """SIGKILL one daemon; systemd's rules decide whether it comes back."""
        pid = self.pid(daemon)
        if pid is None:
            raise LabError(f"{self.name}: {daemon} is not running")
        signal_all([pid], signal.SIGKILL)

    def restart_daemon(self, daemon: str) -> None:
        """systemctl restart: SIGTERM, and start it again once it has exited."""
        pid = self.pid(daemon)
        if pid is None:
            raise LabError(f"{self.name}: {daemon} is not running")
        self.restarting.add(daemon)
        signal_all([pid], signal.SIGTERM)

    def hold(self, daemon: str) -> None:
        """Stop a daemon and keep it stopped (etcd-stop) until :meth:`release`."""
        self.held.add(daemon)
        pid = self.pid(daemon)
        if pid is not None:
            signal_all([pid], signal.SIGKILL)

    def release(self, daemon: str, now: float) -> None:
        if daemon in self.held:
            self.held.discard(daemon)
            if self.alive and daemon not in self.procs:
                self.restart_at[daemon] = now
