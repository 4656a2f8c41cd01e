"""Notifications of fence and recovery events: SMTP mail, a JSON webhook, the log.

``hafence-crm --notify-config /etc/hafence/notify.cfg`` (or ``$HAFENCE_NOTIFY_CFG``)
starts a :class:`Notifier`: it hears the master's HA log and the fencer's attempts,
groups them into one notification per fence episode (a failed fence at once), and
delivers on a worker thread with bounded timeouts. See docs/operators.md.
"""

from hafence.notify.config import Target, load_notify_config, parse_notify_config
from hafence.notify.events import Episodes, Event, Notification, event_from_record
from hafence.notify.notifier import Notifier

__all__ = [
    "Episodes",
    "Event",
    "Notification",
    "Notifier",
    "Target",
    "event_from_record",
    "load_notify_config",
    "parse_notify_config",
]
