"""``hafence``: inspect and test fence devices, watchdogs and the HA simulator.

Modelled on Pacemaker's ``stonith_admin``. Every command prints a human table by
default and JSON with ``--output json``; exit status 0 ok, 1 the action failed, 2 a
usage or configuration error. Global options (``--output``, ``--timeout``, ``-v``) go
before or after the command.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys

import click

from hafence import __version__
from hafence.cli.output import global_options

# command -> "module:object". Imported when used (or listed by --help): a one-shot
# command pays for its own module only, not for the simulator's or the watchdog's.
COMMANDS = {
    "plugins": "hafence.cli.drivers:plugins_group",
    "drivers": "hafence.cli.drivers:drivers_group",
    "driver": "hafence.cli.drivers:driver_group",
    "device": "hafence.cli.devices:device",
    "fence": "hafence.cli.fence:fence_cmd",
    "chain": "hafence.cli.fence:chain_cmd",
    "config": "hafence.cli.fence:config_group",
    "history": "hafence.cli.fence:history_cmd",
    "demo": "hafence.cli.demo:demo",
    "watchdog": "hafence.cli.watchdog:watchdog",
    "sim": "hafence.cli.sim:sim",
    "lab": "hafence.cli.lab:lab",
}


class LazyGroup(click.Group):
    """A group whose subcommands (:data:`COMMANDS`) are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hafence")
@global_options
def cli() -> None:
    """Fencing and HA manager: test fence devices and watchdogs safely."""


def main() -> None:
    """The ``hafence`` console script: :func:`cli`, then a quick exit.

    When a one-shot command is done, the interpreter's own teardown of the modules it
    imported (click, asyncio, pyghmi, cryptography: their dicts, the cyclic GC) costs
    another 10-20 ms, as much as the IPMI exchange. So once no thread but daemons is
    left, the atexit handlers run, the output is flushed and the process leaves with
    :func:`os._exit`: the same output and exit status as ``sys.exit``, minus the teardown.
    """
    try:
        cli()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    threading = sys.modules.get("threading")  # not imported: no other thread exists
    busy = threading is not None and any(
        not t.daemon for t in threading.enumerate() if t is not threading.main_thread()
    )
    if busy or not (code is None or isinstance(code, int)):
        sys.exit(code)  # a thread still works, or a message to print: the usual exit
    atexit._run_exitfuncs()
    status = code if isinstance(code, int) else 0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            status = 120  # what the interpreter returns when it cannot flush stdio
    os._exit(status)
