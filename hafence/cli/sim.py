"""``hafence sim``: the deterministic cluster simulator.

``hafence sim run DIR`` runs a scenario directory (Proxmox's HA regression-test format,
see ``hafence.sim.scenario``) and prints the HA log; ``hafence sim compare DIR`` diffs that
log against the scenario's ``log.expect`` (exit 0 on a match, 1 with a unified diff).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hafence.errors import HafenceError

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def _fail(exc: Exception) -> None:
    click.echo(f"hafence sim: {exc}", err=True)
    sys.exit(2)


@click.group()
def sim() -> None:
    """Run HA scenarios on a simulated cluster."""


@sim.command("run")
@click.argument("scenario", type=_DIR)
@click.option(
    "--log",
    "log_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the HA log to this file.",
)
def run_cmd(scenario: Path, log_file: Path | None) -> None:
    """Run SCENARIO and print its HA log as it happens."""
    from hafence.sim import scenario as sc

    reason = sc.unsupported_reason(scenario)
    if reason:
        click.echo(f"warning: {scenario.name} uses {reason}: not simulated faithfully", err=True)
    try:
        text = sc.run(scenario, echo=click.echo)
    except BrokenPipeError:  # `| head`
        sys.stderr.close()
        sys.exit(0)
    except (HafenceError, ValueError, OSError) as exc:
        _fail(exc)
        return
    if log_file is not None:
        log_file.write_text(text)


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
        reason = sc.unsupported_reason(d)
        try:
            result = sc.compare(d)
        except (HafenceError, ValueError, OSError) as exc:
            click.echo(f"ERROR    {d.name}: {exc}")
            failed += 1
            continue
        if result.matched:
            click.echo(f"match    {d.name}")
            continue
        failed += 1
        note = f" (uses {reason}, not supported)" if reason else ""
        click.echo(f"MISMATCH {d.name}{note}")
        if not quiet:
            click.echo(result.diff, nl=False)
    if len(scenarios) > 1:
        click.echo(f"{len(scenarios) - failed} of {len(scenarios)} scenarios match")
    sys.exit(1 if failed else 0)
