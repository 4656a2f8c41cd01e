"""``hafence sim``: the deterministic cluster simulator.

``hafence sim run DIR`` runs a scenario directory (Proxmox's HA regression-test format,
see ``hafence.sim.scenario``) and prints the HA log; ``hafence sim compare DIR`` diffs that
log against the scenario's ``log.expect`` (exit 0 on a match, 1 with a unified diff).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hafence.cli.output import FilePath
from hafence.errors import HafenceError

_DIR = FilePath(exists=True, file_okay=False, path_type=Path)


def _fail(exc: Exception) -> None:
    click.echo(f"hafence sim: {_describe(exc)}", err=True)
    sys.exit(2)


def _describe(exc: Exception) -> str:
    """One line for any failure to load or run a scenario: ours say what is wrong, any
    other exception (a scenario file the simulator chokes on) is named by its type."""
    if isinstance(exc, (HafenceError, ValueError, OSError)):
        return str(exc)
    return f"cannot run this scenario ({type(exc).__name__}: {exc})"


@click.group()
def sim() -> None:
    """Run HA scenarios on a simulated cluster."""


@sim.command("run")
@click.argument("scenario", type=_DIR)
@click.option(
    "--log",
    "log_file",
    type=FilePath(dir_okay=False, path_type=Path),
    help="Also write the HA log to this file.",
)
def run_cmd(scenario: Path, log_file: Path | None) -> None:
    """Run SCENARIO and print its HA log as it happens."""
    from hafence.sim import scenario as sc

    try:
        text = sc.run(scenario, echo=click.echo)
    except BrokenPipeError:  # `| head`
        sys.stderr.close()
        sys.exit(0)
    except Exception as exc:  # never a traceback for a bad scenario directory
        _fail(exc)
        return
    if log_file is not None:
        try:
            log_file.write_text(text)
        except OSError as exc:
            _fail(exc)


@sim.command("compare")
@click.argument("scenarios", type=_DIR, nargs=-1, required=True)
@click.option("-q", "--quiet", is_flag=True, help="Only the summary, no diffs.")
def compare_cmd(scenarios: tuple[Path, ...], quiet: bool) -> None:
    """Run each SCENARIO and compare its log with log.expect (padding ignored)."""
    from hafence.sim import scenario as sc

    failed = 0
    for d in scenarios:
        if not (d / "log.expect").exists():
            _fail(HafenceError(f"{d}: no log.expect to compare with"))
        try:
            result = sc.compare(d)
        except Exception as exc:  # one line per broken scenario, then the next one
            click.echo(f"ERROR    {d.name}: {_describe(exc)}")
            failed += 1
            continue
        if result.matched:
            click.echo(f"match    {d.name}")
            continue
        failed += 1
        click.echo(f"MISMATCH {d.name}")
        if not quiet:
            click.echo(result.diff, nl=False)
    if len(scenarios) > 1:
        click.echo(f"{len(scenarios) - failed} of {len(scenarios)} scenarios match")
    sys.exit(1 if failed else 0)
