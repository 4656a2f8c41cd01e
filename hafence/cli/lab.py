"""``hafence lab``: a real hafence cluster on this machine, and chaos to prove it safe.

Each node is a network namespace running its own etcd member, watchdog-mux (on a
fake watchdog device), LRM and CRM; each has an IPMI BMC (ipmi_sim) and a port on an
SNMP switch. See docs/lab.md.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hafence.cli.output import (
    CommandFailed,
    UsageProblem,
    command_body,
    echo,
    emit_json,
    state,
    table,
)
from hafence.lab.faults import KINDS
from hafence.lab.layout import MAX_NODES, MIN_NODES, LabError
from hafence.lab.node import DAEMONS
from hafence.lab.timings import PRESETS

_DIR_HELP = "The lab's state directory (default $HAFENCE_LAB_DIR or /var/lib/hafence/lab)."


def _lab() -> Any:
    from hafence.lab.control import Lab

    return Lab(click.get_current_context().meta.get("hafence.lab_dir"))


def lab_errors(f: Callable[..., Any]) -> Callable[..., Any]:
    """A LabError is a failed action: its message, exit 1."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except LabError as exc:
            if state().json:
                emit_json({"ok": False, "error_kind": "lab_error", "message": str(exc)})
            else:
                echo(f"error: {exc}", err=True)
            raise CommandFailed from None

    return wrapper


@click.group()
@click.option(
    "--dir",
    "lab_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HAFENCE_LAB_DIR",
    help=_DIR_HELP,
)
@click.pass_context
def lab(ctx: click.Context, lab_dir: Path | None) -> None:
    """A hafence cluster of network namespaces on this machine (root; see docs/lab.md)."""
    ctx.meta["hafence.lab_dir"] = lab_dir


@lab.command("up")
@click.option("--nodes", type=click.IntRange(MIN_NODES, MAX_NODES), default=3, show_default=True)
@click.option(
    "--timings",
    type=click.Choice(sorted(PRESETS)),
    default="fast",
    show_default=True,
    help="fast: a failover in seconds; pve: Proxmox's defaults (minutes).",
)
@click.option("--wait", "ready_timeout", type=float, help="Seconds to wait for readiness.")
@click.option("--keep-on-failure", is_flag=True, help="Leave a lab that never got ready.")
@click.option(
    "--service",
    "services",
    multiple=True,
    metavar="SID",
    help="An HA service to add, spread over the nodes (repeatable; default: writer:demo).",
)
@click.option("--no-services", is_flag=True, help="Add no service (no master is elected).")
@command_body
@lab_errors
def up_cmd(
    nodes: int,
    timings: str,
    ready_timeout: float | None,
    keep_on_failure: bool,
    services: tuple[str, ...],
    no_services: bool,
) -> None:
    """Build the lab; return once etcd has quorum, every LRM reports, a master runs and
    every service runs once."""
    from hafence.lab.control import DEMO

    lab_ = _lab()
    quiet = state().json
    started = time.monotonic()
    layout = lab_.up(
        nodes,
        timings,
        timeout=ready_timeout,
        keep=keep_on_failure,
        services=() if no_services else (services or DEMO),
        progress=None if quiet else (lambda m: echo(m)),
    )
    took = time.monotonic() - started
    if quiet:
        emit_json(
            {
                "ok": True,
                "nodes": list(layout.nodes),
                "store": layout.store_url(),
                "subnet": f"{layout.subnet}.0/24",
                "seconds": round(took, 1),
            }
        )
        return
    echo(f"lab ready in {took:.0f}s: {', '.join(layout.nodes)}; store {layout.store_url()}")
    echo(
        "next: hafence lab ha-manager add dummy:web; hafence lab status; "
        "hafence lab fault node1 kill"
    )


@lab.command("down")
@click.option(
    "--orphans",
    is_flag=True,
    help="Instead: sweep every lab whose supervisor is gone (a killed test's), by name.",
)
@command_body
@lab_errors
def down_cmd(orphans: bool) -> None:
    """Stop everything; leave no process, namespace, link, mount or file behind."""
    if orphans:
        from hafence.lab import cleanup

        found = [item for prefix in cleanup.orphans() for item in cleanup.sweep_orphan(prefix)]
    else:
        found = _lab().down()
    if state().json:
        emit_json({"ok": True, "swept": found})
        return
    for item in found:
        echo(f"swept leftover: {item}")
    echo("lab down: nothing left behind")


@lab.command("status")
@command_body
@lab_errors
def status_cmd() -> None:
    """Nodes (power, link, faults, daemons), etcd, the HA view and where services run."""
    from hafence.lab.checker import running_copies

    lab_ = _lab()
    phys = lab_.status()
    view = lab_.cluster()
    copies = running_copies(lab_.layout)
    if state().json:
        emit_json({"ok": True, "nodes": phys["nodes"], "cluster": view, "copies": copies})
        return
    rows = []
    for name, n in phys["nodes"].items():
        lrm = view.get("lrm", {}).get(name, {})
        rows.append(
            [
                name,
                n["address"],
                n["state"],
                n["power"],
                n["link"],
                "ok" if view["etcd"].get(name) else "-",
                view["node_status"].get(name, "-"),
                lrm.get("state", "-"),
                ",".join(n["faults"]) or "-",
            ]
        )
    echo(
        table(["node", "address", "machine", "power", "link", "etcd", "ha", "lrm", "faults"], rows)
    )
    echo(f"quorum {'OK' if view['quorate'] else 'NO'}, master {view['master'] or '-'}")
    for sid, ss in sorted(view["service_status"].items()):
        where = ",".join(copies.get(sid, [])) or "not running"
        echo(f"service {sid}: {ss.get('state')} on {ss.get('node')}; process on: {where}")


_FAULT_HELP = "\n".join(f"  {k:<12} {v}" for k, v in KINDS.items())


@lab.command("fault", help=f"Inflict KIND on NODE:\n\n\b\n{_FAULT_HELP}")
@click.argument("node")
@click.argument("kind", type=click.Choice(sorted(KINDS)), metavar="KIND")
@click.option(
    "--daemon",
    type=click.Choice(DAEMONS),
    help="freeze / kill-daemon / restart: which daemon (web: the node's test service).",
)
@click.option("--peers", help="partition: comma-separated nodes (default: all others).")
@click.option(
    "--direction",
    type=click.Choice(["both", "in", "out"]),
    default="both",
    show_default=True,
    help="partition: in = NODE hears nothing from the peers.",
)
@click.option(
    "--delay",
    type=click.IntRange(0),
    default=200,
    show_default=True,
    help="slow-net: milliseconds.",
)
@click.option(
    "--loss",
    type=click.IntRange(0, 100),
    default=10,
    show_default=True,
    help="slow-net: percent of packets lost.",
)
@command_body
@lab_errors
def fault_cmd(
    node: str,
    kind: str,
    daemon: str | None,
    peers: str | None,
    direction: str,
    delay: int,
    loss: int,
) -> None:
    opts: dict[str, Any] = {}
    if kind in ("freeze", "kill-daemon", "restart"):
        if daemon is None and kind != "freeze":
            raise UsageProblem(f"{kind} needs --daemon")
        if daemon:
            opts["daemon"] = daemon
    if kind == "partition":
        opts["direction"] = direction
        if peers:
            opts["peers"] = [p.strip() for p in peers.split(",") if p.strip()]
    if kind == "slow-net":
        opts.update(delay=delay, loss=loss)
    info = _lab().fault(node, kind, **opts)
    if state().json:
        emit_json({"ok": True, "node": node, "fault": kind, **opts, **info})
        return
    echo(f"{node}: {kind} {' '.join(f'{k}={v}' for k, v in opts.items())}".rstrip())
    if info.get("note"):
        echo(f"note: {info['note']}")


@lab.command("heal")
@click.argument("nodes", nargs=-1)
@command_body
@lab_errors
def heal_cmd(nodes: tuple[str, ...]) -> None:
    """Undo every fault of NODES (default: all) and power them on."""
    _lab().heal(list(nodes) or None)
    if state().json:
        emit_json({"ok": True})
    else:
        echo(f"healed: {', '.join(nodes) or 'all nodes'}")


@lab.command(
    "ha-manager",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@lab_errors
def ha_manager_cmd(args: tuple[str, ...]) -> None:
    """Run ha-manager against the lab's etcd (e.g. ``hafence lab ha-manager status``)."""
    from hafence.cli.ha_manager import cli as ha_manager

    lab = _lab()
    os.environ["HAFENCE_OCF_CFG"] = str(lab.layout.ocf_cfg)  # the lab's ocf: definitions
    ha_manager.main(args=lab.ha_manager_argv(list(args)), prog_name="ha-manager")


@lab.command("chaos")
@click.option("--schedules", type=click.IntRange(1), default=20, show_default=True)
@click.option("--seed", type=int, help="Schedule k uses seed+k (default: random, printed).")
@click.option(
    "--nodes",
    type=click.IntRange(MIN_NODES, MAX_NODES),
    default=3,
    show_default=True,
    help="Nodes of the lab chaos builds (when none is up).",
)
@click.option("--timings", type=click.Choice(sorted(PRESETS)), default="fast", show_default=True)
@click.option(
    "--logs",
    "logs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where violating schedules' logs go (default ./hafence-chaos-SEED).",
)
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards.")
@command_body
@lab_errors
def chaos_cmd(
    schedules: int, seed: int | None, nodes: int, timings: str, logs_dir: Path | None, keep: bool
) -> None:
    """Random fault schedules against the lab, judged by a checker outside it: never two
    copies of a service, no recovery before a fence, recovery within the bound."""
    import random
    import signal

    from hafence.lab.chaos import ChaosRun, services_for

    lab_ = _lab()
    seed = random.randrange(1, 10**6) if seed is None else seed
    logs_dir = logs_dir or Path(f"hafence-chaos-{seed}")
    quiet = state().json
    say = (lambda _m: None) if quiet else echo
    built = not lab_.exists()

    def stop(signum: int, _frame: Any) -> None:  # kill(1) stops a run like Ctrl-C does
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    if built:
        lab_.up(nodes, timings, services=services_for(nodes), progress=say)
    else:
        have = lab_.cluster().get("resources", {})
        names = lab_.layout.nodes
        for i, sid in enumerate(services_for(len(names))):
            if sid not in have:
                lab_.ha_manager("add", sid, "--node", names[i % len(names)])
    say(
        f"chaos: {schedules} schedules, seed {seed}, recovery bound "
        f"{lab_.timings.recovery_bound():.0f}s, logs of violations in {logs_dir}"
    )
    try:
        summary = ChaosRun(lab_, logs_dir, say).run(schedules, seed)
    finally:
        if built and not keep:
            lab_.down()
    summary["seed"] = seed
    if quiet:
        emit_json({"ok": not summary["violations"] and not summary["unrecovered"], **summary})
    else:
        r = summary["recovery_s"]

        def fmt(x: float | None) -> str:
            return "-" if x is None else f"{x:.1f}s"

        echo(
            f"schedules {summary['schedules']}  violations {summary['violations']}  "
            f"unrecovered {summary['unrecovered']}  recoveries {summary['recoveries']} "
            f"(p50 {fmt(r['p50'])}, p90 {fmt(r['p90'])}, p99 {fmt(r['p99'])}, "
            f"max {fmt(r['max'])}; bound {summary['recovery_bound_s']:.0f}s)  "
            f"rebuilds {summary['rebuilds']}  time {summary['seconds']:.0f}s"
        )
    if summary["violations"] or summary["unrecovered"]:
        raise CommandFailed
