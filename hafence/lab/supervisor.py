"""The lab supervisor: the process that owns a running lab.

``hafence lab up`` starts it detached (``python -m hafence.lab.supervisor STATE_DIR``).
It builds the network, starts the BMCs and the switch, writes fence.cfg and its
secrets, then runs until told to stop: every tick it plays the physics
(:mod:`hafence.lab.physics`) and advances the nodes; between ticks it answers
requests on its control socket (one JSON line in, one out: ``status``, ``fault``,
``heal``, ``shutdown``). All state changes happen in this one process, in its one
event loop, so a fault never races a boot.

Shutdown (the ``shutdown`` request, SIGTERM or SIGINT) kills the nodes, stops the
peers, removes the network and the runtime directory; ``hafence lab down`` then sweeps
whatever a crash may have left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hafence.lab.bmc import Bmcs
from hafence.lab.cleanup import ORPHAN_HINT
from hafence.lab.events import EventLog
from hafence.lab.faults import Faults
from hafence.lab.inbox import Inbox, notify_cfg
from hafence.lab.layout import LabError, Layout, ocf_cfg
from hafence.lab.network import Network, sh
from hafence.lab.node import DAEMONS, Node
from hafence.lab.physics import Machines, Physics
from hafence.lab.switch import Switch
from hafence.lab.timings import preset
from hafence.store.atomic import write_atomic

TICK = 0.1
log = logging.getLogger("hafence.lab")


def write_secret(path: Path, value: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, value + "\n", mode=0o600)
    return str(path)


class Supervisor:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.timings = preset(layout.timings)
        self.events = EventLog(layout.events_file)
        self.net = Network(layout)
        self.rng = random.Random()
        password = secrets.token_hex(8)  # IPMI passwords are at most 20 bytes
        community = secrets.token_hex(12)
        self.password_file = write_secret(layout.secrets_dir / "bmc.pw", password)
        self.community_file = write_secret(layout.secrets_dir / "switch.community", community)
        self.bmcs = Bmcs(layout, password)
        self.switch = Switch(layout, community)
        self.nodes = {n: Node(layout, n, self.timings, self.net, self.events) for n in layout.nodes}
        self.machines = Machines(layout, self.nodes, self.bmcs, self.switch, self.net, self.events)
        self.physics = Physics(self.machines, self.rng)
        self.faults = Faults(self.machines, self.physics)
        self.inbox = Inbox(layout)
        self._stop = asyncio.Event()
        self.started = time.time()

    # -- building and tearing down ---------------------------------------------------------
    def build(self) -> None:
        lay = self.layout
        lay.run_dir.mkdir(parents=True, exist_ok=True)
        # where the lab's files are, for a sweep of this lab after its supervisor died
        # and its state directory is unknown (``hafence lab down --orphans``)
        (lay.run_dir / ORPHAN_HINT).write_text(f"{lay.state_dir.resolve()}\n")
        lay.writer_dir.mkdir(parents=True, exist_ok=True)
        for device_dir in (lay.switch_dir, *(lay.bmc_dir(n) for n in lay.nodes)):
            device_dir.mkdir(parents=True, mode=0o700)  # their configs hold the secrets
        self.net.create()
        bmc_ports = self.bmcs.start()
        switch_port = self.switch.start()
        cfg = self.bmcs.fence_cfg(self.password_file, self.timings)
        cfg += self.switch.fence_cfg(self.community_file, self.timings)
        write_atomic(lay.fence_cfg, cfg, mode=0o600)
        write_atomic(lay.ocf_cfg, ocf_cfg(lay), mode=0o644)
        write_atomic(lay.state_dir / "notify.cfg", notify_cfg(lay), mode=0o600)
        self.inbox.start()  # on the bridge's host address: after the network
        lay.save(
            supervisor={"pid": os.getpid(), "started": self.started},
            bmc_ports=bmc_ports,
            switch_port=switch_port,
        )
        self.events.add("lab_up", nodes=list(lay.nodes), timings=lay.timings)

    def teardown(self) -> None:
        for node in self.nodes.values():
            if node.state != "off" or node.procs:
                node.die("lab down")
        for step in (self.bmcs.stop, self.switch.stop, self.inbox.stop):
            with contextlib.suppress(Exception):
                step()
        for node in self.layout.nodes:
            sh("ip", "netns", "del", self.layout.netns(node), check=False)
            sh("ip", "link", "del", self.layout.veth(node), check=False)
        sh("ip", "link", "del", self.layout.bridge, check=False)
        shutil.rmtree(self.layout.run_dir, ignore_errors=True)
        self.events.add("lab_down")

    # -- requests ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        nodes = {}
        for name, n in self.nodes.items():
            nodes[name] = {
                "state": n.state,
                "boots": n.boots,
                "power": "on" if self.bmcs.powered(name) else "off",
                "link": "up" if self.net.link_up(name) else "down",
                "faults": self.faults.active(name),
                "daemons": {d: n.pid(d) for d in DAEMONS},
                "address": self.layout.node_addr(name),
            }
        return {"nodes": nodes, "pid": os.getpid(), "started": self.started}

    async def handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "status":
            return self.status()
        if op == "fault":
            node, kind = str(req.get("node")), str(req.get("kind"))
            opts = req.get("opts") or {}
            info = await self.faults.apply(node, kind, opts)
            self.events.add("fault", node, kind=kind, **opts)
            return {"info": info}
        if op == "heal":
            for node in req.get("nodes") or self.layout.nodes:
                await self.faults.heal(node)
                self.events.add("fault", node, kind="heal")
            return {}
        if op == "shutdown":
            self._stop.set()
            return {}
        raise LabError(f"unknown request '{op}'")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                reply = {"ok": True, **await self.handle_request(json.loads(line))}
            except LabError as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:  # a bug must not take the lab down with it
                log.exception("request %r failed", line)
                reply = {"ok": False, "error": f"internal error: {exc!r}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    # -- the loop ------------------------------------------------------------------------------
    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        sock = self.layout.control_socket
        sock.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._client, path=str(sock))
        os.chmod(sock, 0o600)
        try:
            while not self._stop.is_set():
                try:
                    await self.physics.step()
                except Exception:
                    log.exception("physics step failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), TICK)
        finally:
            server.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s lab-supervisor: %(message)s")
    layout = Layout.load(Path(args[0]))
    sup = Supervisor(layout)
    try:
        sup.build()
        asyncio.run(sup.serve())
    except LabError as exc:
        log.error("%s", exc)
        return 1
    finally:
        sup.teardown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
