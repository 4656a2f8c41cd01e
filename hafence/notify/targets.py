"""Delivering one notification to one target: SMTP mail, a JSON webhook, or the log.

Each delivery is bounded by the target's ``timeout`` and raises on failure (the notifier
logs it, naming the target, never the secret).
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from hafence import __version__
from hafence.notify.config import Target
from hafence.notify.events import Notification
from hafence.secrets import Secret

log = logging.getLogger("hafence.notify")


class DeliveryError(Exception):
    pass


def send_smtp(t: Target, n: Notification) -> None:
    o = t.options
    msg = EmailMessage()
    msg["Subject"] = n.subject
    msg["From"] = str(o["from"])
    msg["To"] = ", ".join(o["to"])  # type: ignore[arg-type]
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="hafence")
    msg.set_content(n.body)
    host, port, tls = str(o["server"]), int(o["port"]), o["tls"]  # type: ignore[call-overload]
    try:
        smtp_cls = smtplib.SMTP_SSL if tls == "implicit" else smtplib.SMTP
        kwargs = {"context": ssl.create_default_context()} if tls == "implicit" else {}
        with smtp_cls(host, port, timeout=t.timeout, **kwargs) as smtp:  # type: ignore[arg-type]
            if tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            password = o.get("password")
            if isinstance(password, Secret):
                smtp.login(str(o["username"]), password.reveal())
            smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"{host}:{port}: login refused ({exc.smtp_code})") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{host}:{port}: {type(exc).__name__}: {exc}") from None


def send_webhook(t: Target, n: Notification) -> None:
    body = json.dumps({"source": "hafence", **n.data}, sort_keys=True).encode()
    req = urllib.request.Request(str(t.options["url"]), data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("User-Agent", f"hafence/{__version__}")
    token = t.options.get("token")
    if isinstance(token, Secret):
        req.add_header("Authorization", f"Bearer {token.reveal()}")
    try:
        with urllib.request.urlopen(req, timeout=t.timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None


def send_log(t: Target, n: Notification) -> None:
    log.warning("notification: %s", n.subject)


SENDERS = {"smtp": send_smtp, "webhook": send_webhook, "log": send_log}


def deliver(t: Target, n: Notification) -> None:
    SENDERS[t.type](t, n)
