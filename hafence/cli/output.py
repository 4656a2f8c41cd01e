"""Shared plumbing of the ``hafence`` commands: global options, output, exit codes.

Every leaf command is wrapped by :func:`command_body`, which gives it the options
every command accepts (``--output text|json``, ``--timeout``, ``-v``), sets up
Proxmox-style log lines, and turns errors into the documented exit codes:

* 0: the action succeeded;
* 1: the action failed (the device or node said no, or could not be reached);
* 2: usage or configuration error (nothing was attempted).

Secrets never reach the terminal: every line written (tables, JSON, errors, log
records) passes through :func:`scrub`, which replaces each secret value the command
has seen (:func:`register_secret`) with ``******``; Secret objects print masked
anyway, this is the belt to their braces.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from hafence.errors import ConfigError, ConfigErrors, HafenceError, ParamError, UnknownDriverError
from hafence.secrets import MASK, Secret

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_secrets: set[str] = set()
# Shorter values are not scrubbed: masking every "x" or "ab" would garble the output,
# and Secret objects print masked anyway.
MIN_SCRUB_LEN = 4


def register_secret(value: object) -> None:
    """Remember a secret's clear text so no output line can show it."""
    clear = value.reveal() if isinstance(value, Secret) else str(value)
    if len(clear) >= MIN_SCRUB_LEN and clear != MASK:
        _secrets.add(clear)


def register_options(options: Mapping[str, Any]) -> None:
    for value in options.values():
        if isinstance(value, Secret):
            register_secret(value)


def scrub(text: str) -> str:
    # Longest first, so a secret containing another is masked whole.
    for clear in sorted(_secrets, key=len, reverse=True):
        if clear in text:
            text = text.replace(clear, MASK)
    return text


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class Seconds(click.FloatRange):
    """A finite number of seconds in ``[min, max]``: click's FloatRange lets ``nan``
    through (no comparison is true for it) and ``inf`` unless a max is set."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


class FilePath(click.Path):
    """click.Path that refuses a NUL in the name with a usage error (click's own checks
    would stop with a ValueError from ``os.stat`` instead)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and "\x00" in value:
            self.fail("a file name cannot contain a NUL character", param, ctx)
        return super().convert(value, param, ctx)


# -- state shared by the group and its commands -----------------------------------------
@dataclass
class State:
    output: str = "text"
    timeout: float | None = None
    verbose: int = 0

    @property
    def json(self) -> bool:
        return self.output == "json"


def state() -> State:
    ctx = click.get_current_context()
    return ctx.ensure_object(State)


def _set(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        st = ctx.ensure_object(State)
        if attr == "verbose":
            st.verbose = max(st.verbose, value or 0)
        elif value is not None:
            setattr(st, attr, value)
        return value

    return callback


def global_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--output``, ``--timeout``, ``-v``: accepted on the group and on every command."""
    options = [
        click.option(
            "--output",
            type=click.Choice(["text", "json"]),
            default=None,
            expose_value=False,
            callback=_set("output"),
            help="Human tables (text, default) or JSON for scripts.",
        ),
        click.option(
            "--timeout",
            type=Seconds(min=0.1, max=3600),
            default=None,
            expose_value=False,
            callback=_set("timeout"),
            metavar="SECONDS",
            help="Override every device's per-request time bound (its 'timeout' option).",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            expose_value=False,
            callback=_set("verbose"),
            help="Log each decision (-v), and library debug output (-vv).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


# -- logging ------------------------------------------------------------------------
class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


class _ProxmoxFormatter(logging.Formatter):
    """``2026-11-25 06:30:12 info    fence: fence node 'node1': ...``, one line each."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        level = {"WARNING": "warn", "CRITICAL": "crit"}.get(record.levelname, record.levelname)
        component = record.name.removeprefix("hafence.").removeprefix("hafence_")
        line = f"{when} {level.lower():<7} {component}: {record.getMessage()}"
        if record.exc_text:
            line += "\n" + record.exc_text.rstrip()
        return line


_depth = 0


def setup_logging(verbose: int) -> Callable[[], None]:
    """Nothing without -v (the command's own output says it all); INFO with -v;
    everything, libraries included, with -vv. Always to stderr, always scrubbed.

    Returns the undo function (CliRunner runs many commands in one process). A command
    run by another (``hafence demo``) keeps the outer command's handler.
    """
    global _depth
    _depth += 1
    if _depth > 1:

        def leave() -> None:
            global _depth
            _depth -= 1

        return leave
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ScrubFilter())
    handler.setFormatter(_ProxmoxFormatter())
    saved = {name: logging.getLogger(name).level for name in ("", "pyghmi", "pysnmp", "asyncio")}
    root.addHandler(handler)
    if verbose >= 2:
        root.setLevel(logging.DEBUG)
        handler.setLevel(logging.DEBUG)
    elif verbose == 1:
        root.setLevel(logging.INFO)
        handler.setLevel(logging.INFO)
        for noisy in ("pyghmi", "pysnmp", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    else:
        handler.setLevel(logging.CRITICAL + 1)

    def undo() -> None:
        global _depth
        _depth -= 1
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)

    return undo


# -- output -------------------------------------------------------------------------
def echo(text: str = "", *, err: bool = False) -> None:
    click.echo(scrub(text), err=err)


def emit_json(data: Any) -> None:
    echo(json.dumps(to_jsonable(data), indent=2, sort_keys=True))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain left-aligned table (like ``ha-manager status``), no borders."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}s" if value < 100 else f"{value:.0f}s"


def verdict(ok: bool, error_kind: str | None) -> str:
    return "ok" if ok else f"FAILED ({error_kind or 'failed'})"


# -- errors and exit codes ------------------------------------------------------------
class CommandFailed(Exception):
    """The action ran and failed: exit 1 (the command already printed why)."""


class UsageProblem(HafenceError):
    """Bad invocation or refused confirmation: exit 2 with this message."""

    def __init__(self, message: str, kind: str = "usage_error") -> None:
        super().__init__(message)
        self.kind = kind


def config_error_dicts(exc: HafenceError) -> list[dict[str, Any]]:
    if isinstance(exc, ConfigErrors):
        return [_one_config_error(e, exc.file) for e in exc.errors]
    if isinstance(exc, ConfigError):
        return [_one_config_error(exc, exc.file)]
    if isinstance(exc, ParamError):
        return [{"file": None, "line": None, "field": exc.field, "message": exc.message}]
    return [{"file": None, "line": None, "field": None, "message": str(exc)}]


def _one_config_error(e: ConfigError, file: str | None) -> dict[str, Any]:
    return {"file": e.file or file, "line": e.line, "field": e.field, "message": e.message}


def format_config_error(e: Mapping[str, Any]) -> str:
    """``file:line: field: message`` (the parts that are known)."""
    where = ""
    if e.get("file"):
        where = f"{e['file']}:{e['line']}: " if e.get("line") is not None else f"{e['file']}: "
    elif e.get("line") is not None:
        where = f"line {e['line']}: "
    what = f"{e['field']}: " if e.get("field") else ""
    return f"{where}{what}{e['message']}"


def fail_usage(exc: HafenceError) -> NoReturn:
    """Report a usage/config error (text: stderr; json: stdout) and exit 2."""
    kind = getattr(exc, "kind", None) if isinstance(exc, UsageProblem) else "config_error"
    if isinstance(exc, UnknownDriverError):
        kind = "unknown_driver"
    errors = config_error_dicts(exc) if kind != "usage_error" else []
    if state().json:
        message = str(exc) if not errors else format_config_error(errors[0])
        emit_json({"ok": False, "error_kind": kind, "message": message, "errors": errors})
    elif errors and isinstance(exc, (ConfigError, ConfigErrors)):
        for e in errors:
            echo(f"error: {format_config_error(e)}", err=True)
    else:
        echo(f"error: {exc}", err=True)
    raise SystemExit(EXIT_USAGE)


def _fail_failed(st: State, kind: str, message: str, prefix: str = "") -> NoReturn:
    """Report a failure that is not the user's input (json: stdout) and exit 1."""
    if st.json:
        emit_json({"ok": False, "error_kind": kind, "message": message})
    else:
        echo(f"error: {prefix}{message}", err=True)
    raise SystemExit(EXIT_FAILED) from None


def command_body(f: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: logging, global options, and errors mapped to exit codes."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        st = state()
        undo_logging = setup_logging(st.verbose)
        known = set(_secrets)  # a command's secrets are its own (many run in one process)
        try:
            f(*args, **kwargs)
        except CommandFailed:
            raise SystemExit(EXIT_FAILED) from None
        except (UsageProblem, ConfigError, ConfigErrors, ParamError, UnknownDriverError) as exc:
            fail_usage(exc)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except OSError as exc:  # the machine said no (a path too long, no permission)
            where = f"{exc.filename}: " if exc.filename else ""
            _fail_failed(st, "os_error", scrub(f"{where}{exc.strerror or exc}"))
        except Exception as exc:  # never a raw traceback: it could carry a secret
            if st.verbose >= 2:
                echo(scrub(traceback.format_exc()).rstrip(), err=True)
            message = scrub(f"{type(exc).__name__}: {exc}")
            _fail_failed(st, "internal_error", message, prefix="internal error: ")
        finally:
            undo_logging()
            _secrets.intersection_update(known)

    return global_options(wrapper)


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive action; without a terminal and without --yes, refuse."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageProblem(
            f"refusing without confirmation: {question} (no terminal to ask on; "
            "pass --yes to confirm)",
            kind="not_confirmed",
        )
    if not click.confirm(question, default=False, err=True):
        echo("aborted: nothing was done", err=True)
        raise SystemExit(EXIT_FAILED)
