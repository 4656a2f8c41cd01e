"""A serial-attached power switch played on a pseudo-terminal, for tests and demos.

The "device" is a thread on the master side of a pty pair (``os.openpty()``); the
driver opens the slave (:attr:`SerialDevice.path`, e.g. ``/dev/pts/7``) with pyserial
exactly as it would open ``/dev/ttyUSB0``. With ``transport="rfc2217"`` the same
device sits behind an RFC 2217 (telnet COM port control) server on 127.0.0.1, as a
terminal server (ser2net, Moxa...) would present it: the client's baud rate, parity,
data/stop bits and every DTR/RTS change reach the peer there, so tests can check
line settings and the length of a DTR/RTS pulse (a pty has no modem lines).

The protocol is line based (a command ends at CR or LF; replies end with ``eol``)::

    LOGIN <password>   -> OK | DENIED       (authorises the next command only)
    ON [n] / OFF [n]   -> OK                (outlet n, default 1)
    STATUS [n]         -> ON | OFF
    anything else      -> ERR ...           (ERR NO OUTLET for a bad outlet)

When the switch has a password, a command not preceded by a good LOGIN is answered
``DENIED``. Misbehaviour for failure tests: ``mode="garbled"`` answers line noise,
``mode="silent"`` never answers, ``stuck=True`` accepts OFF and keeps the power on;
``echo=True`` echoes every byte back first, as a terminal in cooked mode would;
``quiet_power=True`` answers nothing to ON/OFF (relay boards that only act).

API::

    from tests.peers.serial_device import SerialDevice

    with SerialDevice(outlets=2, password="pw", power_on=True) as dev:
        dev.path                       # /dev/pts/N, or rfc2217://127.0.0.1:PORT
        dev.power(1)                   # "on" / "off"
        dev.set_power(False, outlet=2) # flip the "hardware" directly
        dev.set_mode("garbled")        # "ok" | "garbled" | "silent"
        dev.set_stuck(True)
        dev.inject(b"ALARM 2\r\n")       # unsolicited bytes on the line (pty only)
        dev.commands()                 # ["LOGIN ******", "OFF 1", ...] (passwords masked)
        dev.clear_commands()
        dev.signals()                  # [("dtr", True, t_monotonic), ...] (rfc2217 only)
        dev.line_settings()            # {"baudrate": 9600, "parity": "N", ...} (rfc2217)
        dev.driver_options(outlet=2)   # options for hafence's ``serial`` driver
        dev.wrong_password_options()   # the same with a wrong password
        dev.fence_cfg_args()           # driver_options() as fence.cfg key='value' text

:meth:`stop` ends the thread and closes every descriptor and socket; the context
manager always calls it and it is safe to call twice.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import tty
from types import TracebackType
from typing import Any

import serial
import serial.rfc2217

__all__ = ["GARBAGE", "SerialDevice"]

MODES = ("ok", "garbled", "silent")
# What a line with the wrong baud rate looks like: framing errors, high bytes, no sense.
GARBAGE = b"\xfe\x00\x9c~#\xd5qP\x1b\xff"


class _Line:
    """The serial line seen through RFC 2217: settings and modem lines, recorded."""

    def __init__(self, record: Any) -> None:
        self._record = record
        self.baudrate = 9600
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = False
        self.rtscts = False
        self.break_condition = False
        self._dtr = False
        self._rts = False
        # inputs a PortManager reports to the client (a switch drives none of them)
        self.cts = self.dsr = self.ri = self.cd = False

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._dtr = bool(value)
        self._record("dtr", self._dtr)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._rts = bool(value)
        self._record("rts", self._rts)

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


class SerialDevice:
    """One simulated serial power switch (see the module docstring)."""

    def __init__(
        self,
        *,
        outlets: int = 1,
        power_on: bool = True,
        password: str | None = None,
        mode: str = "ok",
        stuck: bool = False,
        echo: bool = False,
        quiet_power: bool = False,
        eol: bytes = b"\r\n",
        transport: str = "pty",
    ) -> None:
        if transport not in ("pty", "rfc2217"):
            raise ValueError("transport must be 'pty' or 'rfc2217'")
        if outlets < 1:
            raise ValueError("outlets must be >= 1")
        self.outlets = outlets
        self.password = password
        self.echo = echo
        self.quiet_power = quiet_power
        self.eol = eol
        self.transport = transport
        self._state = dict.fromkeys(range(1, outlets + 1), power_on)
        self._mode = ""
        self.set_mode(mode)
        self._stuck = stuck
        self._lock = threading.Lock()
        self._commands: list[str] = []
        self._signals: list[tuple[str, bool, float]] = []
        self._line = _Line(self._record_signal)
        self._authorised = False
        self._buf = b""
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1
        self._master = self._slave = -1
        self._server: socket.socket | None = None
        self.path = ""
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> SerialDevice:
        if self._thread is not None:
            return self
        self._stop_r, self._stop_w = os.pipe()
        if self.transport == "pty":
            self._master, self._slave = os.openpty()
            # Raw from the start: no line discipline echo/translation before the
            # driver's own open configures the port. The peer keeps the slave open so
            # the master never reads EIO between two driver sessions.
            tty.setraw(self._slave)
            self.path = os.ttyname(self._slave)
            target = self._serve_pty
        else:
            self._server = socket.create_server(("127.0.0.1", 0))
            self.port = self._server.getsockname()[1]
            self.path = f"rfc2217://127.0.0.1:{self.port}"
            target = self._serve_rfc2217
        self._thread = threading.Thread(target=target, name="serial-device", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = self._stop_r = self._stop_w = -1
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> SerialDevice:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the "hardware" ------------------------------------------------------------
    def power(self, outlet: int = 1) -> str:
        with self._lock:
            return "on" if self._state[outlet] else "off"

    def set_power(self, on: bool, outlet: int = 1) -> None:
        with self._lock:
            self._state[outlet] = on

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self._mode = mode

    def set_stuck(self, stuck: bool = True) -> None:
        self._stuck = stuck

    def inject(self, data: bytes) -> None:
        """Send unsolicited bytes down the line (a boot banner, an alarm), pty only."""
        if self.transport != "pty":
            raise ValueError("inject() needs transport='pty'")
        os.write(self._master, data)

    def commands(self) -> list[str]:
        """Every command line received, oldest first (LOGIN arguments masked)."""
        with self._lock:
            return list(self._commands)

    def clear_commands(self) -> None:
        with self._lock:
            self._commands.clear()

    def signals(self) -> list[tuple[str, bool, float]]:
        """DTR/RTS changes seen over RFC 2217: (line, level, time.monotonic())."""
        with self._lock:
            return list(self._signals)

    def clear_signals(self) -> None:
        with self._lock:
            self._signals.clear()

    def line_settings(self) -> dict[str, Any]:
        """The line settings the client asked for (RFC 2217 only)."""
        ln = self._line
        return {
            "baudrate": ln.baudrate,
            "bytesize": ln.bytesize,
            "parity": ln.parity,
            "stopbits": ln.stopbits,
        }

    def _record_signal(self, name: str, level: bool) -> None:
        with self._lock:
            self._signals.append((name, level, time.monotonic()))

    # -- options for the driver ----------------------------------------------------
    def driver_options(self, outlet: int | None = None) -> dict[str, str]:
        """Options that drive hafence's ``serial`` driver against this device."""
        opts = {"device": self.path, "baudrate": "9600", "eol": "cr"}
        if outlet is not None:
            opts.update(
                plug=str(outlet),
                outlets=str(self.outlets),
                cmd_off="OFF {plug}",
                cmd_on="ON {plug}",
                cmd_status="STATUS {plug}",
            )
        if self.password is not None:
            opts.update(password=self.password, cmd_login="LOGIN {password}")
        return opts

    def wrong_password_options(self, outlet: int | None = None) -> dict[str, str]:
        opts = self.driver_options(outlet)
        opts.update(password=f"not-{self.password or 'set'}", cmd_login="LOGIN {password}")
        return opts

    def fence_cfg_args(self, outlet: int | None = None) -> str:
        return " ".join(f"{k}='{v}'" for k, v in self.driver_options(outlet).items())

    # -- protocol ------------------------------------------------------------------
    def _feed(self, data: bytes) -> bytes:
        """Bytes from the driver in, bytes to send back out."""
        out = data if self.echo else b""
        self._buf += data
        while True:
            cut = min((i for i in (self._buf.find(b"\r"), self._buf.find(b"\n")) if i >= 0),
                      default=-1)  # fmt: skip
            if cut < 0:
                break
            raw, self._buf = self._buf[:cut], self._buf[cut + 1 :]
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            reply = self._answer(line)
            power = line.split(" ", 1)[0].upper() in ("ON", "OFF")
            if self._mode == "silent" or (self.quiet_power and power):
                continue
            out += (GARBAGE if self._mode == "garbled" else reply.encode()) + self.eol
        return out

    def _answer(self, line: str) -> str:
        word, _, arg = line.partition(" ")
        word = word.upper()
        with self._lock:
            self._commands.append(f"LOGIN {'*' * 6}" if word == "LOGIN" else line)
            if word == "LOGIN":
                self._authorised = self.password is not None and arg == self.password
                return "OK" if self._authorised else "DENIED"
            authorised, self._authorised = self._authorised, False
            if word not in ("ON", "OFF", "STATUS"):
                return "ERR UNKNOWN COMMAND"
            if self.password is not None and not authorised:
                return "DENIED"
            try:
                outlet = int(arg) if arg.strip() else 1
            except ValueError:
                return "ERR BAD OUTLET"
            if outlet not in self._state:
                return "ERR NO OUTLET"
            if word == "STATUS":
                return "ON" if self._state[outlet] else "OFF"
            if word == "ON" or not self._stuck:
                self._state[outlet] = word == "ON"
            return "OK"

    # -- transports ----------------------------------------------------------------
    def _serve_pty(self) -> None:
        while True:
            ready, _, _ = select.select([self._master, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO: no slave open (cannot happen while we hold it)
                time.sleep(0.01)
                continue
            out = self._feed(data)
            if out:
                os.write(self._master, out)

    def _serve_rfc2217(self) -> None:
        assert self._server is not None
        while True:
            waits: list[Any] = [self._server, self._stop_r]
            ready, _, _ = select.select(waits, [], [])
            if self._stop_r in ready:
                return
            conn, _ = self._server.accept()
            with conn:
                if self._session(conn):
                    return

    def _session(self, conn: socket.socket) -> bool:
        """Serve one client until it disconnects; True when the peer is stopping."""

        class _Conn:
            def write(self, data: bytes) -> None:
                conn.sendall(data)

        manager = serial.rfc2217.PortManager(self._line, _Conn())
        self._buf = b""
        while True:
            waits: list[Any] = [conn, self._stop_r]
            ready, _, _ = select.select(waits, [], [])
            if self._stop_r in ready:
                return True
            try:
                data = conn.recv(4096)
            except OSError:
                return False
            if not data:
                return False
            out = self._feed(b"".join(manager.filter(data)))
            if out:
                with contextlib.suppress(OSError):
                    conn.sendall(b"".join(manager.escape(out)))


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    transport = sys.argv[1] if len(sys.argv) > 1 else "pty"
    with SerialDevice(outlets=4, transport=transport) as dev:
        print(f"serial switch on {dev.path} (4 outlets); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
