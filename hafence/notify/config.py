"""``notify.cfg``: where fence and recovery notifications go.

Section-config format (like Proxmox's notifications.cfg)::

    smtp: ops-mail
    \tserver 127.0.0.1
    \tport 25
    \tfrom hafence@cluster.example
    \tto ops@example.com, oncall@example.com
    \tusername notify
    \tpassword_file /etc/hafence/smtp.pw
    \ttls starttls
    \ttimeout 10

    webhook: pager
    \turl https://pager.example/hooks/hafence
    \ttoken_file /etc/hafence/pager.token
    \ttimeout 5

    log: syslog

``smtp``: ``server`` and ``to`` required; ``port`` (25, 465 with ``tls implicit``), ``from``
(default ``hafence@<host>``), ``tls`` ``none|starttls|implicit``, ``username`` +
``password``. ``webhook``: a JSON POST to ``url``; ``token`` is sent as
``Authorization: Bearer``. ``log``: a WARNING line on logger ``hafence.notify``.
Secrets (``password``, ``token``) may be given as ``X_file PATH`` or ``X_env VARIABLE``;
they never appear in a log or a notification. ``timeout`` (seconds, default 10) bounds
each delivery. Every error names the file, the line and the field.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from hafence.errors import ConfigError, ConfigErrors, SecretError
from hafence.secrets import Secret, secret_from_env, secret_from_file
from hafence.sectionconfig import Section, read_sections

TYPES = ("smtp", "webhook", "log")
TLS_MODES = ("none", "starttls", "implicit")
DEFAULT_TIMEOUT = 10.0
_ADDRESS = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+$")
_KEYS = {
    "smtp": {"server", "port", "from", "to", "username", "password", "tls", "timeout",
             "comment"},
    "webhook": {"url", "token", "timeout", "comment"},
    "log": {"comment"},
}  # fmt: skip
_REQUIRED = {"smtp": ("server", "to"), "webhook": ("url",), "log": ()}
_SECRETS = {"password", "token"}


@dataclass
class Target:
    """One notification target of notify.cfg."""

    type: str
    name: str
    file: str
    line: int
    options: dict[str, object] = field(default_factory=dict)  # parsed; secrets are Secret

    @property
    def label(self) -> str:
        return f"{self.type}:{self.name}"

    @property
    def timeout(self) -> float:
        return float(self.options.get("timeout", DEFAULT_TIMEOUT))  # type: ignore[arg-type]


def _secret(sec: Section, key: str) -> Secret | None:
    """``key`` itself, ``key_file`` or ``key_env`` (the first given)."""
    if key in sec.props:
        return Secret(sec.props[key])
    if f"{key}_file" in sec.props:
        return secret_from_file(sec.props[f"{key}_file"])
    if f"{key}_env" in sec.props:
        return secret_from_env(sec.props[f"{key}_env"])
    return None


def _value(target: Target, key: str, raw: str) -> object:
    if key in ("port",):
        port = int(raw)
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        return port
    if key == "timeout":
        t = float(raw)
        if not 0 < t <= 300:
            raise ValueError("timeout must be > 0 and <= 300 seconds")
        return t
    if key == "tls":
        if raw not in TLS_MODES:
            raise ValueError(f"must be one of {', '.join(TLS_MODES)}")
        return raw
    if key in ("from", "to"):
        addrs = [a.strip() for a in raw.split(",") if a.strip()]
        bad = [a for a in addrs if not _ADDRESS.match(a)]
        if bad or not addrs:
            raise ValueError(f"invalid mail address '{(bad or [raw])[0]}'")
        return addrs if key == "to" else addrs[0]
    if key == "url":
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid URL '{raw}' (http:// or https://)")
        return raw
    return raw


def parse_notify_config(text: str, file: str = "notify.cfg") -> list[Target]:
    """Parse notify.cfg text; raise ConfigErrors with every problem (file/line/field)."""
    errors: list[ConfigError] = []
    targets: list[Target] = []
    for sec in read_sections(text, file, TYPES, errors):
        t = Target(sec.type, sec.id, file, sec.line)

        def err(message: str, key: str, sec: Section = sec) -> None:
            errors.append(ConfigError(message, file=file, line=sec.line_of(key), field=key))

        for key, raw in sec.props.items():
            base, _, src = key.rpartition("_")
            if src in ("file", "env") and base in _SECRETS & _KEYS[sec.type]:
                continue  # read below, with the plain form
            if key not in _KEYS[sec.type]:
                err(f"unknown property for a {sec.type} target", key)
                continue
            if key in _SECRETS:
                continue
            try:
                t.options[key] = _value(t, key, raw)
            except ValueError as exc:
                err(str(exc), key)
        for key in _SECRETS & _KEYS[sec.type]:
            given = [k for k in (key, f"{key}_file", f"{key}_env") if k in sec.props]
            if len(given) > 1:
                err(f"give only one of {', '.join(given)}", given[1])
                continue
            try:
                value = _secret(sec, key)
            except SecretError as exc:
                err(f"cannot read secret: {exc}", given[0])
                continue
            if value is not None:
                t.options[key] = value
        for key in _REQUIRED[sec.type]:
            if key not in sec.props:
                err(f"required for a {sec.type} target", key)
        if sec.type == "smtp":
            if ("username" in t.options) != ("password" in t.options):
                err("username and password go together", "username")
            t.options.setdefault("tls", "none")
            default_port = 465 if t.options["tls"] == "implicit" else 25
            t.options.setdefault("port", default_port)
            t.options.setdefault("from", f"hafence@{socket.getfqdn()}")
        targets.append(t)
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        raise ConfigErrors(file, errors)
    return targets


def load_notify_config(path: str | os.PathLike[str]) -> list[Target]:
    p = str(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {getattr(exc, 'strerror', None) or exc}",
                          file=p) from None  # fmt: skip
    return parse_notify_config(text, p)
