"""How a store is named on the command line: the URL, TLS and etcd authentication.

An etcd store URL may carry settings as query parameters::

    etcds://10.0.0.1:2379,10.0.0.2:2379/prod?cacert=/etc/hafence/etcd-ca.pem
        &cert=/etc/hafence/etcd.pem&key=/etc/hafence/etcd.key
        &user=hafence&password_file=/etc/hafence/etcd.pw

``connect_timeout``, ``read_timeout`` (seconds per try) and ``lock_ttl`` (the ha-manager
lock's life) are accepted too. The same settings come from the daemons' and
``ha-manager``'s options (``--etcd-cacert``, ``--etcd-cert``, ``--etcd-key``,
``--etcd-user``, ``--etcd-password-file``) or their environment variables
(``HAFENCE_ETCD_CACERT`` ...); an option wins over the URL. The password is never an
option or a URL part (it would show in ``ps``): it comes from a file
(``password_file``) or the environment (``$HAFENCE_ETCD_PASSWORD``, or the variable
named by ``password_env``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import click

from hafence.store.etcd_client import EtcdSettings

PASSWORD_ENV = "HAFENCE_ETCD_PASSWORD"
_PATHS = ("cacert", "cert", "key")
_FLOATS = ("connect_timeout", "read_timeout")
QUERY_KEYS = (*_PATHS, "user", "password_file", "password_env", *_FLOATS, "lock_ttl")


def split_query(url: str) -> tuple[str, dict[str, str]]:
    """``etcd://h/c?cacert=x`` -> (``etcd://h/c``, ``{"cacert": "x"}``); unknown keys fail."""
    parts = urlsplit(url)
    query: dict[str, str] = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
        if k == "password":
            raise ValueError(
                "an etcd URL must not carry the password (it would show in process lists): "
                "use password_file=PATH or $HAFENCE_ETCD_PASSWORD"
            )
        if k not in QUERY_KEYS:
            raise ValueError(f"etcd URL: unknown parameter '{k}' (known: {', '.join(QUERY_KEYS)})")
        query[k] = v
    return parts._replace(query="").geturl(), query


def read_password_file(path: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"etcd password file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError(f"etcd password file {path}: not UTF-8 text") from None
    if not text or "\x00" in text or "\n" in text:
        raise ValueError(f"etcd password file {path}: must hold one non-empty line")
    return text


def settings_from(query: dict[str, str], overrides: dict[str, Any] | None = None) -> EtcdSettings:
    """EtcdSettings from URL parameters, overridden by options that were given."""
    opts = {**query, **{k: v for k, v in (overrides or {}).items() if v not in (None, "")}}
    s = EtcdSettings()
    for k in _PATHS:
        if opts.get(k):
            p = str(opts[k])
            if not os.path.isfile(p):
                raise ValueError(f"etcd {k} file {p}: not found")
            setattr(s, k, p)
    for k in _FLOATS:
        if k in opts:
            try:
                setattr(s, k, float(opts[k]))
            except ValueError:
                raise ValueError(f"etcd {k}: '{opts[k]}' is not a number") from None
    if "lock_ttl" in opts:
        try:
            s.lock_ttl = int(opts["lock_ttl"])
        except ValueError:
            raise ValueError(f"etcd lock_ttl: '{opts['lock_ttl']}' is not a whole number") from None
    s.user = opts.get("user") or None
    if opts.get("password_file"):
        s.password = read_password_file(str(opts["password_file"]))
    elif opts.get("password_env"):
        s.password = os.environ.get(str(opts["password_env"]))
        if s.password is None:
            raise ValueError(f"etcd password: ${opts['password_env']} is not set")
    elif s.user:
        s.password = os.environ.get(PASSWORD_ENV)
    s.check()
    return s


def etcd_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The TLS and authentication options of every command that opens a store."""
    opts = [
        click.option("--etcd-cacert", envvar="HAFENCE_ETCD_CACERT", metavar="PATH",
                     help="CA certificate that signed the etcd servers' certificates."),
        click.option("--etcd-cert", envvar="HAFENCE_ETCD_CERT", metavar="PATH",
                     help="Client certificate for etcd (with --etcd-key)."),
        click.option("--etcd-key", envvar="HAFENCE_ETCD_KEY", metavar="PATH",
                     help="Client certificate key for etcd."),
        click.option("--etcd-user", envvar="HAFENCE_ETCD_USER", metavar="NAME",
                     help="etcd user (password from --etcd-password-file or "
                     "$HAFENCE_ETCD_PASSWORD)."),
        click.option("--etcd-password-file", envvar="HAFENCE_ETCD_PASSWORD_FILE",
                     metavar="PATH", help="File holding the etcd user's password."),
    ]  # fmt: skip
    for opt in reversed(opts):
        f = opt(f)
    return f


def etcd_overrides(o: dict[str, Any]) -> dict[str, Any]:
    """The settings the ``etcd_options`` gave (by their EtcdSettings names)."""
    return {
        "cacert": o.get("etcd_cacert"),
        "cert": o.get("etcd_cert"),
        "key": o.get("etcd_key"),
        "user": o.get("etcd_user"),
        "password_file": o.get("etcd_password_file"),
    }
