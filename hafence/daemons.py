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

Each round's store calls get a deadline (:func:`hafence.store.deadline.round_budget`,
which states the rule that keeps every lease and watchdog bound); between rounds the
daemon sleeps until the interval is over or the store changes (an etcd watch, a short
poll of the embedded directory), but never starts rounds closer than ``MIN_GAP_FRACTION``
of the interval.
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
from hafence.store import EmbeddedStore, NotLocal, Store, StoreUnavailable, open_store
from hafence.store.deadline import keep_alive_span, round_budget
from hafence.store.options import etcd_options, etcd_overrides

DEFAULT_WATCHDOG_SOCKET = "/run/hafence/watchdog-mux.sock"
MIN_GAP_FRACTION = 0.1  # rounds woken by a store change start at least interval/10 apart
MAX_MIN_GAP = 1.0  # seconds
WATCH_SLICE = 10.0  # seconds one store watch waits before it is renewed
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
        click.option("--single-machine", is_flag=True,
                     help="Embedded store: serve nodes whose daemons did not run on this "
                     "machine yet (all nodes run here; a cluster of machines needs etcd)."),
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
    f = etcd_options(f)  # listed after the store options
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
        round_budget(timings.interval, timings.node_timeout, timings.watchdog_timeout)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        store = open_store(o["store_spec"], cluster=o["cluster"], etcd=etcd_overrides(o))
    except (HafenceError, ValueError, OSError) as exc:
        raise click.UsageError(f"cannot open store {o['store_spec']!r}: {exc}") from None
    if isinstance(store, EmbeddedStore):
        _check_one_machine(store, o["node"], o)
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


def _check_one_machine(store: EmbeddedStore, node: str, o: dict[str, Any]) -> None:
    """An embedded store serves one machine: record this node here, and refuse a store
    that names nodes whose daemons ran on another machine. Nodes that never ran anywhere
    get ``2 * node_timeout`` to start here (the daemons of one machine start together)
    before they are refused too."""
    try:
        store.claim_node(node)
        if o["single_machine"]:
            return
        deadline = time.monotonic() + 2 * o["node_timeout"]
        waiting = False
        while True:
            try:
                store.check_local()
                return
            except NotLocal as exc:
                if exc.foreign or time.monotonic() >= deadline:
                    raise
                if not waiting:
                    log.info("%s: waiting for node(s) %s to start on this machine",
                             node, ", ".join(exc.unseen))  # fmt: skip
                    waiting = True
                time.sleep(0.2)
    except NotLocal as exc:
        raise click.UsageError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"cannot use store {store.path}: {exc}") from None


class _ChangeWatcher:
    """A thread that waits on the store for changes and wakes the daemon loop."""

    def __init__(self, store: Store, wake: threading.Event) -> None:
        self.store = store
        self.wake = wake
        self.changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hafence-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        token: str | None = None
        while not self._stop.is_set():
            try:
                if token is None:
                    token = self.store.change_token()
                new = self.store.wait_for_change(token, WATCH_SLICE)
            except Exception as exc:  # store away: the loop's own timer still runs rounds
                log.debug("store watch failed: %s", exc)
                token = None
                self._stop.wait(1.0)
                continue
            if new != token:
                token = new
                self.changed.set()
                self.wake.set()

    def stop(self) -> None:
        self._stop.set()


def run_daemon(env: RealEnv, daemon: CRM | LRM, interval: float) -> int:
    """The daemon loop: heartbeat + one round per interval (or sooner, when the store
    changed) until the round says stop."""
    stop_requested = threading.Event()
    wake = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop_requested.set()
        wake.set()

    t = env.timings
    budget = round_budget(interval, t.node_timeout, t.watchdog_timeout)
    min_gap = min(interval * MIN_GAP_FRACTION, MAX_MIN_GAP)
    store = env.store
    watcher = _ChangeWatcher(store, wake)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    what = f"{env.nodename}/{env.role}"
    try:
        while True:
            started = time.monotonic()
            store.set_deadline(started + budget)
            store.keep_leases_until(started + keep_alive_span(interval, budget))
            watcher.changed.clear()  # this round reads the state: older news is seen
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
            finally:
                store.set_deadline(None)
            if not alive:
                break
            _sleep(started + interval, started + min_gap, stop_requested, watcher.changed, wake)
    finally:
        watcher.stop()
        store.keep_leases_until(None)
        for s, h in old.items():
            signal.signal(s, h)
        if env.role == "lrm":
            env.leave()
        env.close()
        store.close()
    log.info("%s: exit (loop end)", what)
    return 0


def _sleep(
    due: float,
    earliest: float,
    stop: threading.Event,
    changed: threading.Event,
    wake: threading.Event,
) -> None:
    """Until ``due``, a stop request, or a store change once ``earliest`` has passed."""
    while not stop.is_set():
        now = time.monotonic()
        if now >= due or (changed.is_set() and now >= earliest):
            return
        wake.wait((earliest if changed.is_set() else due) - now)
        wake.clear()


@click.command("hafence-crm")
@click.option(
    "--fence-config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HAFENCE_FENCE_CFG",
    help="fence.cfg for hardware fencing (default: watchdog fencing only).",
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
    if fence_config is not None:
        _check_fence_config(fence_config)
    env = _build_env("crm", o, fence_config=fence_config, fence_history=fence_history)
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


def _check_fence_config(path: Path) -> None:
    """A fence.cfg that does not load stops the CRM before it takes any lock: every
    error with file, line and field, as ``hafence config check`` prints them."""
    from hafence.errors import ConfigErrors
    from hafence.fence import check_drivers, load_fence_config

    try:
        check_drivers(load_fence_config(path))
    except ConfigErrors as exc:
        raise click.UsageError(str(exc)) from None
    except HafenceError as exc:
        raise click.UsageError(f"fence config {path}: {exc}") from None
    except OSError as exc:
        raise click.UsageError(f"fence config {path}: {exc.strerror or exc}") from None


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
