"""``hafence-crm`` and ``hafence-lrm``: the HA daemons of one real node.

Each daemon builds a :class:`~hafence.ha.realenv.RealEnv` (store, fencer, watchdog-mux
client, resource plugins) and calls its state machine (:class:`~hafence.ha.crm.CRM` or
:class:`~hafence.ha.lrm.LRM`) once per interval, renewing the node's membership lease
each time. SIGTERM/SIGINT asks the state machine to shut down: the LRM applies the
shutdown policy (freeze on restart/reboot, stop or migrate on shutdown) and the CRM
releases the manager lock; the daemon exits when the state machine says it is done.

Timings come from a preset (``--timings pve``, Proxmox's: 10 s rounds, 120 s locks, 60 s
watchdog, 60 s fence delay; or ``fast``) and the timing options; the daemons refuse to start
when they break a rule of :mod:`hafence.ha.timings` (the self-fencing rule counts the mux's
hardware timeout, from its config or the running mux). ``--no-watchdog`` runs without
self-fencing, for development only: it is logged loudly at start.

Each round's store calls end by the round's start + the store deadline
(``--store-deadline``, :attr:`Timings.store_latency`, which the timing rules count);
between rounds the daemon sleeps until the interval is over, the store changes (an
etcd watch, a short poll of the embedded directory) or a hardware fence ends (the master
acts on its result at once), but never starts rounds closer than ``MIN_GAP_FRACTION`` of
the interval.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import click

from hafence import daemon_extras
from hafence.errors import HafenceError
from hafence.ha.crm import CRM
from hafence.ha.lrm import LRM
from hafence.ha.realenv import RealEnv, systemd_shutdown_probe
from hafence.ha.timings import PRESETS, TimingError, Timings, preset
from hafence.store import EmbeddedStore, NotLocal, Store, StoreUnavailable, open_store
from hafence.store.options import etcd_options, etcd_overrides
from hafence.watchdog.client import mux_status
from hafence.watchdog.config import DEFAULT_CONFIG as WATCHDOG_CONFIG
from hafence.watchdog.config import load_config as load_watchdog_config

DEFAULT_WATCHDOG_SOCKET = "/run/hafence/watchdog-mux.sock"
MIN_GAP_FRACTION = 0.1  # rounds woken by a store change start at least interval/10 apart
MAX_MIN_GAP = 1.0  # seconds
WATCH_SLICE = 10.0  # seconds one store watch waits before it is renewed
log = logging.getLogger("hafence.ha")


def _options(f: Any) -> Any:
    pve, fast = PRESETS["pve"], PRESETS["fast"]

    def timing(name: str, what: str) -> Any:
        a, b = getattr(pve, name.replace("-", "_")), getattr(fast, name.replace("-", "_"))
        return click.option(
            f"--{name}", type=float, default=None, help=f"{what} [pve: {a:g}, fast: {b:g}]"
        )

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
        click.option("--timings", "timings_preset", type=click.Choice(sorted(PRESETS)),
                     default="pve", show_default=True,
                     help="Timings preset (docs/daemons.md); the options below override it."),
        timing("interval", "Seconds between two rounds."),
        timing("lease-ttl", "Seconds a manager/agent lock lives without renewal."),
        timing("watchdog-timeout", "Seconds the watchdog-mux waits for this daemon's feed."),
        timing("fence-delay", "Seconds a node stays unknown before its services are fenced."),
        timing("power-fence-delay", "The fence delay of a node with a power fence device."),
        timing("node-timeout", "Seconds without heartbeat before a node counts as offline."),
        click.option("--store-deadline", type=float, default=None,
                     help="Seconds a round's store calls may take [the interval]."),
        click.option("--watchdog-config", type=click.Path(dir_okay=False),
                     default=WATCHDOG_CONFIG, show_default=True,
                     help="The watchdog-mux's config: its WATCHDOG_TIMEOUT enters the timing "
                     "rule."),
        click.option("--watchdog-hw-timeout", type=click.IntRange(1, 3600), default=None,
                     help="The mux's hardware watchdog timeout, seconds [WATCHDOG_TIMEOUT of "
                     "--watchdog-config, default 10]."),
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
    # Under systemd: straight to the journal, with HAFENCE_NODE/SERVICE fields.
    handlers: list[logging.Handler] = [daemon_extras.journal_handler() or logging.StreamHandler()]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)


def _build_env(role: str, o: dict[str, Any], **extra: Any) -> RealEnv:
    timings = _timings(role, o)
    try:
        store = open_store(o["store_spec"], cluster=o["cluster"], etcd=etcd_overrides(o))
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


def _timings(role: str, o: dict[str, Any]) -> Timings:
    """The preset with the given options applied, checked against every timing rule.

    The mux's hardware timeout enters the self-fencing rule: ``--watchdog-hw-timeout``, else
    WATCHDOG_TIMEOUT of the mux's config; a running mux's device timeout, if longer, wins.
    Broken rules end the daemon with status 2 before it opens the store.
    """
    hw, source = _configured_hw_timeout(o)
    if not o["no_watchdog"]:
        running = _running_hw_timeout(o["watchdog_socket"])
        if running is not None and running > hw:
            hw, source = running, f"the device of the watchdog-mux on {o['watchdog_socket']}"
    t = preset(o["timings_preset"]).replace(
        interval=o["interval"],
        lease_ttl=o["lease_ttl"],
        watchdog_timeout=o["watchdog_timeout"],
        fence_delay=o["fence_delay"],
        power_fence_delay=o["power_fence_delay"],
        node_timeout=o["node_timeout"],
        store_deadline=o["store_deadline"],
        hw_timeout=hw,
    )
    try:
        t.check()
    except TimingError as exc:
        raise click.UsageError(
            "unsafe timings, not starting:\n  "
            + "\n  ".join(exc.problems)
            + f"\n(the mux's hardware timeout {hw:g}s is from {source})"
        ) from None
    log.info(
        "%s/%s: timings %s: round %gs, lock %gs, watchdog %gs + hardware %gs + store %gs = "
        "self-fence within %gs, node timeout %gs, fence delay %gs (with a power device %gs)",
        o["node"], role, o["timings_preset"], t.interval, t.lease_ttl, t.watchdog_timeout,
        t.hw_timeout, t.store_latency, t.self_fence_time, t.node_timeout, t.fence_delay,
        t.power_fence_delay,
    )  # fmt: skip
    return t


def _configured_hw_timeout(o: dict[str, Any]) -> tuple[float, str]:
    if o["watchdog_hw_timeout"] is not None:
        return float(o["watchdog_hw_timeout"]), "--watchdog-hw-timeout"
    try:
        cfg = load_watchdog_config(o["watchdog_config"])
    except HafenceError as exc:
        raise click.UsageError(f"watchdog config: {exc}") from None
    line = cfg.lines.get("WATCHDOG_TIMEOUT")
    if line is not None:
        return float(cfg.settings.timeout), f"WATCHDOG_TIMEOUT in {cfg.file}:{line}"
    where = f"the mux's default ({o['watchdog_config']} does not set WATCHDOG_TIMEOUT)"
    return float(cfg.settings.timeout), where


def _running_hw_timeout(socket_path: str) -> float | None:
    """The hardware timeout of the mux's device, if a mux answers on ``socket_path``."""
    try:
        timeout = mux_status(socket_path, io_timeout=5.0)["device"].get("timeout")
    except (HafenceError, OSError, KeyError, TypeError, ValueError):
        return None  # no mux (yet): the units start it first; the config value stands
    return float(timeout) if isinstance(timeout, (int, float)) else None


def _check_one_machine(env: RealEnv, o: dict[str, Any]) -> None:
    """An embedded store serves one machine: record this node here, and refuse a store
    that names nodes whose daemons ran on another machine. Nodes that never ran anywhere
    get ``2 * node_timeout`` to start here (the daemons of one machine start together)
    before they are refused too. Called after every other start-up check: the first
    write to the store."""
    store, node, single_machine = env.store, env.nodename, o["single_machine"]
    if not isinstance(store, EmbeddedStore):
        return
    node_timeout = env.timings.node_timeout
    try:
        store.claim_node(node)
        if single_machine:
            return
        deadline = time.monotonic() + 2 * node_timeout
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
        env.close()
        raise click.UsageError(str(exc)) from None
    except (OSError, ValueError) as exc:
        env.close()
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
    budget = t.store_latency  # the timing rules (hafence.ha.timings) count this bound
    min_gap = min(interval * MIN_GAP_FRACTION, MAX_MIN_GAP)
    store = env.store
    watcher = _ChangeWatcher(store, wake)

    def wakeup() -> None:  # news from inside the process (a fence ended): a round now
        watcher.changed.set()
        wake.set()

    env.wakeup = wakeup
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    # `kill -USR2 PID`: every thread's stack to stderr (the log), to see where a daemon
    # that stopped logging waits, on a machine without a debugger
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    what = f"{env.nodename}/{env.role}"
    try:
        while True:
            started = time.monotonic()
            store.set_deadline(started + budget)
            # the next round renews the leases itself by interval + deadline (round_time)
            store.keep_leases_until(started + interval + budget)
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
        # The membership lease is left to expire: the node's other daemon shares it, and a
        # node read offline while its CRM runs would be fenced (no fence delay with a
        # power device).
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
    """Until ``due``, or a stop request or a store change once ``earliest`` has passed (a
    daemon that cannot stop yet must not spin)."""
    while True:
        now = time.monotonic()
        soon = changed.is_set() or stop.is_set()
        if now >= due or (soon and now >= earliest):
            return
        wake.wait((earliest if soon else due) - now)
        wake.clear()


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
@daemon_extras.extra_options("crm")
def crm_cli(fence_config: Path | None, fence_history: Path | None, **o: Any) -> None:
    """Cluster resource manager: elect a master, fence failed nodes, place services."""
    _setup_logging(o["log_file"], o["verbose"])
    env = _build_env("crm", o, fence_config=fence_config, fence_history=fence_history)
    try:
        _check_fence_config(env, fence_config)
    except click.UsageError:
        env.close()
        raise
    _check_one_machine(env, o)
    _warn_watchdog(env, o)
    if fence_config is None:
        env.log("warning", "no fence.cfg: fencing relies on the nodes' watchdogs alone")
    crm = CRM(env, fence_delay=env.timings.fence_delay)
    daemon, extras = daemon_extras.attach(env, crm, o)  # metrics, notifications, systemd
    code = run_daemon(env, daemon, env.timings.interval)
    extras.close()
    raise SystemExit(code)


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
@daemon_extras.extra_options("lrm")
def lrm_cli(state_dir: Path | None, shutdown_flag: Path | None, **o: Any) -> None:
    """Local resource manager: run this node's services as the master decides."""
    _setup_logging(o["log_file"], o["verbose"])
    probe = systemd_shutdown_probe if shutdown_flag is None else _flag_probe(shutdown_flag)
    env = _build_env("lrm", o, state_dir=state_dir, shutdown_probe=probe)
    _check_one_machine(env, o)
    _warn_watchdog(env, o)
    lrm = LRM(env)
    daemon, extras = daemon_extras.attach(env, lrm, o)  # metrics, systemd
    code = run_daemon(env, daemon, env.timings.interval)
    extras.close()
    raise SystemExit(code)


def _check_fence_config(env: RealEnv, spec: Path | None) -> None:
    """A fence.cfg that does not load stops the CRM before it takes any lock: every
    error with file, line and field, as ``hafence config check`` prints them. A file
    while the cluster keeps its fence.cfg in the store is refused: one copy for all."""
    from hafence.cfgtext import read_bytes
    from hafence.errors import ConfigError, ConfigErrors
    from hafence.fence import check_drivers, parse_fence_config
    from hafence.ha.fencerun import FENCE_CFG, STORE

    try:
        in_store = _store_text(env, FENCE_CFG).strip()
    except ConfigErrors as exc:  # a stray byte in the store's copy
        raise click.UsageError(str(exc)) from None
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
        try:  # bytes: the parser names the line of a byte that is not UTF-8
            text = read_bytes(spec)
        except ConfigError as exc:
            raise click.UsageError(f"fence config {spec}: {exc}") from None
    try:
        check_drivers(parse_fence_config(text, where))
    except ConfigErrors as exc:
        raise click.UsageError(str(exc)) from None
    except HafenceError as exc:
        raise click.UsageError(f"fence config {where}: {exc}") from None


def _store_text(env: RealEnv, name: str) -> str:
    """The store's copy of ``name``, once the store answers. A node that boots cut off
    from its cluster starts its CRM all the same and waits, as it waits for quorum (it
    takes no lock meanwhile); it does not die and restart until the network is back."""
    waiting = False
    while True:
        try:
            return env.store.read_text(name)
        except StoreUnavailable as exc:
            if not waiting:
                env.log("warning", f"cannot read {name} from the store yet ({exc}): "
                        "waiting for the store before starting")  # fmt: skip
                waiting = True
            time.sleep(env.timings.interval)


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
