"""The lab's TCP service behind its service address (``ocf:vip``), and a client of it.

Every lab node runs a small TCP server (``python -m hafence.lab.web``, the node's
``web`` daemon) listening on the service address with ``IP_FREEBIND``: it listens before
the address is there, and answers only on the node that holds the address (the node
``ocf:vip`` runs on, IPaddr2 added it there), as a web server behind a keepalived or
Pacemaker address does. Each connection gets the answering node's name and is closed.
From the host, :class:`Client` connects to it at a fixed rate, so the outage a client
sees while the address fails over is measured, not inferred.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from dataclasses import dataclass

PORT = 8000
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # linux/in.h; Python 3.12 names it


def serve(addr: str, port: int, node: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)  # the address comes and goes
        sock.bind((addr, port))
        sock.listen(64)
        answer = f"{node}\n".encode()
        while True:
            conn, _ = sock.accept()
            with conn:
                try:
                    conn.sendall(answer)
                except OSError:
                    pass  # the client gave up: its loss, not the server's


@dataclass(frozen=True)
class Answer:
    started: float  # epoch seconds: when the connect began
    done: float  # when it answered or failed
    node: str | None  # who answered; None: no answer (refused, timed out, reset)


class Client:
    """Connects to ``addr:port`` every ``interval`` seconds (each attempt in its own
    thread, so one that hangs on a dead node's address does not hold up the next one)
    and keeps every answer."""

    def __init__(self, addr: str, port: int = PORT, interval: float = 0.05,
                 timeout: float = 2.0) -> None:  # fmt: skip
        self.addr, self.port, self.interval, self.timeout = addr, port, interval, timeout
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="web-client", daemon=True)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            threading.Thread(target=self._attempt, daemon=True).start()

    def _attempt(self) -> None:
        started = time.time()
        node = None
        try:
            with socket.create_connection((self.addr, self.port), timeout=self.timeout) as s:
                node = s.recv(256).decode(errors="replace").strip() or None
        except OSError:
            pass
        with self._lock:
            self.answers.append(Answer(started, time.time(), node))

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return sorted(self.answers, key=lambda a: a.done)

    def outage(self, since: float, not_from: str) -> float | None:
        """From the last answer before ``since`` to the first one after it from a node
        other than ``not_from``; None while there is none (or none before)."""
        answers = [a for a in self.snapshot() if a.node is not None]
        before = [a.done for a in answers if a.done <= since]
        after = [a.done for a in answers if a.done > since and a.node != not_from]
        if not before or not after:
            return None
        return after[0] - before[-1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="the lab's TCP service on its service address")
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, default=PORT)
    ap.add_argument("--node", required=True)
    a = ap.parse_args(argv)
    serve(a.addr, a.port, a.node)


if __name__ == "__main__":
    main()
