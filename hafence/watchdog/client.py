"""Client of ``hafence-watchdog-mux``: what the LRM and CRM use to self-fence.

::

    from hafence.watchdog.client import WatchdogClient

    wd = WatchdogClient.connect("/run/hafence/watchdog-mux.sock", timeout=60, name="lrm")
    while active:
        wd.feed()                # at least once per `timeout` seconds
    wd.close()                   # magic close: leave without resetting the node

    with WatchdogClient.connect(path, timeout=60) as wd:   # magic close on normal exit;
        ...                      # an exception closes WITHOUT magic: the node resets

Once connected, the node resets unless this client keeps feeding within its
``timeout`` or leaves with ``close(magic=True)``: dropping the connection any other way
(process crash, ``close(magic=False)``) makes the mux stop feeding the hardware.

Errors (all :class:`~hafence.watchdog.errors.WatchdogError`):
:class:`MuxUnavailableError` no mux on the socket (nothing is armed for this client);
:class:`ClientExpiredError` the mux declared this client dead (the reset is under way);
:class:`MuxProtocolError` the mux refused the request or the connection broke.

The client is synchronous and not thread-safe; I/O waits are bounded by ``io_timeout``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from types import TracebackType
from typing import Any

from hafence.watchdog import protocol
from hafence.watchdog.errors import (
    ClientExpiredError,
    MuxProtocolError,
    MuxUnavailableError,
    WatchdogError,
)

__all__ = ["WatchdogClient", "mux_status"]


def _open(socket_path: str, io_timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(io_timeout)
    try:
        sock.connect(socket_path)
    except FileNotFoundError:
        sock.close()
        raise MuxUnavailableError(
            f"watchdog-mux is not running: no socket at {socket_path}"
        ) from None
    except ConnectionRefusedError:
        sock.close()
        raise MuxUnavailableError(
            f"watchdog-mux is not running: {socket_path} refuses connections (stale socket)"
        ) from None
    except PermissionError:
        sock.close()
        raise MuxUnavailableError(
            f"watchdog-mux socket {socket_path}: permission denied (it is mode 0600; run as "
            "the mux's user)"
        ) from None
    except OSError as exc:
        sock.close()
        raise MuxUnavailableError(f"watchdog-mux socket {socket_path}: {exc.strerror}") from None
    return sock


class _LineConn:
    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path
        self._buf = b""

    def request(self, line: str) -> str:
        """Send one request line, return the reply's text after ``OK``."""
        try:
            self.sock.sendall(line.encode() + b"\n")
            while b"\n" not in self._buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise MuxProtocolError(f"watchdog-mux {self.path} closed the connection")
                self._buf += chunk
        except TimeoutError:
            raise MuxProtocolError(
                f"watchdog-mux {self.path}: no reply to {line.split()[0]}"
            ) from None
        except (BrokenPipeError, ConnectionResetError):
            raise MuxProtocolError(f"watchdog-mux {self.path} closed the connection") from None
        reply, _, self._buf = self._buf.partition(b"\n")
        text = reply.decode(errors="replace")
        if text == "OK" or text.startswith("OK "):
            return text[3:]
        code, _, message = text.removeprefix("ERR ").partition(" ")
        if code == protocol.E_EXPIRED:
            raise ClientExpiredError(f"watchdog-mux: {message}")
        raise MuxProtocolError(f"watchdog-mux refused {line.split()[0]}: {message or text}")


class WatchdogClient:
    """One registered watchdog client (see the module docstring)."""

    def __init__(
        self, conn: _LineConn, name: str, timeout: float, hw_timeout: float | None = None
    ) -> None:
        self._conn: _LineConn | None = conn
        self.name = name
        self.timeout = timeout
        #: the mux's hardware timeout (None: a mux that does not say)
        self.hw_timeout = hw_timeout

    @classmethod
    def connect(
        cls,
        socket_path: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        *,
        name: str | None = None,
        io_timeout: float = 5.0,
        max_hw_timeout: float | None = None,
    ) -> WatchdogClient:
        """Register with the mux; from now on the node resets unless fed or magic-closed.

        ``timeout`` (seconds, 1..3600) is this client's own deadline between feeds.
        ``name`` appears in the mux log and status (default: ``client-<pid>``).
        ``max_hw_timeout``: the longest hardware timeout the caller's timing rule allows
        (:mod:`hafence.ha.timings`); a mux whose device resets later is left again at once
        (magic close) with a :class:`WatchdogError`, so no lock is held on it.
        """
        path = os.fspath(socket_path) if socket_path is not None else protocol.default_socket()
        name = name or f"client-{os.getpid()}"
        if not name.isprintable() or any(c.isspace() for c in name):
            raise ValueError(f"watchdog client name must be one printable word: {name!r}")
        conn = _LineConn(_open(path, io_timeout), path)
        try:
            detail = conn.request(f"HELLO {name} {float(timeout):g}").split()
        except BaseException:
            conn.sock.close()
            raise
        hw = _number(detail[1]) if len(detail) > 1 else None
        client = cls(conn, name, float(timeout), hw)
        if max_hw_timeout is not None and (hw is None or hw > max_hw_timeout):
            client.close(magic=True)
            shown = "an unknown" if hw is None else f"a {hw:g}s"
            raise WatchdogError(
                f"watchdog-mux {path} runs {shown} hardware timeout, more than the "
                f"{max_hw_timeout:g}s the timing rule allows: not arming '{name}'"
            )
        return client

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def feed(self, since: float | None = None) -> float:
        """Keepalive: push this client's deadline to ``since`` + timeout. Returns the timeout.

        ``since`` (``time.monotonic()``, default: now) is when the caller last knew it was
        healthy, e.g. when it sent the lock renewal this feed follows: a feed delayed on
        its way (a stalled process, a busy mux) then extends nothing it should not.
        """
        if self._conn is None:
            raise MuxProtocolError(f"watchdog client '{self.name}' is closed")
        since = time.monotonic() if since is None else since
        detail = self._conn.request(f"FEED {since:.6f}")
        try:
            return float(detail)
        except ValueError:
            return self.timeout

    keepalive = feed

    def close(self, magic: bool = True) -> None:
        """Leave. ``magic=True`` disarms this client; ``magic=False`` resets the node."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if magic:
                conn.request("V")
        finally:
            conn.sock.close()

    def __enter__(self) -> WatchdogClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(magic=exc_type is None)

    def __repr__(self) -> str:
        state = "connected" if self._conn else "closed"
        return f"<WatchdogClient {self.name} timeout={self.timeout:g}s {state}>"


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def mux_status(
    socket_path: str | os.PathLike[str] | None = None, io_timeout: float = 5.0
) -> dict[str, Any]:
    """The mux's status: device info, feeding/tripped state, clients and their deadlines."""
    path = os.fspath(socket_path) if socket_path is not None else protocol.default_socket()
    conn = _LineConn(_open(path, io_timeout), path)
    try:
        return json.loads(conn.request("STATUS"))
    finally:
        conn.sock.close()
