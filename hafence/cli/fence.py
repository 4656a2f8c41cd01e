"""``hafence fence NODE``, ``chain NODE``, ``config check``, ``history``: a node's chain.

``fence NODE --dry-run`` checks every device of the chain (built from fence.cfg,
reachable, credentials good, status readable), powers nothing off and prints the
chain's worst-case time budget. ``fence NODE`` runs the real thing through
:class:`~hafence.fence.Fencer`: levels in order, each off confirmed by status polling,
retries with back-off, every attempt in the fence history.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from hafence.cli import output as out
from hafence.cli.devices import (
    config_option,
    history_option,
    load_config,
    open_history,
    timeout_factory,
)
from hafence.cli.output import CommandFailed, Seconds, UsageProblem
from hafence.fence import CheckReport, Fencer, FenceResult, check_drivers, driver_class
from hafence.fence.config import FenceConfig, masked_args
from hafence.fence.fencer import CONFIG_ERROR_KIND
from hafence.fence.history import FenceHistory, default_history_path
from hafence.secrets import MASK


def _chain_or_fail(cfg: FenceConfig, node: str) -> None:
    if not cfg.chain(node):
        nodes = ", ".join(cfg.nodes()) or "none"
        raise UsageProblem(
            f"no fence device connects node '{node}' in {cfg.path} (nodes: {nodes})",
            kind="no_device",
        )


def _fencer(cfg: FenceConfig, history: FenceHistory | None, retries: int, backoff: float):
    return Fencer(
        cfg,
        history=history,
        retries=retries,
        backoff=backoff,
        driver_factory=timeout_factory(out.state().timeout),
    )


# -- fence -------------------------------------------------------------------------
@click.command("fence")
@click.argument("node")
@config_option
@click.option("--dry-run", is_flag=True, help="Check every device; power nothing off.")
@click.option(
    "--action",
    type=click.Choice(["off", "reboot", "on"]),
    default="off",
    show_default=True,
    help="off fences, reboot fences then powers on, on unfences.",
)
@click.option("--retries", type=click.IntRange(min=0, max=100), default=2, show_default=True)
@click.option(
    "--backoff", type=Seconds(min=0, max=3600), default=1.0, show_default=True, metavar="SECONDS"
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@history_option
@out.command_body
def fence_cmd(
    node: str,
    config_path: str,
    dry_run: bool,
    action: str,
    retries: int,
    backoff: float,
    yes: bool,
    history_path: str | None,
) -> None:
    """Fence NODE through its fence.cfg chain (verified), or check it with --dry-run."""
    cfg = load_config(config_path)
    _chain_or_fail(cfg, node)
    if dry_run:
        report = asyncio.run(_fencer(cfg, None, retries, backoff).check(node))
        show_check(report, backoff)
        if any(c.error_kind == CONFIG_ERROR_KIND for c in report.devices):
            raise SystemExit(out.EXIT_USAGE)
        if not report.ok:
            raise CommandFailed
        return
    if action != "on":
        levels = len(cfg.chain(node))
        out.confirm(f"fence node '{node}' ({action}) through its chain of {levels} level(s)?", yes)
    history = open_history(history_path)
    result = asyncio.run(_fencer(cfg, history, retries, backoff).fence(node, action))
    show_fence(result)
    if not result.ok:
        failed = [d for a in result.attempts for lv in a.levels for d in lv.devices if not d.ok]
        if failed and all(d.error_kind == CONFIG_ERROR_KIND for d in failed):
            raise SystemExit(out.EXIT_USAGE)
        raise CommandFailed


def show_check(report: CheckReport, backoff: float) -> None:
    if out.state().json:
        out.emit_json({**report.to_dict(), "dry_run": True})
        return
    out.echo(
        f"dry run for node '{report.node}': {report.levels} level(s), "
        f"{len(report.devices)} device(s) checked, nothing powered off"
    )
    out.echo(
        out.table(
            ["LEVEL", "DEVICE", "DRIVER", "RESULT", "STATE", "TIME", "BUDGET"],
            [
                [
                    c.level,
                    c.device,
                    c.driver,
                    out.verdict(c.ok, c.error_kind),
                    c.state,
                    out.seconds(c.duration),
                    out.seconds(c.budget_seconds),
                ]
                for c in report.devices
            ],
        )
    )
    for c in report.devices:
        if not c.ok:
            out.echo(f"  level {c.level} device '{c.device}': {c.error_kind}: {c.message}")
    attempts = report.retries + 1
    out.echo(
        f"time budget: {out.seconds(report.attempt_budget_seconds)} per pass over the chain, "
        f"{out.seconds(report.budget_seconds)} worst case ({attempts} attempt(s), "
        f"back-off from {backoff:g}s)"
    )
    if report.ok:
        out.echo("result: OK - every device reachable, credentials good, status readable")
    else:
        out.echo(f"result: FAILED - {report.message}")


def show_fence(result: FenceResult) -> None:
    if out.state().json:
        out.emit_json(result.to_dict())
        return
    rows = []
    for a in result.attempts:
        for lv in a.levels:
            for d in lv.devices:
                rows.append(
                    [
                        a.attempt,
                        f"{lv.level} ({lv.name})",
                        d.device,
                        d.driver,
                        d.action,
                        out.verdict(d.ok, d.error_kind),
                        d.state,
                        out.seconds(d.duration),
                    ]
                )
    if rows:
        headers = ["ATTEMPT", "LEVEL", "DEVICE", "DRIVER", "ACTION", "RESULT", "STATE", "TIME"]
        out.echo(out.table(headers, rows))
    for a in result.attempts:
        for lv in a.levels:
            for d in lv.devices:
                if not d.ok:
                    out.echo(
                        f"  attempt {a.attempt} level {lv.level} device '{d.device}': "
                        f"{d.error_kind}: {d.message}"
                    )
    if result.ok:
        out.echo(
            f"node '{result.node}' fenced: {result.action} confirmed by level {result.level} "
            f"({result.level_name}) after {len(result.attempts)} attempt(s) in "
            f"{out.seconds(result.duration)}"
        )
    else:
        out.echo(
            f"node '{result.node}' NOT fenced: {result.error_kind}: {result.message}", err=True
        )


# -- chain -------------------------------------------------------------------------
def _masked_options(driver: str, args: tuple[tuple[str, str | None], ...]) -> list:
    """Mask by key name, and by the driver's schema where the driver is known."""
    secret: set[str] = set()
    try:
        cls = driver_class(driver)
        for p in cls.all_params():
            if p.secret:
                secret.update((p.name, *p.aliases))
    except Exception:  # an unknown driver is reported by 'config check', not here
        pass
    return [(k, MASK if v is not None and k in secret else v) for k, v in masked_args(args)]


def _fmt_args(args: list) -> str:
    return " ".join(k if v is None else f"{k}={v}" for k, v in args)


@click.command("chain")
@click.argument("node")
@config_option
@out.command_body
def chain_cmd(node: str, config_path: str) -> None:
    """Show NODE's fence chain: levels in order, their devices (secrets masked)."""
    cfg = load_config(config_path)
    _chain_or_fail(cfg, node)
    levels = cfg.chain(node)
    data: dict[str, Any] = {"node": node, "config": cfg.path, "levels": []}
    for lv in levels:
        devices = []
        for d in lv.devices:
            devices.append(
                {
                    "device": d.label,
                    "driver": d.driver,
                    "options": dict(_masked_options(d.driver, d.args)),
                    "command": d.command(),
                    "device_line": d.device_line,
                    "connect_line": d.connect_line,
                }
            )
        data["levels"].append({"level": lv.number, "name": lv.name, "devices": devices})
    if out.state().json:
        out.emit_json(data)
        return
    out.echo(f"fence chain of node '{node}' ({cfg.path}); levels are tried in order,")
    out.echo("every device of a level must confirm off")
    rows = []
    for lv in data["levels"]:
        for d in lv["devices"]:
            where = f"{d['device_line']},{d['connect_line']}"
            opts = _fmt_args(list(d["options"].items()))
            rows.append([lv["level"], d["device"], d["driver"], where, opts])
    out.echo(out.table(["LEVEL", "DEVICE", "DRIVER", "LINES", "OPTIONS"], rows))


# -- config check ----------------------------------------------------------------------
@click.group("config")
def config_group() -> None:
    """Check fence.cfg."""


@config_group.command("check")
@click.argument("file", required=False)
@config_option
@out.command_body
def config_check(file: str | None, config_path: str) -> None:
    """Parse fence.cfg and build every device; errors name file:line: field.

    Warnings (exit 0) name what works but is unsafe, e.g. a fence agent that would put a
    password on a command line where ``ps`` shows it.
    """
    cfg = load_config(file or config_path)
    warnings = check_drivers(cfg)  # FenceConfigErrors: exit 2 listing each file:line: field
    nodes = cfg.nodes()
    subdevices = sum(len(d.subdevices) for d in cfg.devices.values())
    chains = {n: len(cfg.chain(n)) for n in nodes}
    if out.state().json:
        out.emit_json(
            {
                "ok": True,
                "file": cfg.path,
                "devices": subdevices,
                "nodes": nodes,
                "levels": chains,
                "warnings": [str(w) for w in warnings],
            }
        )
        return
    for w in warnings:
        out.echo(f"warning: {w}", err=True)
    out.echo(f"{cfg.path}: OK, {subdevices} device(s), {len(nodes)} node(s)")
    if nodes:
        out.echo(out.table(["NODE", "LEVELS"], [[n, chains[n]] for n in nodes]))
    unconnected = [
        s.label for d in cfg.devices.values() for s in d.sorted_subdevices() if not s.connections
    ]
    if unconnected:
        out.echo(f"note: not connected to any node: {', '.join(unconnected)}")


# -- history -----------------------------------------------------------------------
MAX_SKIPPED_SHOWN = 10


@click.command("history")
@click.argument("node", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@history_option
@out.command_body
def history_cmd(node: str | None, limit: int, history_path: str | None) -> None:
    """Show the fence history (every attempt), oldest first, optionally for one NODE."""
    history = FenceHistory(history_path) if history_path else FenceHistory(default_history_path())
    found = history.scan(node, limit=limit)  # ConfigError (unreadable file): exit 2
    records = found.records
    for problem in found.skipped[:MAX_SKIPPED_SHOWN]:
        out.echo(f"warning: {problem}", err=True)
    if len(found.skipped) > MAX_SKIPPED_SHOWN:
        more = len(found.skipped) - MAX_SKIPPED_SHOWN
        out.echo(f"warning: {more} more invalid line(s) skipped in {history.path}", err=True)
    if out.state().json:
        out.emit_json([r.to_dict() for r in records])
        return
    if not records:
        out.echo(f"no fence history{f' for node {node!r}' if node else ''} in {history.path}")
        return
    rows = []
    for r in records:
        rows.append(
            [
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.time)),
                r.node or "-",
                r.action,
                out.verdict(r.ok, r.error_kind),
                r.level if r.level is not None else "-",
                ",".join(r.devices) or "-",
                r.attempt,
                out.seconds(r.duration),
                r.actor,
            ]
        )
    headers = ["TIME", "NODE", "ACTION", "RESULT", "LEVEL", "DEVICES", "TRY", "DURATION", "BY"]
    out.echo(out.table(headers, rows))
