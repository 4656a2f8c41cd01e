"""The lab from the outside: bring it up, ask it, break it, heal it, take it down.

:class:`Lab` is what ``hafence lab`` and the tests use. It starts the supervisor
(:mod:`hafence.lab.supervisor`), talks to it over its control socket, and reads the
cluster's own view (etcd, from the host side of the bridge)::

    lab = Lab(Path("/tmp/mylab"))
    lab.up(nodes=3, timings="fast")     # returns once the cluster is ready
    lab.fault("node2", "kill")
    lab.cluster()                       # quorum, master, node and service states
    lab.heal()
    lab.down()                          # nothing left behind
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hafence.ha.realenv import node_alive_lease
from hafence.lab import cleanup
from hafence.lab.checker import running_copies
from hafence.lab.etcd import member_health
from hafence.lab.events import records
from hafence.lab.layout import (
    MAX_NODES,
    MIN_NODES,
    LabError,
    Layout,
    default_state_dir,
    prefix_for,
)
from hafence.lab.network import choose_subnet, missing_tools, netns_supported
from hafence.lab.node import executable
from hafence.lab.timings import LabTimings, preset
from hafence.store import StoreUnavailable
from hafence.store.etcd import EtcdStore

DEMO = ("writer:demo",)  # what `hafence lab up` runs to try a failover on


# the lab's devices beyond hafence's own dependencies: the switch and the operator inbox
LAB_MODULES = ("snmpsim", "pysmi", "aiosmtpd")


def missing_modules(names: Iterable[str] = LAB_MODULES) -> list[str]:
    """Python packages of ``names`` that are not installed (the ``lab`` extra)."""
    return [n for n in names if importlib.util.find_spec(n) is None]


class Lab:
    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.state_dir = Path(state_dir or default_state_dir()).resolve()
        self._layout: Layout | None = None
        self._proc: subprocess.Popen[bytes] | None = None  # a supervisor this object started

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            self._layout = Layout.load(self.state_dir)
        return self._layout

    @property
    def timings(self) -> LabTimings:
        return preset(self.layout.timings)

    def exists(self) -> bool:
        return self.layout_file_exists() and self.supervisor_pid() is not None

    def layout_file_exists(self) -> bool:
        return (self.state_dir / "lab.json").exists()

    def supervisor_pid(self) -> int | None:
        try:
            pid = int(self.layout.runtime()["supervisor"]["pid"])
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (LabError, KeyError, ValueError, TypeError, OSError):
            return None
        return pid if cleanup.SUPERVISOR_MODULE.encode() in cmd else None

    # -- up and down -----------------------------------------------------------------------
    def up(
        self,
        nodes: int = 3,
        timings: str = "fast",
        *,
        services: Iterable[str] = DEMO,
        timeout: float | None = None,
        progress: Callable[[str], None] | None = None,
        keep: bool = False,
    ) -> Layout:
        """Build the lab, add ``services`` (spread over the nodes) and return once the
        cluster is ready: etcd quorum, a master, every LRM reporting, every service
        running once. (An idle cluster elects no master, as Proxmox's does not.) On
        failure the lab is taken down again (``keep``: left as it is, for its logs)."""
        if not MIN_NODES <= nodes <= MAX_NODES:
            raise LabError(f"--nodes must be {MIN_NODES} to {MAX_NODES}")
        t = preset(timings)
        why = netns_supported()
        if why:
            raise LabError(why)
        missing = missing_tools()
        if missing:
            raise LabError(f"missing: {', '.join(missing)} (bash scripts/install.sh installs them)")
        if missing := missing_modules():
            raise LabError(f"missing Python packages: {', '.join(missing)} "
                           "(pip install 'hafence[lab]')")  # fmt: skip
        if self.state_dir.is_dir() and any(self.state_dir.iterdir()):
            if not self.layout_file_exists():  # down removes the whole directory
                raise LabError(f"{self.state_dir} is not empty and holds no lab: pick another")
        if self.layout_file_exists():
            if self.supervisor_pid() is not None:
                raise LabError(f"a lab is already up in {self.state_dir} (hafence lab down)")
            self.down()  # a crashed one: sweep it first
        prefix = prefix_for(self.state_dir)
        cleanup.sweep(self.state_dir, prefix)  # same prefix, no state file: left by a crash
        names = tuple(f"node{i}" for i in range(1, nodes + 1))
        layout = Layout(self.state_dir, prefix, choose_subnet(prefix), names, t.name)
        layout.save()
        self._layout = layout
        say = progress or (lambda _msg: None)
        say(
            f"lab {prefix}: {nodes} nodes on {layout.subnet}.0/24, timings '{t.name}', "
            f"state in {self.state_dir}"
        )
        with open(layout.supervisor_log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", cleanup.SUPERVISOR_MODULE, str(self.state_dir)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this command
            )
        try:
            deadline = time.monotonic() + (timeout or 60 + 6 * t.settle_bound())
            self.wait_ready(deadline - time.monotonic(), proc=proc, progress=say, master=False)
            for i, sid in enumerate(services):
                self.ha_manager("add", sid, "--node", names[i % len(names)])
                say(f"added {sid} on {names[i % len(names)]}")
            self.wait_ready(
                deadline - time.monotonic(), proc=proc, progress=say, master=bool(services)
            )
        except BaseException:
            if not keep:
                self.down()
            raise
        self._proc = proc  # reaped by down() if this process lives that long
        return layout

    def down(self) -> list[str]:
        """Stop the supervisor (it tears the lab down) and sweep what is left; returns
        what the sweep found (empty after a clean shutdown)."""
        if not self.layout_file_exists():
            prefix = prefix_for(self.state_dir)
        else:
            prefix = self.layout.prefix
            pid = self.supervisor_pid()
            if pid is not None:
                with contextlib.suppress(LabError):
                    self.call("shutdown")
                deadline = time.monotonic() + 60
                while self.supervisor_pid() is not None and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self.supervisor_pid() == pid:  # still ours (not a reused pid): hung
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
            self._proc = None
        found = cleanup.sweep(self.state_dir, prefix)
        left = cleanup.leftovers(self.state_dir, prefix)
        if left:
            raise LabError(f"could not remove: {'; '.join(left)}")
        self._layout = None
        return found

    # -- the control socket ------------------------------------------------------------------
    def call(self, op: str, timeout: float = 60.0, **kw: Any) -> dict[str, Any]:
        path = str(self.layout.control_socket)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(path)
                s.sendall(json.dumps({"op": op, **kw}).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError as exc:
            raise LabError(f"lab supervisor not answering on {path}: {exc}") from None
        try:
            reply = json.loads(data)
        except ValueError:
            raise LabError(f"lab supervisor: bad reply {data[:200]!r}") from None
        if not reply.pop("ok", False):
            raise LabError(reply.get("error", "request failed"))
        return reply

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def fault(self, node: str, kind: str, **opts: Any) -> dict[str, Any]:
        return self.call("fault", node=node, kind=kind, opts=opts).get("info", {})

    def heal(self, nodes: list[str] | None = None) -> None:
        self.call("heal", nodes=nodes)

    # -- the cluster's view ---------------------------------------------------------------------
    def store(self, healthy: dict[str, bool] | None = None, timeout: float = 2.0) -> EtcdStore:
        """The lab's HA store from the host; healthy members are asked first (a dead
        member's address costs a connect timeout per request)."""
        lay = self.layout
        order = sorted(lay.nodes, key=lambda n: not (healthy or {}).get(n, True))
        endpoints = [f"http://{lay.node_addr(n)}:2379" for n in order]
        return EtcdStore(endpoints, lay.cluster, timeout=timeout)

    def etcd_health(self) -> dict[str, bool]:
        with ThreadPoolExecutor(len(self.layout.nodes)) as pool:
            ok = pool.map(lambda n: member_health(self.layout, n, 0.5), self.layout.nodes)
            return dict(zip(self.layout.nodes, ok, strict=True))

    def cluster(self) -> dict[str, Any]:
        """What etcd says: quorum, master, node states, LRMs, services."""
        lay = self.layout
        out: dict[str, Any] = {"etcd": self.etcd_health()}
        store = self.store(out["etcd"])
        try:
            ms = store.read_manager_status() or {}
            out["manager_lock"] = store.lease_owner("ha_manager_lock")
            out["lrm"] = {n: store.read_lrm_status(n) or {} for n in lay.nodes}
            # an unchanged LRM status is rewritten only now and then: its lease is the pulse
            out["alive"] = {n: store.lease_owner(node_alive_lease(n)) == n for n in lay.nodes}
            out["resources"] = store.read_resources()
            out["quorate"] = True
        except StoreUnavailable as exc:
            out["quorate"] = False
            out["error"] = str(exc)
            ms = {}
        out["master"] = ms.get("master_node")
        out["node_status"] = ms.get("node_status", {})
        out["service_status"] = ms.get("service_status", {})
        return out

    def not_ready(self, view: dict[str, Any] | None = None, master: bool = True) -> str | None:
        """None when the cluster is ready, else what it still waits for. ``master``:
        also a master, and every service running once where the master put it."""
        view = view or self.cluster()
        down = [n for n, ok in view["etcd"].items() if not ok]
        if down:
            return f"etcd members not healthy: {', '.join(down)}"
        if not view["quorate"]:
            return f"no quorum: {view.get('error')}"
        booted = self._last_boots()
        # An LRM stamps its status in whole seconds (as Proxmox does): one written in the
        # second the node booted is since the boot. An idle LRM may not write it again for
        # a long while, so comparing with the fraction made it stale until then.
        stale = [
            n
            for n, s in view["lrm"].items()
            if not view["alive"].get(n) or (s.get("timestamp") or 0) < int(booted.get(n, 0))
        ]
        if stale:
            return f"LRMs not reporting: {', '.join(stale)}"
        if not master:
            return None
        if not view["master"] or view.get("manager_lock") != view["master"]:
            return "no master elected yet"
        offline = [n for n in self.layout.nodes if view["node_status"].get(n) != "online"]
        if offline:
            return f"nodes not online for the master: {', '.join(offline)}"
        copies = running_copies(self.layout)
        for sid, conf in sorted(view["resources"].items()):
            if conf.get("state", "started") != "started":
                continue
            ss = view["service_status"].get(sid, {})
            where = copies.get(sid, [])
            if ss.get("state") != "started" or where != [ss.get("node")]:
                return (
                    f"service {sid}: {ss.get('state', 'queued')} on {ss.get('node')}, "
                    f"running on {', '.join(where) or 'no node'}"
                )
        return None

    def _last_boots(self) -> dict[str, float]:
        """When each node last booted (wall time): its LRM reports after that."""
        return {rec["node"]: rec["t"] for rec in records(self.layout.events_file, "boot")}

    def _refused_daemons(self) -> list[str]:
        """A daemon that refused its options (exit 2) is not restarted; say what it said."""
        out = []
        for rec in records(self.layout.events_file, "refused"):
            node, daemon = rec["node"], rec["daemon"]
            log_file = self.layout.log_dir(node) / f"{daemon}.log"
            tail = log_file.read_text(errors="replace").strip().splitlines()[-6:]
            out.append(f"{node} {daemon} (exit {rec['rc']}, {log_file}):\n  " + "\n  ".join(tail))
        return out

    def wait_ready(
        self,
        timeout: float,
        *,
        proc: subprocess.Popen[bytes] | None = None,
        progress: Callable[[str], None] | None = None,
        master: bool = True,
    ) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if proc is not None and proc.poll() is not None:
                tail = self.layout.supervisor_log.read_text(errors="replace")[-3000:]
                raise LabError(f"lab supervisor exited ({proc.returncode}):\n{tail}")
            refused = self._refused_daemons()
            if refused:
                raise LabError("a daemon refused to start:\n" + "\n".join(refused))
            ready = self.layout.control_socket.exists()
            why = self.not_ready(master=master) if ready else "starting"
            if why is None:
                return
            if why != last and progress:
                progress(f"waiting: {why}")
            last = why
            if time.monotonic() > deadline:
                raise LabError(f"lab not ready after {timeout:.0f}s: {why}")
            time.sleep(0.5)

    # -- ha-manager ----------------------------------------------------------------------------
    def ha_manager_argv(self, args: list[str]) -> list[str]:
        """``ha-manager`` options for the lab's store (healthy etcd members first)."""
        healthy = self.etcd_health()
        first = next((n for n in self.layout.nodes if healthy[n]), None)
        return ["--store", self.layout.store_url(first), *args]

    def ha_manager(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``ha-manager`` as an admin would (a process of its own); its output."""
        argv = [executable("ha-manager"), *self.ha_manager_argv(list(args))]
        try:
            env = {**os.environ, "HAFENCE_OCF_CFG": str(self.layout.ocf_cfg)}
            out = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                env=env,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise LabError(f"ha-manager {' '.join(args)}: no answer in {timeout:.0f}s") from None
        if out.returncode != 0:
            raise LabError(f"ha-manager {' '.join(args)}: {out.stderr.strip() or out.stdout}")
        return out.stdout
