"""Fence and recovery events, and the episodes that turn them into few notifications.

The master CRM reports what it decides in its HA log (``hafence.ha``); RealEnv tags each
record with ``hafence_node``/``hafence_role``/``hafence_level``. :func:`event_from_record`
recognises the events Proxmox mails about:

==========================  ======================================================
kind                        HA log line (level)
==========================  ======================================================
``fence_started``           ``FENCE: Try to fence node 'N'`` (email)
``fence_failed``            ``FAILED: hardware fence of node 'N' ...`` (email)
``fence_succeeded``         ``SUCCEED: ... node 'N'`` (email)
``service_recovered``       ``recover service 'S' from fenced node 'N' to node 'T'``
``service_unrecoverable``   ``recovering service 'S' from fenced node 'N' failed ...``
==========================  ======================================================

An **episode** is the fencing of one node: from its first event until the CRM round in
which the fence succeeded and the node's services were recovered (the CRM recovers them
in that same round). Per episode one notification is sent when it ends (started,
attempts, succeeded, recovered services); a failed fence is sent at once, once, and so
is an episode still unresolved after a while (``pending_after``). Every
event kind is sent at most once per episode and service, so a fence retried every
round, or a service that cannot be recovered round after round, sends no storm.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

FENCE_STARTED = "fence_started"
FENCE_FAILED = "fence_failed"
FENCE_SUCCEEDED = "fence_succeeded"
SERVICE_RECOVERED = "service_recovered"
SERVICE_UNRECOVERABLE = "service_unrecoverable"

_PATTERNS = (
    (FENCE_STARTED, re.compile(r"^FENCE: Try to fence node '(?P<node>[^']+)'")),
    (FENCE_FAILED, re.compile(r"^FAILED: hardware fence of node '(?P<node>[^']+)'")),
    (FENCE_SUCCEEDED, re.compile(r"^SUCCEED: .*node '(?P<node>[^']+)'")),
    (SERVICE_RECOVERED, re.compile(
        r"^recover service '(?P<service>[^']+)' from fenced node '(?P<node>[^']+)' "
        r"to node '(?P<target>[^']+)'")),
    (SERVICE_RECOVERED, re.compile(
        r"^recover service '(?P<service>[^']+)' to previous failed and fenced node "
        r"'(?P<node>[^']+)'")),
    (SERVICE_UNRECOVERABLE, re.compile(
        r"^recovering service '(?P<service>[^']+)' from fenced node '(?P<node>[^']+)' "
        r"failed")),
)  # fmt: skip
_PREFIX = re.compile(r"^\S+/(crm|lrm): ")


@dataclass
class Event:
    kind: str
    node: str  # the fenced node
    text: str  # the HA log line
    time: float = field(default_factory=time.time)
    reporter: str = ""  # the node whose CRM reported it
    service: str | None = None
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def event_from_record(record: logging.LogRecord) -> Event | None:
    """The event an HA log record reports, or None."""
    if getattr(record, "hafence_role", None) != "crm":
        return None
    text = _PREFIX.sub("", record.getMessage())
    for kind, pattern in _PATTERNS:
        m = pattern.match(text)
        if m:
            groups = m.groupdict()
            return Event(
                kind, groups["node"], text, record.created,
                reporter=getattr(record, "hafence_node", ""),
                service=groups.get("service"), target=groups.get("target") or (
                    groups["node"] if kind == SERVICE_RECOVERED else None),
            )  # fmt: skip
    return None


@dataclass
class Episode:
    """The fencing of one node and what happened to its services."""

    node: str
    events: list[Event] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # fence history records
    seen: set[tuple[str, str | None]] = field(default_factory=set)
    succeeded: bool = False
    sent_summary: bool = False
    sent_pending: bool = False

    @property
    def started(self) -> float:
        return self.events[0].time if self.events else time.time()


@dataclass
class Notification:
    """What the targets deliver: a subject, a text body and the structured data."""

    subject: str
    body: str
    data: dict[str, Any]


class Episodes:
    """Turns events into notifications: one per episode, failures at once, no repeats.

    Not thread-safe: the notifier calls it under its own lock.
    """

    def __init__(self) -> None:
        self.episodes: dict[str, Episode] = {}

    def add(self, ev: Event) -> list[Notification]:
        ep = self.episodes.get(ev.node)
        if ev.kind == FENCE_STARTED and (ep is None or ep.sent_summary):
            ep = self.episodes[ev.node] = Episode(ev.node)  # a new fence of this node
        elif ep is None:  # e.g. a new master that takes over a fence already running
            ep = self.episodes[ev.node] = Episode(ev.node)
        key = (ev.kind, ev.service)
        if key in ep.seen:
            return []  # retried every round: said once already
        ep.seen.add(key)
        ep.events.append(ev)
        if ev.kind == FENCE_SUCCEEDED:
            ep.succeeded = True
        if ev.kind == FENCE_FAILED:
            return [self._render(ep, [ev], f"hafence: FAILED to fence node '{ev.node}'")]
        if ep.sent_summary and ev.kind in (SERVICE_RECOVERED, SERVICE_UNRECOVERABLE):
            # after the summary: a service's later fate is news, once
            what = "recovered" if ev.kind == SERVICE_RECOVERED else "could not be recovered"
            return [self._render(ep, [ev], f"hafence: service '{ev.service}' {what}")]
        return []

    def add_attempt(self, record: dict[str, Any]) -> None:
        """A fence attempt (the fencer's history record, secrets masked)."""
        node = record.get("node") or ""
        if record.get("action") != "off" or not node:
            return
        ep = self.episodes.get(node)
        if ep is None or ep.sent_summary:
            ep = self.episodes[node] = Episode(node)
        ep.attempts.append(record)

    def flush(self) -> list[Notification]:
        """End of a CRM round: every episode whose fence succeeded is summed up, once."""
        out = []
        for ep in self.episodes.values():
            if ep.succeeded and not ep.sent_summary:
                ep.sent_summary = True
                out.append(self._render(ep, ep.events, f"hafence: node '{ep.node}' fenced"))
        return out

    def overdue(self, after: float, now: float | None = None) -> list[Notification]:
        """Episodes still unresolved ``after`` seconds past their start: said once, so
        a fence that hangs (no hardware answer, no agent lock) is not silent."""
        now = time.time() if now is None else now
        out = []
        for ep in self.episodes.values():
            if ep.succeeded or ep.sent_summary or ep.sent_pending or not ep.events:
                continue
            if now - ep.started >= after:
                ep.sent_pending = True
                subject = f"hafence: fencing node '{ep.node}' still in progress"
                out.append(self._render(ep, ep.events, subject))
        return out

    def _render(self, ep: Episode, events: list[Event], subject: str) -> Notification:
        lines = [subject, ""]
        for ev in events:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev.time))
            lines.append(f"{stamp} {ev.reporter}/crm: {ev.text}")
        if ep.attempts:
            lines += ["", "Fence attempts:"]
            for a in ep.attempts:
                verdict = "ok" if a.get("ok") else f"FAILED ({a.get('error_kind')})"
                for r in a.get("results") or []:
                    lines.append(
                        f"  attempt {a.get('attempt')}: device '{r.get('device')}' "
                        f"({r.get('driver')}) {r.get('action')} "
                        f"{'confirmed ' + str(r.get('state')) if r.get('ok') else verdict} "
                        f"in {float(r.get('duration') or 0):.2f}s"
                        + (f": {r.get('message')}" if r.get("message") else "")
                    )
        data = {
            "subject": subject,
            "node": ep.node,
            "events": [e.to_dict() for e in events],
            "attempts": [
                {k: a.get(k) for k in ("attempt", "ok", "error_kind", "message", "duration",
                                       "level", "devices", "time", "actor")}
                | {"results": [{k: r.get(k) for k in ("device", "driver", "action", "ok",
                                                      "state", "error_kind", "message",
                                                      "duration")}
                               for r in a.get("results") or []]}
                for a in ep.attempts
            ],
        }  # fmt: skip
        return Notification(subject, "\n".join(lines) + "\n", data)
