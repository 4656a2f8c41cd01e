"""``hafence sim``: the deterministic cluster simulator."""

from __future__ import annotations

import click


@click.group()
def sim() -> None:
    """Run HA scenarios on a simulated cluster."""
