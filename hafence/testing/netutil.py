"""Loopback addresses that do not answer, for time-out and unreachable tests.

* :func:`closed_tcp_port` / :func:`closed_udp_port`: a port nobody listens on (bound
  to port 0 and released): TCP gets "connection refused" at once, UDP gets silence.
* :class:`SilentTcpServer`: a listening socket that never accepts; the kernel completes
  the handshake from its backlog, so a client connects and then waits for a greeting
  that never comes - the hung controller case, where only the driver's own time-out
  saves the fencer.
"""

from __future__ import annotations

import socket
from types import TracebackType

HOST = "127.0.0.1"


def _free_port(kind: int, host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def closed_tcp_port(host: str = HOST) -> int:
    """A TCP port free at the time of the call: connecting to it is refused."""
    return _free_port(socket.SOCK_STREAM, host)


def closed_udp_port(host: str = HOST) -> int:
    """A UDP port free at the time of the call: requests to it get no answer."""
    return _free_port(socket.SOCK_DGRAM, host)


class SilentTcpServer:
    """A TCP port that accepts connections (through the backlog) and never answers."""

    def __init__(self, host: str = HOST, backlog: int = 64) -> None:
        self.host = host
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._sock.bind((host, 0))
        self._sock.listen(backlog)
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SilentTcpServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
