"""The notifier: HA log events and fence attempts in, notifications out on a worker.

It listens on logger ``hafence.ha`` (a logging handler) and on the plugin hook
``hafence_fence_event``; :class:`~hafence.notify.events.Episodes` decides what to send;
a worker thread delivers to every target with the target's own timeout. The CRM's round
never waits for a mail server: handing a notification over is a non-blocking put on a
bounded queue (a full queue drops it, loudly).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from hafence.hookspecs import hookimpl
from hafence.notify.config import Target
from hafence.notify.events import Episodes, Notification, event_from_record
from hafence.notify.targets import deliver

log = logging.getLogger("hafence.notify")

HA_LOGGER = "hafence.ha"
SETTLE = 30.0  # without round_done() calls: sum an episode up this long after its success
PENDING_AFTER = 300.0  # a fence unresolved this long is announced (once)


class _Hook:
    """The pluggy plugin object through which the fencer reports its attempts."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    @hookimpl
    def hafence_fence_event(self, event: dict[str, Any]) -> None:
        self.notifier.fence_attempt(event)


class Notifier(logging.Handler):
    def __init__(
        self, targets: list[Target], *, queue_size: int = 100, pending_after: float = PENDING_AFTER
    ) -> None:
        super().__init__(level=logging.INFO)
        self.targets = targets
        self.episodes = Episodes()
        self.pending_after = pending_after
        self._lock = threading.Lock()
        self._queue: queue.Queue[Notification | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._success_at: dict[str, float] = {}
        self._old_level = logging.NOTSET
        self.sent: list[tuple[str, str]] = []  # (target, subject) delivered, for status/tests

    # -- inputs ------------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        try:
            ev = event_from_record(record)
            if ev is None:
                return
            with self._lock:
                notes = self.episodes.add(ev)
                ep = self.episodes.episodes.get(ev.node)
                if ep is not None and ep.succeeded and not ep.sent_summary:
                    self._success_at.setdefault(ev.node, time.monotonic())
            self._enqueue(notes)
        except Exception:  # a logging handler must never break the caller
            self.handleError(record)

    def fence_attempt(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.episodes.add_attempt(record)

    def round_done(self) -> None:
        """End of a CRM round: episodes that ended in it are summed up now."""
        with self._lock:
            notes = self.episodes.flush()
            self._success_at.clear()
        self._enqueue(notes)

    def _flush_settled(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._enqueue(self.episodes.overdue(self.pending_after))
            if not any(now - t >= SETTLE for t in self._success_at.values()):
                return
            notes = self.episodes.flush()
            self._success_at.clear()
        self._enqueue(notes)

    def _enqueue(self, notes: list[Notification]) -> None:
        for n in notes:
            try:
                self._queue.put_nowait(n)
            except queue.Full:
                log.error("notify: queue full, dropping notification '%s'", n.subject)

    # -- delivery ------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            try:
                n = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._flush_settled()
                continue
            if n is None:
                return
            for t in self.targets:
                t0 = time.monotonic()
                try:
                    deliver(t, n)
                except Exception as exc:
                    log.error("notify: %s failed after %.1fs: %s ('%s')",
                              t.label, time.monotonic() - t0, exc, n.subject)  # fmt: skip
                else:
                    self.sent.append((t.label, n.subject))
                    log.info("notify: %s sent '%s'", t.label, n.subject)

    def start(self, registry: Any = None) -> Notifier:
        """Listen on the HA log and the fence hook; start the delivery worker."""
        if registry is None:
            from hafence.plugins import get_registry

            registry = get_registry()
        registry.register(_Hook(self), name="hafence-notify")
        ha = logging.getLogger(HA_LOGGER)
        self._old_level = ha.level
        if ha.getEffectiveLevel() > logging.INFO:  # recoveries are logged at info
            ha.setLevel(logging.INFO)
        ha.addHandler(self)
        self._thread = threading.Thread(target=self._worker, name="hafence-notify", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop listening; deliver what is queued within ``timeout``."""
        ha = logging.getLogger(HA_LOGGER)
        ha.removeHandler(self)
        ha.setLevel(self._old_level)
        if self._thread is not None:
            self.round_done()
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout)
        super().close()
