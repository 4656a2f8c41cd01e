"""The ``example_pdu`` fence driver: one outlet of the fictional Example PDU.

Each action is one short TCP session (connect, read the greeting, ``LOGIN``, one
command, ``QUIT``), bounded as a whole by the ``timeout`` option. The driver only asks
the PDU; the fencer confirms off by polling :meth:`status`. See :mod:`.peer` for the
protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import ClassVar

from hafence.errors import AuthError, DeviceError, FenceTimeoutError, UnreachableError
from hafence.fence.driver import POWER, FenceDriver, Param, Port, PowerState
from hafence.fence.params import standard

log = logging.getLogger("hafence.example_pdu")

GREETING = "EXAMPLE-PDU "


# [guide:params]
class ExamplePduDriver(FenceDriver):
    name: ClassVar[str] = "example_pdu"
    kind: ClassVar[str] = POWER
    description: ClassVar[str] = (
        "Example PDU (fictional): outlet power control over a line-based TCP protocol"
    )
    params: ClassVar[tuple[Param, ...]] = (
        # the standard parameters (ip, ipport, username, password, plug), named and
        # checked as in every driver; only the defaults and the help are the PDU's
        standard("ip", required=True, help="PDU address"),
        standard("ipport", default=5024, help="PDU TCP port"),
        standard("username", default="admin", help="PDU user"),
        standard("password", required=True, help="PDU password (or password_file=PATH)"),
        standard("plug", int, required=True, also=("outlet",), help="Outlet number"),
    )
    actions: ClassVar[frozenset[str]] = frozenset({"status", "off", "on", "list", "monitor"})
    # [/guide:params]

    # [guide:session]
    async def _session(self, command: str) -> list[str]:
        """Log in, send one command, return its reply lines (the last one is ``OK...``)."""
        host, port, timeout = self.options["ip"], self.options["ipport"], self.options["timeout"]
        where, dev = f"{host}:{port}", self.label
        connected = False
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
                connected = True
                try:
                    greeting = await _readline(reader)
                    if not greeting.startswith(GREETING):
                        raise DeviceError(f"{where}: not an Example PDU: {greeting!r}", device=dev)
                    user, password = self.options["username"], self.options["password"]
                    # reveal() only here, where the password goes to the device.
                    await _send(writer, f"LOGIN {user} {password.reveal()}")
                    if (reply := await _readline(reader)) != "OK":
                        if reply == "ERR auth":
                            raise AuthError(f"{where}: login refused for user '{user}'", device=dev)
                        raise DeviceError(f"{where}: unexpected login reply {reply!r}", device=dev)
                    await _send(writer, command)
                    lines = [await _readline(reader)]
                    while lines[-1].startswith("OUTLET "):  # LIST: rows, then OK
                        lines.append(await _readline(reader))
                    if not lines[-1].startswith("OK"):
                        raise DeviceError(f"{where}: {command} refused: {lines[-1]!r}", device=dev)
                    await _send(writer, "QUIT")
                    return lines
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError:  # before OSError: TimeoutError is one
            if connected:
                raise FenceTimeoutError(
                    f"{where}: no answer within {timeout:g}s", device=dev
                ) from None
            raise UnreachableError(
                f"{where}: no connection within {timeout:g}s", device=dev
            ) from None
        except ConnectionRefusedError:
            raise UnreachableError(f"{where}: connection refused", device=dev) from None
        except OSError as exc:
            raise UnreachableError(f"{where}: {exc.strerror or exc}", device=dev) from None
        # [/guide:session]

    # [guide:actions]
    async def status(self) -> PowerState:
        reply = (await self._session(f"STATUS {self.options['plug']}"))[-1]
        states = {"OK ON": PowerState.ON, "OK OFF": PowerState.OFF}
        if reply not in states:
            raise DeviceError(
                f"outlet {self.options['plug']}: unexpected status {reply!r}", device=self.label
            )
        return states[reply]

    async def off(self) -> None:
        await self._session(f"OFF {self.options['plug']}")
        log.debug("example_pdu %s: outlet %s off requested", self.label, self.options["plug"])

    async def on(self) -> None:
        await self._session(f"ON {self.options['plug']}")

    async def list(self) -> list[Port]:
        ports = []
        for row in (await self._session("LIST"))[:-1]:
            _, number, state, name = (*row.split(" ", 3), "")[:4]
            if state not in ("ON", "OFF"):
                raise DeviceError(f"unexpected outlet row {row!r}", device=self.label)
            ports.append(Port(id=number, name=name, state=PowerState(state.lower())))
        return ports

    # [/guide:actions]


async def _readline(reader: asyncio.StreamReader) -> str:
    line = await reader.readline()
    if not line:
        raise DeviceError("the PDU closed the connection")
    return line.decode("utf-8", "replace").rstrip("\r\n")


async def _send(writer: asyncio.StreamWriter, line: str) -> None:
    writer.write(line.encode("utf-8") + b"\n")
    await writer.drain()
