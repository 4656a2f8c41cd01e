"""``hafence``: inspect and test fence devices, watchdogs and the HA simulator.

Modelled on Pacemaker's ``stonith_admin``. Every command prints a human table by
default and JSON with ``--output json``; exit status 0 ok, 1 the action failed, 2 a
usage or configuration error. Global options (``--output``, ``--timeout``, ``-v``) go
before or after the command.
"""

from __future__ import annotations

import click

from hafence import __version__
from hafence.cli.demo import demo
from hafence.cli.devices import device
from hafence.cli.drivers import driver_group, drivers_group, plugins_group
from hafence.cli.fence import chain_cmd, config_group, fence_cmd, history_cmd
from hafence.cli.lab import lab
from hafence.cli.output import global_options
from hafence.cli.sim import sim
from hafence.cli.watchdog import watchdog


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hafence")
@global_options
def cli() -> None:
    """Fencing and HA manager: test fence devices and watchdogs safely."""


for _command in (
    plugins_group,
    drivers_group,
    driver_group,
    device,
    fence_cmd,
    chain_cmd,
    config_group,
    history_cmd,
    demo,
    watchdog,
    sim,
    lab,
):
    cli.add_command(_command)
