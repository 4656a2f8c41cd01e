"""``hafence-watchdog-mux``: one watchdog device, many clients (the LRM, the CRM).

The mux loads the configured driver (``WATCHDOG_MODULE``, default softdog; see
:mod:`hafence.watchdog.config`), opens (arms) the device and feeds it every
``FEED_INTERVAL`` seconds -- but only while every connected client is alive. Clients
speak :mod:`hafence.watchdog.protocol` on a Unix socket (mode 0600, default
``/run/hafence/watchdog-mux.sock``) through :class:`hafence.watchdog.client.WatchdogClient`;
each sets its own timeout at connect. When a client misses its deadline or disconnects
without magic close ('V'), or the hardware refuses a keepalive, the mux logs it loudly
and stops feeding for good: the hardware expires and the node resets. SIGTERM/SIGINT are
refused (logged, the mux keeps running) while clients are connected or after a trip; with
no clients the mux magic-closes the device (disarms it) and exits 0.

Fake-device mode, for tests on machines without /dev/watchdog::

    hafence-watchdog-mux --fake-device /tmp/t/wd.json --socket /tmp/t/mux.sock \\
        --timeout 10 [--noboot]

(or ``$HAFENCE_WATCHDOG_FAKE=/tmp/t/wd.json``; logged as a warning at start). The mux
then runs the real code against :class:`hafence.watchdog.fake.FakeKernel` stored in that
state file; the test reads the same file (``FakeKernel(path).events()``) to see
keepalives, magic closes and resets. :class:`hafence.watchdog.muxproc.MuxProcess` starts
and stops such a mux.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from hafence.errors import ConfigError, HafenceError
from hafence.watchdog import protocol
from hafence.watchdog.config import DEFAULT_CONFIG, MuxConfig, load_config
from hafence.watchdog.device import Syscalls, WatchdogDevice
from hafence.watchdog.driver import WatchdogSettings
from hafence.watchdog.errors import WatchdogError
from hafence.watchdog.kernel import FAKE_ENV, choose_kernel

log = logging.getLogger("hafence.watchdog.mux")

MARKER_NAME = "watchdog-mux.active"


@dataclass
class Client:
    id: int
    name: str
    timeout: float
    deadline: float
    pid: int | None
    uid: int | None
    connected_at: float = field(default_factory=time.monotonic)
    last_feed: float = field(default_factory=time.monotonic)

    def label(self) -> str:
        return f"'{self.name}' (pid {self.pid})" if self.pid else f"'{self.name}'"


def _peercred(writer: asyncio.StreamWriter) -> tuple[int | None, int | None]:
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None, None
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


class Mux:
    """The multiplexer state machine around one opened :class:`WatchdogDevice`."""

    def __init__(
        self,
        device: WatchdogDevice,
        *,
        driver: str,
        socket_path: str,
        feed_interval: float = 1.0,
        marker: str | None = None,
    ) -> None:
        self.device = device
        self.driver = driver
        self.socket_path = socket_path
        self.marker = marker or marker_path(socket_path)
        self.feed_interval = feed_interval
        self.clients: dict[int, Client] = {}
        self.tripped: str | None = None
        self.last_hw_feed: float | None = None
        self.hw_feeds = 0
        self._next_id = 1
        self._stop = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        #: the device's timeout as armed: how long the node lives after the last keepalive
        self.hw_timeout = self._hw_timeout()

    # -- the active marker -----------------------------------------------------------------
    def _update_marker(self) -> None:
        """The marker exists while clients depend on the watchdog (or after a trip).

        A mux that dies in that state must not be restarted: a new one would re-arm and
        feed the device and so cancel the reset the dead clients are owed.
        """
        if self.clients or self.tripped:
            if not os.path.exists(self.marker):
                Path(self.marker).write_text(f"{os.getpid()}\n")
        else:
            Path(self.marker).unlink(missing_ok=True)

    # -- decisions -----------------------------------------------------------------------
    def trip(self, reason: str) -> None:
        """Stop feeding the hardware for good: the node resets when it expires."""
        if self.tripped is None:
            self.tripped = reason
            self._update_marker()
            log.critical(
                "%s - stop feeding watchdog %s: node will reset within %ss",
                reason,
                self.device.path,
                "?" if self.hw_timeout is None else self.hw_timeout,
            )

    def _hw_timeout(self) -> int | None:
        try:
            return self.device.get_timeout()
        except WatchdogError:
            return None

    def check_clients(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for c in list(self.clients.values()):
            if now > c.deadline:
                self.trip(
                    f"client {c.label()} expired: no feed for {now - c.last_feed:.1f}s "
                    f"(timeout {c.timeout:g}s)"
                )

    def feed_hardware(self) -> None:
        self.check_clients()
        if self.tripped:
            return
        try:
            self.device.keepalive()
        except WatchdogError as exc:
            # The hardware no longer takes our keepalives: we cannot vouch for the clients
            # any more. Stop for good and let it expire (Proxmox's mux logs and retries).
            self.trip(f"hardware keepalive failed: {exc}")
            return
        self.last_hw_feed = time.monotonic()
        self.hw_feeds += 1

    def request_stop(self, signame: str) -> None:
        if self.clients or self.tripped:
            names = ", ".join(c.label() for c in self.clients.values()) or "none"
            why = f"tripped ({self.tripped})" if self.tripped else f"active clients: {names}"
            log.error("got %s but refusing to stop: %s", signame, why)
            return
        log.info("got %s, no active clients - disarming watchdog and exiting", signame)
        self._stop.set()

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        dev: dict[str, Any] = {
            "path": self.device.path,
            "driver": self.driver,
            "identity": self.device.info.identity,
            "flags": self.device.info.flags,
            "nowayout": self.device.nowayout,
        }
        dev["timeout"] = self._hw_timeout()
        dev["timeleft"] = self.device.get_timeleft()
        overdue = [c.name for c in self.clients.values() if now > c.deadline]
        return {
            "pid": os.getpid(),
            "socket": self.socket_path,
            "device": dev,
            "feeding": self.tripped is None,
            "tripped": self.tripped,
            # past their deadline: the mux stops feeding at its next keepalive
            "overdue": overdue,
            "healthy": self.tripped is None and not overdue,
            "feed_interval": self.feed_interval,
            "hw_feeds": self.hw_feeds,
            "last_hw_feed_ago": None if self.last_hw_feed is None else now - self.last_hw_feed,
            "clients": [
                {
                    "id": c.id,
                    "name": c.name,
                    "pid": c.pid,
                    "uid": c.uid,
                    "timeout": c.timeout,
                    "remaining": c.deadline - now,
                    "overdue": now > c.deadline,
                    "last_feed_ago": now - c.last_feed,
                    "connected_for": now - c.connected_at,
                }
                for c in self.clients.values()
            ],
        }

    # -- connections ---------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client: Client | None = None
        closed_magic = False

        async def reply(text: str) -> None:
            writer.write(text.encode() + b"\n")
            await writer.drain()

        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break  # EOF
                except asyncio.LimitOverrunError:
                    await reply(f"ERR {protocol.E_PROTOCOL} line too long")
                    break
                words = raw.decode(errors="replace").split()
                cmd, args = (words[0], words[1:]) if words else ("", [])
                if cmd == "HELLO":
                    client = await self._hello(args, client, writer, reply)
                elif cmd == "FEED":
                    await self._feed(client, args, reply)
                elif cmd == "V":
                    if client is None:
                        await reply(f"ERR {protocol.E_STATE} not a client (HELLO first)")
                        continue
                    closed_magic = True
                    self.clients.pop(client.id, None)
                    self._update_marker()
                    log.info("client %s closed (magic close)", client.label())
                    await reply("OK closed")
                    break
                elif cmd == "STATUS":
                    await reply("OK " + json.dumps(self.status()))
                else:
                    await reply(f"ERR {protocol.E_PROTOCOL} unknown request {cmd[:32]!r}")
        except (ConnectionError, OSError):
            pass
        finally:
            if client is not None and not closed_magic and client.id in self.clients:
                del self.clients[client.id]
                self.trip(f"client {client.label()} disconnected without magic close")
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _hello(self, args: list[str], client: Client | None, writer: Any, reply: Any):
        if client is not None:
            await reply(f"ERR {protocol.E_STATE} already registered as '{client.name}'")
            return client
        if self.tripped:
            await reply(f"ERR {protocol.E_EXPIRED} watchdog tripped ({self.tripped})")
            return None
        try:
            name, timeout = args[0], float(args[1])
            if len(args) != 2:
                raise ValueError
        except (IndexError, ValueError):
            await reply(f"ERR {protocol.E_PROTOCOL} usage: HELLO <name> <timeout-seconds>")
            return None
        lo, hi = protocol.MIN_CLIENT_TIMEOUT, protocol.MAX_CLIENT_TIMEOUT
        if not lo <= timeout <= hi:
            await reply(f"ERR {protocol.E_PROTOCOL} timeout must be {lo:g}..{hi:g} seconds")
            return None
        pid, uid = _peercred(writer)
        now = time.monotonic()
        c = Client(self._next_id, name, timeout, now + timeout, pid, uid, now, now)
        self._next_id += 1
        self.clients[c.id] = c
        self._update_marker()
        log.info("client %s connected, timeout %gs", c.label(), timeout)
        # the hardware timeout too: a client may refuse a mux that resets too late for it
        await reply(f"OK {timeout:g} {self.hw_timeout if self.hw_timeout is not None else '?'}")
        return c

    async def _feed(self, client: Client | None, args: list[str], reply: Any) -> None:
        if client is None:
            await reply(f"ERR {protocol.E_STATE} not a client (HELLO first)")
            return
        now = time.monotonic()
        # A feed counts from when the client says it was alive (FEED <monotonic time>): a
        # feed that waited in the socket while the mux was busy must not extend the client.
        since = now
        if args:
            try:
                since = float(args[0])
            except ValueError:
                since = math.nan
            if len(args) != 1 or not math.isfinite(since):
                await reply(f"ERR {protocol.E_PROTOCOL} usage: FEED [<monotonic seconds>]")
                return
            since = min(since, now)  # never from the future
        if client.id in self.clients and now > client.deadline:
            self.check_clients(now)  # late is dead, even if the feed loop has not looked yet
        if self.tripped:
            await reply(f"ERR {protocol.E_EXPIRED} watchdog tripped ({self.tripped})")
            return
        client.deadline = max(client.deadline, since + client.timeout)
        client.last_feed = max(client.last_feed, since)
        await reply(f"OK {client.timeout:g}")

    # -- main loop -----------------------------------------------------------------------
    async def _feed_loop(self) -> None:
        while not self._stop.is_set():
            self.feed_hardware()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.feed_interval)

    async def serve(self, sock: socket.socket, *, signals: bool = True) -> None:
        """Serve clients and feed until a permitted stop; ``signals``: SIGTERM/SIGINT ask."""
        loop = asyncio.get_running_loop()
        if signals:  # only possible in the main thread (tests run a mux in a thread too)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        self._server = await asyncio.start_unix_server(
            self.handle, sock=sock, limit=protocol.MAX_LINE
        )
        log.info(
            "watchdog-mux ready: %s (%s, '%s', timeout %ss), socket %s",
            self.device.path,
            self.driver,
            self.device.info.identity,
            self._hw_timeout(),
            self.socket_path,
        )
        feeder = asyncio.create_task(self._feed_loop())
        try:
            await self._stop.wait()
        finally:
            self._server.close()
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder


# -- startup -----------------------------------------------------------------------------------
def marker_path(socket_path: str) -> str:
    """``watchdog-mux.active`` next to the socket (on /run: a reboot clears it)."""
    return str(Path(socket_path).parent / MARKER_NAME)


def bind_socket(path: str) -> socket.socket:
    """A listening Unix socket, mode 0600; a stale one is replaced, a live one refused."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() or p.is_symlink():
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise WatchdogError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            p.unlink()  # stale: left by a mux that was killed
        else:
            raise WatchdogError(f"another watchdog-mux is running on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def run(cfg: MuxConfig, syscalls: Syscalls | None = None) -> int:
    """Bring the watchdog up and serve until stopped; returns the exit status."""
    try:
        sock = bind_socket(cfg.socket)  # refuses a live mux first
    except HafenceError as exc:
        log.error("not starting: %s (nothing armed)", exc)
        return 1

    def give_up(why: str) -> int:
        log.error("not starting: %s (nothing armed)", why)
        sock.close()
        Path(cfg.socket).unlink(missing_ok=True)
        return 1

    marker = marker_path(cfg.socket)
    if os.path.exists(marker):
        return give_up(
            f"watchdog active - a previous watchdog-mux exited with clients connected or "
            f"tripped and left {marker}: re-arming now would cancel the node reset it owes. "
            "A reboot clears it; remove it only if no HA service runs on this node"
        )
    try:
        driver = cfg.driver(syscalls)
        prepared = driver.prepare()  # modprobe + find + checks
        device = driver.open(prepared)  # ARMED from here on
    except HafenceError as exc:
        return give_up(str(exc))
    mux = Mux(device, driver=driver.name, socket_path=cfg.socket, feed_interval=cfg.feed_interval)
    try:
        asyncio.run(mux.serve(sock))
    finally:
        sock.close()
        Path(cfg.socket).unlink(missing_ok=True)
        if mux.tripped or mux.clients:
            # leave the timer running: the reset must still happen
            device.close(magic=False)
            log.critical("exiting with the watchdog armed (%s)", mux.tripped or "clients")
        else:
            if device.close(magic=True):
                log.info("watchdog %s disarmed (magic close)", device.path)
            else:
                log.warning(
                    "watchdog %s closed but still armed (nowayout): the node resets unless "
                    "a watchdog-mux reopens it in time",
                    device.path,
                )
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help=f"[{DEFAULT_CONFIG}]"
)
@click.option("--module", "--driver", "module", help="watchdog driver (WATCHDOG_MODULE)")
@click.option("--timeout", type=int, help="hardware timeout, seconds (WATCHDOG_TIMEOUT)")
@click.option("--nowayout/--no-nowayout", default=None, help="WATCHDOG_NOWAYOUT")
@click.option("--noboot/--no-noboot", default=None, help="softdog drill mode (WATCHDOG_NOBOOT)")
@click.option("--device", help="watchdog device path (WATCHDOG_DEVICE)")
@click.option("--socket", "socket_path", help="client socket (MUX_SOCKET)")
@click.option("--feed-interval", type=float, help="hardware feed interval (FEED_INTERVAL)")
@click.option(
    "--fake-device",
    metavar="STATEFILE",
    envvar=FAKE_ENV,
    help="use the fake kernel in STATEFILE instead of /dev (tests, labs)",
)
@click.option("-v", "--verbose", is_flag=True)
def main(
    config_path: str | None,
    module: str | None,
    timeout: int | None,
    nowayout: bool | None,
    noboot: bool | None,
    device: str | None,
    socket_path: str | None,
    feed_interval: float | None,
    fake_device: str | None,
    verbose: bool,
) -> None:
    """Watchdog multiplexer: feeds the watchdog while every client is alive."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s watchdog-mux[{os.getpid()}]: %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = load_config(config_path, required=config_path is not None)
        s = cfg.settings
        cfg.settings = WatchdogSettings(
            timeout=s.timeout if timeout is None else timeout,
            nowayout=s.nowayout if nowayout is None else nowayout,
            noboot=s.noboot if noboot is None else noboot,
            device=device or s.device,
        )
    except (ConfigError, HafenceError) as exc:
        log.error("not starting: %s", exc)
        sys.exit(2)
    cfg.module = module or cfg.module
    cfg.socket = socket_path or cfg.socket
    if feed_interval is not None:
        cfg.feed_interval = feed_interval
    if not 0 < cfg.feed_interval < cfg.settings.timeout:
        log.error("not starting: feed interval must be > 0 and below the hardware timeout")
        sys.exit(2)
    sys.exit(run(cfg, choose_kernel(fake_device, warn=log.warning)))


if __name__ == "__main__":
    main()
