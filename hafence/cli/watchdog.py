"""``hafence watchdog``: inspect and drill the node's watchdog."""

from __future__ import annotations

import click


@click.group()
def watchdog() -> None:
    """Inspect and test the watchdog and the watchdog multiplexer."""
