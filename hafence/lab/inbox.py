"""The lab's operator inbox: a mail server and a webhook receiver on the host's bridge
address, where every node's CRM sends its notifications (``notify.cfg``), kept as files.

``inbox/mail-N.eml`` is one mail as the SMTP server received it (aiosmtpd, the test
extra's SMTP server); ``inbox/webhook.jsonl`` one JSON body per line. The nodes' daemons
also serve Prometheus metrics on their own address (:data:`METRICS_PORTS`).
"""

from __future__ import annotations

import email
import json
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hafence.lab.layout import Layout

SMTP_PORT = 2525
WEBHOOK_PORT = 8025
METRICS_PORTS = {"crm": 9100, "lrm": 9101}


def inbox_dir(layout: Layout) -> Path:
    return layout.state_dir / "inbox"


def notify_cfg(layout: Layout) -> str:
    host = layout.host_addr
    return (
        f"smtp: lab-mail\n\tserver {host}\n\tport {SMTP_PORT}\n\ttls none\n"
        f"\tfrom hafence@{layout.prefix}.lab\n\tto ops@{layout.prefix}.lab\n\ttimeout 5\n\n"
        f"webhook: lab-hook\n\turl http://{host}:{WEBHOOK_PORT}/hafence\n\ttimeout 5\n\n"
        "log: journal\n"
    )


def metrics_url(layout: Layout, node: str, daemon: str = "crm") -> str:
    return f"http://{layout.node_addr(node)}:{METRICS_PORTS[daemon]}/metrics"


def mails(layout: Layout) -> list[Message]:
    files = sorted(inbox_dir(layout).glob("mail-*.eml"), key=lambda p: int(p.stem[5:]))
    return [email.message_from_bytes(p.read_bytes()) for p in files]


def webhooks(layout: Layout) -> list[dict[str, Any]]:
    try:
        lines = (inbox_dir(layout) / "webhook.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


class Inbox:
    def __init__(self, layout: Layout) -> None:
        self.dir = inbox_dir(layout)
        self.host = layout.host_addr
        self._lock = threading.Lock()
        self._smtp: Any = None
        self._http: ThreadingHTTPServer | None = None

    def _store_mail(self, data: bytes) -> None:
        with self._lock:
            n = len(list(self.dir.glob("mail-*.eml")))
            (self.dir / f"mail-{n + 1}.eml").write_bytes(data)

    def _store_hook(self, body: bytes) -> None:
        with self._lock, open(self.dir / "webhook.jsonl", "ab") as fh:
            fh.write(json.dumps(json.loads(body)).encode() + b"\n")

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.dir.mkdir(parents=True, exist_ok=True)
        inbox = self

        class Mail:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                inbox._store_mail(envelope.original_content or envelope.content)
                return "250 OK"

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    inbox._store_hook(body)
                except ValueError:
                    self.send_response(400)
                else:
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # the receiver's files are its log

        self._smtp = Controller(Mail(), hostname=self.host, port=SMTP_PORT)
        self._smtp.start()
        self._http = ThreadingHTTPServer((self.host, WEBHOOK_PORT), Hook)
        threading.Thread(target=self._http.serve_forever, name="lab-webhook", daemon=True).start()

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._smtp is not None:
            self._smtp.stop()
            self._smtp = None
