"""systemd integration with the standard library: sd_notify and native journal logging.

* :func:`notify` sends ``READY=1``, ``WATCHDOG=1``, ``STATUS=...`` to ``$NOTIFY_SOCKET``
  (a datagram socket; ``@name`` is an abstract socket), as ``sd_notify(3)`` does. Without
  ``$NOTIFY_SOCKET`` (not started by systemd) it does nothing.
* :class:`JournalHandler` writes log records to journald's native socket
  (``/run/systemd/journal/socket``) with structured fields: ``HAFENCE_NODE``,
  ``HAFENCE_ROLE``, ``HAFENCE_LEVEL`` (from the HA log's tags) and ``HAFENCE_SERVICE``
  (the service ID a line is about), so ``journalctl HAFENCE_SERVICE=vm:100`` shows one
  service's history across daemons.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import sys
import traceback

JOURNAL_SOCKET = "/run/systemd/journal/socket"
_SID = re.compile(
    r"\bservice (?:status )?'?([A-Za-z][A-Za-z0-9_-]*:[A-Za-z0-9][A-Za-z0-9_.@:-]*?)'?(?=[\s:,)]|$)"
)
_FIELD = re.compile(r"[^A-Z0-9_]")
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}


def notify(state: str, sock_path: str | None = None) -> bool:
    """Send one sd_notify message; True if a socket was there to send it to."""
    path = sock_path if sock_path is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


def service_of(message: str) -> str | None:
    """The service ID an HA log line is about (``service 'vm:100'``, ``service dummy:x``)."""
    m = _SID.search(message)
    return m.group(1) if m else None


def journal_available(path: str = JOURNAL_SOCKET) -> bool:
    """journald is there and our stderr already goes to it (systemd set JOURNAL_STREAM)."""
    return bool(os.environ.get("JOURNAL_STREAM")) and os.path.exists(path)


def _field(out: bytearray, name: str, value: str) -> None:
    data = value.encode("utf-8", "replace")
    key = name.encode()
    if b"\n" in data:  # the binary form: name, newline, 64-bit little-endian length, data
        out += key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    else:
        out += key + b"=" + data + b"\n"


class JournalHandler(logging.Handler):
    """Log records as journal entries with HAFENCE_* fields (native protocol)."""

    def __init__(self, identifier: str | None = None, path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.identifier = identifier or os.path.basename(sys.argv[0]) or "hafence"
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        message = record.getMessage()  # journald keeps time and priority itself
        out = {
            "MESSAGE": message,
            "PRIORITY": str(_PRIORITY.get(record.levelno, 7 if record.levelno < 20 else 6)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
        }
        for attr, name in (("hafence_node", "HAFENCE_NODE"), ("hafence_role", "HAFENCE_ROLE"),
                           ("hafence_level", "HAFENCE_LEVEL")):  # fmt: skip
            value = getattr(record, attr, None)
            if value:
                out[name] = str(value)
        sid = service_of(record.getMessage())
        if sid:
            out["HAFENCE_SERVICE"] = sid
        if record.exc_info:
            out["EXCEPTION"] = "".join(traceback.format_exception(*record.exc_info))
        return {_FIELD.sub("_", k.upper()): v for k, v in out.items()}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            payload = bytearray()
            for name, value in self.fields(record).items():
                _field(payload, name, value)
            self._sock.sendto(bytes(payload), self.path)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()
