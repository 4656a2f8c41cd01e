"""``hafence``: inspect and test fence devices, watchdogs and the HA simulator."""

from __future__ import annotations

import click

from hafence import __version__
from hafence.cli.sim import sim
from hafence.cli.watchdog import watchdog


@click.group()
@click.version_option(__version__, prog_name="hafence")
def cli() -> None:
    """Fencing and HA manager: test fence devices and watchdogs safely."""


cli.add_command(watchdog)
cli.add_command(sim)
