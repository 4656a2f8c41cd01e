"""A simulated Example PDU: the test peer shipped with the plugin.

The fictional PDU speaks a line-based protocol over TCP (UTF-8, one request or reply
a line, ``\\n`` terminated)::

    server: EXAMPLE-PDU 1.0                  greeting on connect
    client: LOGIN <user> <password>          the password is the rest of the line
    server: OK | ERR auth                    after ERR auth the server hangs up
    client: STATUS <n>    server: OK ON | OK OFF
    client: OFF <n>       server: OK
    client: ON <n>        server: OK
    client: LIST          server: OUTLET <n> <ON|OFF> <name>  (one a line), then OK
    client: QUIT          server: BYE
    errors:               ERR login (command before LOGIN), ERR outlet <n>, ERR syntax

The server is an asyncio TCP server on 127.0.0.1 with a free port (bound to port 0),
run in a thread of its own, so tests (sync or async) and subprocesses can talk to it
while it keeps serving::

    with PduServer(password="s3cret-pw", outlets=4) as pdu:
        pdu.host, pdu.port
        pdu.driver_options(outlet=2)          # options for the example_pdu driver
        pdu.power(2)                          # "on" / "off": the simulated hardware
        pdu.set_power(2, False)
        pdu.set_stuck(2)                      # OFF accepted, the outlet stays on
        pdu.set_silent(True)                  # accept connections, never answer
        pdu.requests()                        # ["LOGIN admin ******", "OFF 2", ...]

``python -m hafence_example_pdu.peer --port 5024`` runs one until Ctrl-C (password
from ``$EXAMPLE_PDU_PASSWORD``, default ``example-pw``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

GREETING = "EXAMPLE-PDU 1.0"
MASK = "******"


@dataclass
class Outlet:
    name: str
    on: bool = True
    stuck: bool = False  # accepts OFF, stays on (a welded relay)


class PduServer:
    """The simulated PDU. Start with :meth:`start` or as a context manager."""

    def __init__(
        self,
        *,
        username: str = "admin",
        password: str = "example-pw",
        outlets: int = 8,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self.outlets = {n: Outlet(f"node{n}") for n in range(1, outlets + 1)}
        self.silent = False
        self._requests: list[str] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> PduServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, self.host, self.port)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="example-pdu", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        """Close the listener and every connection; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
            # Connection handlers end before the loop stops (no "task destroyed" noise).
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join()

    def __enter__(self) -> PduServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:  # never the password
        return f"<PduServer {self.host}:{self.port} outlets={len(self.outlets)}>"

    # -- the simulated hardware -------------------------------------------------------
    def power(self, outlet: int) -> str:
        with self._lock:
            return "on" if self.outlets[outlet].on else "off"

    def set_power(self, outlet: int, on: bool) -> None:
        with self._lock:
            self.outlets[outlet].on = on

    def set_stuck(self, outlet: int, stuck: bool = True) -> None:
        with self._lock:
            self.outlets[outlet].stuck = stuck

    def set_silent(self, silent: bool = True) -> None:
        """Silent: connections are accepted and never answered (a hung controller)."""
        self.silent = silent

    def requests(self) -> list[str]:
        """Every request line received, passwords masked."""
        with self._lock:
            return list(self._requests)

    # -- how clients reach it ---------------------------------------------------------
    def driver_options(self, outlet: int = 1, **extra: Any) -> dict[str, Any]:
        """Options for the ``example_pdu`` driver (small time bounds for tests)."""
        opts: dict[str, Any] = {
            "ip": self.host,
            "ipport": self.port,
            "username": self.username,
            "password": self.password,
            "plug": outlet,
            "timeout": 2.0,
            "power_timeout": 3.0,
            "poll_interval": 0.05,
        }
        opts.update(extra)
        return opts

    # -- protocol ---------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.silent:
                await reader.read()  # until the client gives up
                return
            await self._send(writer, GREETING)
            logged_in = False
            while line := await reader.readline():
                request = line.decode("utf-8", "replace").strip()
                verb, _, rest = request.partition(" ")
                verb = verb.upper()
                self._log(f"LOGIN {rest.partition(' ')[0]} {MASK}" if verb == "LOGIN" else request)
                if verb == "LOGIN":
                    user, _, password = rest.partition(" ")
                    if user == self.username and password == self.password:
                        logged_in = True
                        await self._send(writer, "OK")
                        continue
                    await self._send(writer, "ERR auth")
                    return
                if verb == "QUIT":
                    await self._send(writer, "BYE")
                    return
                if not logged_in:
                    await self._send(writer, "ERR login")
                    continue
                for reply in self._command(verb, rest):
                    await self._send(writer, reply)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _command(self, verb: str, arg: str) -> list[str]:
        if verb == "LIST" and not arg:
            with self._lock:
                rows = [
                    f"OUTLET {n} {'ON' if o.on else 'OFF'} {o.name}"
                    for n, o in self.outlets.items()
                ]
            return [*rows, "OK"]
        if verb not in ("STATUS", "ON", "OFF") or not arg.isdigit():
            return ["ERR syntax"]
        n = int(arg)
        with self._lock:
            outlet = self.outlets.get(n)
            if outlet is None:
                return [f"ERR outlet {n}"]
            if verb == "STATUS":
                return ["OK ON" if outlet.on else "OK OFF"]
            if verb == "ON":
                outlet.on = True
            elif not outlet.stuck:
                outlet.on = False
        return ["OK"]

    def _log(self, request: str) -> None:
        with self._lock:
            self._requests.append(request)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, line: str) -> None:
        writer.write(line.encode("utf-8") + b"\n")
        await writer.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a simulated Example PDU on loopback.")
    parser.add_argument("--port", type=int, default=5024)
    parser.add_argument("--outlets", type=int, default=8)
    parser.add_argument("--username", default="admin")
    args = parser.parse_args()
    password = os.environ.get("EXAMPLE_PDU_PASSWORD", "example-pw")
    pdu = PduServer(username=args.username, password=password, outlets=args.outlets)
    pdu.port = args.port
    with pdu:
        print(f"example PDU listening on {pdu.host}:{pdu.port} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
