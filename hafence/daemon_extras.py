"""What the HA daemons offer operators around the HA logic itself: Prometheus metrics,
notifications, systemd readiness and journal fields. :mod:`hafence.daemons` calls
:func:`extra_options` (click options) and :func:`attach` (wraps the state machine so
every round feeds these); the HA loop itself stays untouched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from hafence import systemd
from hafence.errors import ConfigError, ConfigErrors

log = logging.getLogger("hafence.ha")


def extra_options(role: str) -> Any:
    """``--metrics`` for both daemons, ``--notify-config`` for the CRM."""

    def deco(f: Any) -> Any:
        f = click.option(
            "--metrics", "metrics_addr", metavar="[HOST:]PORT",
            envvar=[f"HAFENCE_{role.upper()}_METRICS", "HAFENCE_METRICS"],
            help="Serve Prometheus metrics on http://HOST:PORT/metrics (HOST defaults to "
            "127.0.0.1; off unless given).",
        )(f)  # fmt: skip
        if role == "crm":
            f = click.option(
                "--notify-config", type=click.Path(dir_okay=False, path_type=Path),
                envvar="HAFENCE_NOTIFY_CFG",
                help="notify.cfg: mail/webhook/log targets for fence and recovery events.",
            )(f)  # fmt: skip
        return f

    return deco


def journal_handler() -> logging.Handler | None:
    """A journald handler when our stderr goes to the journal anyway (under systemd)."""
    return systemd.JournalHandler() if systemd.journal_available() else None


@dataclass
class Extras:
    env: Any
    daemon: Any
    watchdog_socket: str | None
    metrics: Any = None
    notifier: Any = None
    ready: bool = False
    status: str = ""
    watchdog_every: float | None = field(default_factory=systemd.watchdog_interval)
    _last_ping: float = 0.0

    def after_round(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_round(seconds, self.daemon, self.env)
        if self.notifier is not None:
            self.notifier.round_done()
        self._systemd()

    def _watchdog_ready(self) -> bool:
        """The watchdog-mux answers and feeds its device (not tripped)."""
        if self.watchdog_socket is None:
            return True  # --no-watchdog: warned about at start
        from hafence.watchdog.client import mux_status
        from hafence.watchdog.errors import WatchdogError

        try:
            return bool(mux_status(self.watchdog_socket, io_timeout=1.0).get("feeding"))
        except (WatchdogError, OSError, ValueError):
            return False

    def _systemd(self) -> None:
        if not self.ready and self.env.quorate() and self._watchdog_ready():
            # the store answers and the watchdog is there: this daemon can protect its node
            self.ready = True
            systemd.notify("READY=1")
        status = str(getattr(self.daemon, "status", ""))
        if self.ready and status != self.status:
            self.status = status
            systemd.notify(f"STATUS={self.env.nodename}/{self.env.role}: {status}")
        now = time.monotonic()
        if self.watchdog_every and now - self._last_ping >= self.watchdog_every:
            self._last_ping = now
            systemd.notify("WATCHDOG=1")

    def close(self) -> None:
        systemd.notify("STOPPING=1")
        if self.notifier is not None:
            self.notifier.close()
        if self.metrics is not None:
            self.metrics.close()


def attach(env: Any, daemon: Any, o: dict[str, Any]) -> tuple[Any, Extras]:
    """Start metrics/notifier as asked; returns (the daemon to run, the extras to close)."""
    from hafence.metrics import Metrics, RoundObserver
    from hafence.plugins import get_registry

    extras = Extras(env, daemon, env.watchdog_socket)  # None with --no-watchdog
    registry = env.registry or get_registry()
    if o.get("metrics_addr"):
        extras.metrics = Metrics(env.nodename, env.role)
        try:
            extras.metrics.serve(o["metrics_addr"])
        except (ValueError, OSError) as exc:
            raise click.UsageError(f"--metrics {o['metrics_addr']}: {exc}") from None
        registry.register(extras.metrics, name="hafence-metrics")
    if o.get("notify_config"):
        from hafence.notify import Notifier, load_notify_config

        try:
            targets = load_notify_config(o["notify_config"])
        except (ConfigError, ConfigErrors) as exc:
            raise click.UsageError(str(exc)) from None
        extras.notifier = Notifier(targets).start(registry)
        names = ", ".join(t.label for t in targets) or "none"
        env.log("info", f"notifications of fence and recovery events go to: {names}")
    return RoundObserver(daemon, [extras.after_round]), extras
