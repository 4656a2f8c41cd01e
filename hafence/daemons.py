"""``hafence-crm`` and ``hafence-lrm``: the HA daemons of one real node.

Each daemon builds a :class:`~hafence.ha.realenv.RealEnv` (store, fencer, watchdog-mux
client, resource plugins) and calls its state machine (:class:`~hafence.ha.crm.CRM` or
:class:`~hafence.ha.lrm.LRM`) once per interval, renewing the node's membership lease
each time. SIGTERM/SIGINT asks the state machine to shut down: the LRM applies the
shutdown policy (freeze on restart/reboot, stop or migrate on shutdown) and the CRM
releases the manager lock; the daemon exits when the state machine says it is done.

Timings default to Proxmox's (10 s loop, 120 s locks, 60 s watchdog, 60 s fence delay);
tests shrink them. ``--no-watchdog`` runs without self-fencing, for development only: it
is logged loudly at start.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import click

from hafence.errors import HafenceError
from hafence.ha.crm import CRM
from hafence.ha.lrm import LRM
from hafence.ha.realenv import RealEnv, Timings, systemd_shutdown_probe
from hafence.store import StoreUnavailable, open_store

DEFAULT_WATCHDOG_SOCKET = "/run/hafence/watchdog-mux.sock"
log = logging.getLogger("hafence.ha")


def _options(f: Any) -> Any:
    t = Timings()
    opts = [
        click.option("--node", default=socket.gethostname().split(".")[0], show_default=True,
                     help="This node's name."),
        click.option("--store", "store_spec", envvar=["HAFENCE_STORE", "HAFENCE_HA_DIR"],
                     help="Store: a directory (embedded) or etcd://HOST:PORT/CLUSTER "
                     "(default $HAFENCE_STORE, $HAFENCE_HA_DIR or /etc/hafence/ha)."),
        click.option("--cluster", help="etcd key prefix (cluster name)."),
        click.option("--watchdog-socket", default=DEFAULT_WATCHDOG_SOCKET, show_default=True,
                     help="hafence-watchdog-mux socket."),
        click.option("--no-watchdog", is_flag=True,
                     help="Run without a watchdog (development only: no self-fencing!)."),
        click.option("--interval", type=float, default=t.interval, show_default=True,
                     help="Seconds between two rounds."),
        click.option("--lease-ttl", type=float, default=t.lease_ttl, show_default=True,
                     help="Seconds a manager/agent lock lives without renewal."),
        click.option("--watchdog-timeout", type=float, default=t.watchdog_timeout,
                     show_default=True, help="Watchdog timeout (must be < lease-ttl)."),
        click.option("--fence-delay", type=float, default=t.fence_delay, show_default=True,
                     help="Seconds a node stays unknown before its services are fenced."),
        click.option("--node-timeout", type=float, default=t.node_timeout, show_default=True,
                     help="Seconds without heartbeat before a node counts as offline."),
        click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Append the HA log here too (default: stderr only)."),
        click.option("-v", "--verbose", is_flag=True, help="Debug logging."),
    ]  # fmt: skip
    for opt in reversed(opts):
        f = opt(f)
    return f


def _setup_logging(log_file: Path | None, verbose: bool) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)


def _build_env(role: str, o: dict[str, Any], **extra: Any) -> RealEnv:
    timings = Timings(
        interval=o["interval"],
        lease_ttl=o["lease_ttl"],
        watchdog_timeout=o["watchdog_timeout"],
        fence_delay=o["fence_delay"],
        node_timeout=o["node_timeout"],
    )
    try:
        timings.check()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        store = open_store(o["store_spec"], cluster=o["cluster"])
    except (HafenceError, ValueError, OSError) as exc:
        raise click.UsageError(f"cannot open store {o['store_spec']!r}: {exc}") from None
    try:
        store.quorate()  # a malformed URL fails here, before the loop
    except StoreUnavailable as exc:  # down for now: the daemon waits for quorum
        log.warning("store %s unavailable at start: %s", o["store_spec"], exc)
    except Exception as exc:
        store.close()
        raise click.UsageError(f"cannot use store {o['store_spec']!r}: {exc}") from None
    socket_path = None if o["no_watchdog"] else o["watchdog_socket"]
    return RealEnv(
        o["node"], store, role=role, timings=timings, watchdog_socket=socket_path, **extra
    )


def run_daemon(env: RealEnv, daemon: CRM | LRM, interval: float) -> int:
    """The daemon loop: heartbeat + one round per interval until the round says stop."""
    stop_requested = threading.Event()
    wake = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop_requested.set()
        wake.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    what = f"{env.nodename}/{env.role}"
    try:
        while True:
            started = time.monotonic()
            if stop_requested.is_set():
                daemon.shutdown_request()
            try:
                env.heartbeat()
                alive = daemon.do_one_iteration()
            except StoreUnavailable as exc:
                log.error("%s: store unavailable: %s", what, exc)
                alive = True
            except Exception as exc:
                # one bad round must not end the node's HA (e.g. the watchdog-mux is down:
                # the lock is not used until the watchdog can be armed)
                log.error("%s: round failed, retrying next round: %r", what, exc)
                alive = True
            if not alive:
                break
            wake.wait(max(0.0, interval - (time.monotonic() - started)))
            wake.clear()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if env.role == "lrm":
            env.leave()
        env.close()
    log.info("%s: exit (loop end)", what)
    return 0


@click.command("hafence-crm")
@click.option(
    "--fence-config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HAFENCE_FENCE_CFG",
    help="fence.cfg for hardware fencing: 'store' for the cluster's copy in the store "
    "('ha-manager fence-config import'), or a file (default: watchdog fencing only).",
)
@click.option(
    "--fence-history",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Fence history file (JSON lines).",
)
@_options
def crm_cli(fence_config: Path | None, fence_history: Path | None, **o: Any) -> None:
    """Cluster resource manager: elect a master, fence failed nodes, place services."""
    _setup_logging(o["log_file"], o["verbose"])
    env = _build_env("crm", o, fence_config=fence_config, fence_history=fence_history)
    try:
        _check_fence_config(env, fence_config)
    except click.UsageError:
        env.close()
        raise
    _warn_watchdog(env, o)
    if fence_config is None:
        env.log("warning", "no fence.cfg: fencing relies on the nodes' watchdogs alone")
    crm = CRM(env, fence_delay=o["fence_delay"])
    raise SystemExit(run_daemon(env, crm, o["interval"]))


@click.command("hafence-lrm")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Per-node state for resource types that keep some (dummy:).",
)
@click.option("--shutdown-flag", type=click.Path(dir_okay=False, path_type=Path),
              help="A file whose content 'shutdown' or 'reboot' means the node is going "
              "down (default: ask systemd).")  # fmt: skip
@_options
def lrm_cli(state_dir: Path | None, shutdown_flag: Path | None, **o: Any) -> None:
    """Local resource manager: run this node's services as the master decides."""
    _setup_logging(o["log_file"], o["verbose"])
    probe = systemd_shutdown_probe if shutdown_flag is None else _flag_probe(shutdown_flag)
    env = _build_env("lrm", o, state_dir=state_dir, shutdown_probe=probe)
    _warn_watchdog(env, o)
    lrm = LRM(env)
    raise SystemExit(run_daemon(env, lrm, o["interval"]))


def _check_fence_config(env: RealEnv, spec: Path | None) -> None:
    """A fence.cfg that does not load stops the CRM before it takes any lock: every
    error with file, line and field, as ``hafence config check`` prints them. A file
    while the cluster keeps its fence.cfg in the store is refused: one copy for all."""
    from hafence.errors import ConfigErrors
    from hafence.fence import check_drivers, parse_fence_config
    from hafence.ha.fencerun import FENCE_CFG, STORE

    in_store = env.store.read_text(FENCE_CFG).strip()
    if spec is None:
        if in_store:
            env.log("warning", "the store holds a fence.cfg, but this CRM was started without "
                    "--fence-config store: its fences fail until it uses it")  # fmt: skip
        return
    if str(spec) == STORE:
        where, text = env.store.location(FENCE_CFG), in_store
        if not text:
            env.log("warning", f"no fence.cfg in the store yet ({where}): watchdog fencing "
                    "only until 'ha-manager fence-config import FILE'")  # fmt: skip
    else:
        if in_store:
            raise click.UsageError(
                f"the cluster keeps its fence.cfg in the store ({env.store.location(FENCE_CFG)}):"
                " start with --fence-config store, one copy for every node"
            )
        where = str(spec)
        try:
            text = spec.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.UsageError(f"fence config {spec}: {exc}") from None
    try:
        check_drivers(parse_fence_config(text, where))
    except ConfigErrors as exc:
        raise click.UsageError(str(exc)) from None
    except HafenceError as exc:
        raise click.UsageError(f"fence config {where}: {exc}") from None


def _flag_probe(path: Path) -> Any:
    def probe() -> tuple[bool, bool]:
        try:
            what = path.read_text().strip()
        except OSError:
            return (False, False)
        return (what in ("shutdown", "reboot"), what == "reboot")

    return probe


def _warn_watchdog(env: RealEnv, o: dict[str, Any]) -> None:
    if o["no_watchdog"]:
        env.log(
            "warning",
            "running WITHOUT a watchdog (--no-watchdog): this node cannot fence itself; "
            "never use this in production",
        )
    elif not os.path.exists(o["watchdog_socket"]):
        env.log("warning", f"watchdog-mux socket {o['watchdog_socket']} not there (yet)")


def crm_main() -> None:
    crm_cli()


def lrm_main() -> None:
    lrm_cli()
