"""``hafence watchdog``: inspect and drill the node's watchdog.

``info``    what the kernel reports in sysfs, plus the configured driver: never opens
            (never arms) a device.
``test``    a guarded drill: arm, feed, and stop feeding only after the operator types
            the confirmation word; then report the expiry. softdog with soft_noboot=1
            (the default for softdog here) proves it without a reboot; anything that
            would really reset the node needs ``--allow-reset``.
``status``  the watchdog-mux, its device and its clients, over the mux socket; exit 1
            when the mux is tripped or a client is overdue.

Every subcommand honours the global ``--output json`` (``-o json`` works here too).
``--fake-device STATEFILE`` (or ``$HAFENCE_WATCHDOG_FAKE``) runs against
:class:`hafence.watchdog.fake.FakeKernel`, with a warning on stderr; ``--sysfs-root``
reads another sysfs tree. Drivers come from the plugin registry only.
"""

from __future__ import annotations

import threading
import time
from typing import Any, NoReturn

import click

from hafence.cli import output as out
from hafence.errors import HafenceError
from hafence.watchdog import client as wdclient
from hafence.watchdog.config import (
    DEFAULT_CONFIG,
    build_driver,
    driver_for_module,
    load_config,
)
from hafence.watchdog.device import KernelLog, Syscalls, WatchdogDevice, inspect, list_watchdogs
from hafence.watchdog.driver import (
    MAX_TIMEOUT,
    MIN_TIMEOUT,
    KernelModuleDriver,
    WatchdogDriver,
    WatchdogSettings,
)
from hafence.watchdog.errors import DeviceMissingError, MuxUnavailableError
from hafence.watchdog.kernel import FAKE_ENV, choose_kernel

DRILL_TIMEOUT = 5  # seconds, unless --timeout says otherwise
EXPIRY_MARKERS = ("Triggered - Reboot ignored", "watchdog expired", "Initiating system reboot")

fake_opt = click.option(
    "--fake-device",
    metavar="STATEFILE",
    envvar=FAKE_ENV,
    help="use the fake kernel stored in STATEFILE (tests/CI)",
)
sysfs_opt = click.option(
    "--sysfs-root", default="/sys", show_default=True, help="where sysfs is mounted"
)
config_opt = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help=f"[{DEFAULT_CONFIG}]"
)


def _short_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(out.State).output = value


# ``-o json``: the short form of the global ``--output`` (command_body adds that one)
short_output_opt = click.option(
    "-o",
    type=click.Choice(["text", "json"]),
    expose_value=False,
    callback=_short_output,
    help="Short for --output.",
)


def _syscalls(fake: str | None, sysfs_root: str) -> Syscalls:
    # the only place the CLI picks a fake kernel: announced on stderr, never silent
    return choose_kernel(
        fake, warn=lambda msg: out.echo(f"warning: {msg}", err=True), sysfs_root=sysfs_root
    )


def _failed(message: str, kind: str = "failed", **extra: Any) -> NoReturn:
    """The action failed: say why (JSON-aware) and exit 1."""
    if out.state().json:
        out.emit_json({"ok": False, "error_kind": kind, "message": message, **extra})
    else:
        out.echo(f"error: {message}", err=True)
    raise out.CommandFailed


@click.group()
def watchdog() -> None:
    """Inspect and test the watchdog and the watchdog multiplexer."""


# -- info ------------------------------------------------------------------------------------
@watchdog.command()
@click.option("--device", help="only this device (/dev/watchdogN or watchdogN)")
@config_opt
@fake_opt
@sysfs_opt
@short_output_opt
@out.command_body
def info(
    device: str | None,
    config_path: str | None,
    fake_device: str | None,
    sysfs_root: str,
) -> None:
    """Show the watchdog devices and the configured driver, without arming anything."""
    sys = _syscalls(fake_device, sysfs_root)
    cfg = load_config(config_path, required=config_path is not None)
    try:
        found = [inspect(device, sys, sysfs_root)] if device else list_watchdogs(sys, sysfs_root)
    except DeviceMissingError as exc:
        _failed(str(exc), "not_found")
    driver = cfg.driver(sys, sysfs_root=sysfs_root)
    for w in found:
        if w.module and not w.module_params:  # some modules hide them from sysfs (softdog)
            drv = driver_for_module(w.module, sys, sysfs_root=sysfs_root)
            w.module_params = (drv.loaded_params() if drv else None) or {}
    used = next((w.name for w in found if driver.matches(w)), None)
    plugin = not isinstance(driver, KernelModuleDriver)
    configured = {
        "driver": cfg.module,
        "driver_kind": "plugin" if plugin else "kernel module",
        "config": cfg.file,
        "timeout": cfg.settings.timeout,
        "nowayout": cfg.settings.nowayout,
        "noboot": cfg.settings.noboot,
        "device": cfg.settings.device,
        "socket": cfg.socket,
        "driver_device": used,
    }
    if out.state().json:
        out.emit_json({"configured": configured, "watchdogs": [w.as_dict() for w in found]})
    else:
        src = cfg.file or "defaults"
        kind = "" if plugin else ", a kernel module without a hafence plugin"
        out.echo(f"configured driver: {cfg.module} ({src}{kind})")
        out.echo(
            f"  timeout {cfg.settings.timeout}s, nowayout {int(cfg.settings.nowayout)}, "
            f"noboot {int(cfg.settings.noboot)}, mux socket {cfg.socket}"
        )
        out.echo(f"  its device: {used or 'not present (loaded when the mux starts)'}")
        for w in found:
            out.echo(f"{w.device}: {w.identity or '?'}")
            rows: list[tuple[str, Any]] = [
                ("module", w.module),
                ("state", w.state),
                ("timeout", None if w.timeout is None else f"{w.timeout}s"),
                ("pretimeout", None if w.pretimeout is None else f"{w.pretimeout}s"),
                ("timeleft", None if w.timeleft is None else f"{w.timeleft}s"),
                ("nowayout", None if w.nowayout is None else int(w.nowayout)),
                ("options", ", ".join(w.flags) if w.options is not None else None),
                ("boot status", ", ".join(w.boot_flags) or "normal boot"),
                ("module params", " ".join(f"{k}={v}" for k, v in w.module_params.items())),
            ]
            for key, value in rows:
                if value not in (None, ""):
                    out.echo(f"  {key:<14} {value}")
    if not found:
        out.echo(
            f"no watchdog device registered (nothing under {sysfs_root}/class/watchdog); "
            f"the mux loads '{cfg.module}' when it starts",
            err=True,
        )
        raise out.CommandFailed


# -- test (drill) ----------------------------------------------------------------------------
class _Feeder(threading.Thread):
    """Keeps the armed device fed while the operator reads the prompt."""

    def __init__(self, dev: WatchdogDevice, interval: float) -> None:
        super().__init__(daemon=True)
        self.dev, self.interval = dev, interval
        self.halt = threading.Event()
        self.feeds = 0
        self.error: Exception | None = None

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.dev.keepalive()
                self.feeds += 1
            except Exception as exc:  # reported after the prompt
                self.error = exc
                return
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join()


@watchdog.command()
@click.option("--driver", "module", help="watchdog driver [WATCHDOG_MODULE, default softdog]")
@click.option("--device", help="device to drill (/dev/watchdogN)")
@click.option(
    "--noboot/--no-noboot",
    default=None,
    help="softdog soft_noboot (default on for softdog: expiry only logs)",
)
@click.option("--allow-reset", is_flag=True, help="allow a drill whose expiry RESETS the node")
@click.option("--feeds", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--confirm-word", default="expire", show_default=True)
@config_opt
@fake_opt
@sysfs_opt
@short_output_opt
@out.command_body
def test(
    module: str | None,
    device: str | None,
    noboot: bool | None,
    allow_reset: bool,
    feeds: int,
    confirm_word: str,
    config_path: str | None,
    fake_device: str | None,
    sysfs_root: str,
) -> None:
    """Drill: arm, feed, then stop feeding after confirmation and report the expiry.

    The drill's watchdog timeout is the global --timeout (whole seconds, default 5).
    """
    timeout = _drill_timeout(out.state().timeout)
    sys = _syscalls(fake_device, sysfs_root)
    cfg = load_config(config_path, required=config_path is not None)
    module = module or cfg.module
    if noboot is None:
        noboot = module == "softdog"
    try:
        settings = WatchdogSettings(timeout=timeout, noboot=noboot, device=device)
        driver = build_driver(module, settings, sys, sysfs_root=sysfs_root)
    except HafenceError as exc:
        raise out.UsageProblem(str(exc), kind="config_error") from None
    if not noboot and not allow_reset:
        raise out.UsageProblem(
            f"this drill would RESET the node ({module} without noboot); use softdog with "
            "--noboot, or pass --allow-reset on a node you may reboot. Nothing was armed.",
            kind="not_confirmed",
        )
    try:
        wdclient.mux_status(cfg.socket, io_timeout=2.0)
    except (HafenceError, OSError):
        pass
    else:
        raise out.UsageProblem(
            f"watchdog-mux is running ({cfg.socket}) and owns the device: stop it first",
            kind="busy",
        )
    try:
        klog = KernelLog(sys)
    except OSError as exc:  # the expiry is only visible there: no drill without it
        _failed(f"cannot read the kernel log ({exc.strerror}); run as root. Nothing was armed.")
    try:
        _drill(driver, klog, module, timeout, noboot, feeds, confirm_word)
    finally:
        klog.close()


def _drill_timeout(value: float | None) -> int:
    if value is None:
        return DRILL_TIMEOUT
    if value != int(value) or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise out.UsageProblem(
            f"--timeout {value:g}: a watchdog timeout is whole seconds, "
            f"{MIN_TIMEOUT}..{MAX_TIMEOUT}"
        )
    return int(value)


def _drill(
    driver: WatchdogDriver,
    klog: KernelLog,
    module: str,
    timeout: int,
    noboot: bool,
    feeds: int,
    confirm_word: str,
) -> None:
    def say(text: str) -> None:
        if not out.state().json:
            out.echo(text)

    result: dict[str, Any] = {"driver": module, "timeout": timeout, "noboot": noboot}
    try:
        dev = driver.open()  # ARMED from here on
    except HafenceError as exc:
        _failed(f"{exc} (nothing armed)")
    if driver.loaded_by_us:
        result["loaded_module"] = driver.module
        if noboot:
            say(
                f"note: {driver.module} is now loaded with soft_noboot=1 and stays loaded; "
                f"rmmod {driver.module} before starting hafence-watchdog-mux (it refuses a "
                "softdog that cannot reset the node)"
            )
    try:
        result.update(device=dev.path, identity=dev.info.identity, nowayout=dev.nowayout)
        effect = "soft_noboot: expiry will only log" if noboot else "EXPIRY RESETS THE NODE"
        say(
            f"armed {dev.path} ({dev.info.identity}, driver {module}), timeout "
            f"{dev.get_timeout()}s, {effect}"
        )
        interval = max(0.2, min(1.0, timeout / 4))
        for i in range(feeds):
            dev.keepalive()
            left = dev.get_timeleft()
            say(f"keepalive {i + 1}/{feeds}" + (f", {left}s left" if left is not None else ""))
            time.sleep(interval)
        feeder = _Feeder(dev, interval)
        feeder.start()
        consequence = "it will only log (soft_noboot)" if noboot else "THE NODE WILL RESET"
        try:
            answer = click.prompt(
                f"Type '{confirm_word}' to stop feeding ({consequence}); anything else aborts",
                default="",
                show_default=False,
                err=True,
            )
        except (click.Abort, EOFError):
            answer = ""
        finally:
            feeder.stop()
        result["feeds"] = feeds + feeder.feeds
        if feeder.error is not None or answer.strip() != confirm_word:
            disarmed = dev.close(magic=True)
            result.update(confirmed=False, expired=False, disarmed=disarmed)
            if feeder.error is not None:
                result["error"] = str(feeder.error)
            _report(
                result,
                "drill aborted: "
                + (f"keepalive failed: {feeder.error}" if feeder.error else "not confirmed")
                + (", watchdog disarmed" if disarmed else ", watchdog STILL ARMED (nowayout)"),
            )
            raise out.CommandFailed
        result["confirmed"] = True
        stopped = time.monotonic()
        say(f"stopped feeding; waiting up to {timeout + 10}s for the expiry")
        seen = _wait_expiry(klog, stopped + timeout + 10)
    finally:
        # an interrupted drill (Ctrl-C, an error) disarms; after a noboot expiry too
        result["disarmed"] = dev.close(magic=True) if not dev.closed else result.get("disarmed")
    result["expired"] = seen is not None
    if seen is None:
        _report(result, f"expiry NOT observed within {timeout + 10}s")
        raise out.CommandFailed
    result["expired_after"] = round(time.monotonic() - stopped, 1)
    result["kernel_message"] = seen
    _report(
        result,
        f"EXPIRED {result['expired_after']}s after the last keepalive "
        f"(timeout {timeout}s): kernel: {seen}",
    )


def _wait_expiry(klog: KernelLog, until: float) -> str | None:
    """The kernel message that shows the watchdog fired, or None by ``until``."""
    while time.monotonic() < until:
        for line in klog.read_new():
            if any(m in line for m in EXPIRY_MARKERS):
                return line
        time.sleep(0.1)
    return None


def _report(result: dict[str, Any], text: str) -> None:
    if out.state().json:
        out.emit_json(result)
    else:
        out.echo(text)


# -- status ----------------------------------------------------------------------------------
@watchdog.command()
@click.option("--socket", "socket_path", help="mux socket [MUX_SOCKET or the default]")
@config_opt
@short_output_opt
@out.command_body
def status(socket_path: str | None, config_path: str | None) -> None:
    """Show the watchdog-mux: device, feeding or tripped, clients and their deadlines.

    Exit status 0: feeding, every client on time; 1: tripped (the node resets), a client
    overdue (the mux stops feeding at its next keepalive), or no mux answering.
    """
    cfg = load_config(config_path, required=config_path is not None)
    try:
        st = wdclient.mux_status(socket_path or cfg.socket)
    except MuxUnavailableError as exc:
        _failed(str(exc), "unreachable")
    overdue = [c for c in st["clients"] if c["name"] in set(st.get("overdue", ()))]
    if out.state().json:
        out.emit_json(st)
    else:
        _print_status(st, overdue)
    if st["tripped"] or overdue:
        raise out.CommandFailed


def _print_status(st: dict[str, Any], overdue: list[dict[str, Any]]) -> None:
    dev = st["device"]
    out.echo(f"watchdog-mux pid {st['pid']} on {st['socket']}")
    left = f", {dev['timeleft']}s left" if dev.get("timeleft") is not None else ""
    out.echo(
        f"device {dev['path']} ({dev['identity']}, driver {dev['driver']}), timeout "
        f"{dev.get('timeout')}s{left}, nowayout {dev.get('nowayout')}"
    )
    if not st["clients"]:
        out.echo("no clients")
    for c in st["clients"]:
        out.echo(
            f"client {c['name']} pid {c['pid']}: timeout {c['timeout']:g}s, "
            f"{max(0.0, c['remaining']):.1f}s left, last feed {c['last_feed_ago']:.1f}s ago"
        )
    if st["tripped"]:
        out.echo(f"TRIPPED: {st['tripped']} - not feeding, node reset pending")
    for c in overdue:
        out.echo(
            f"OVERDUE: client {c['name']} (pid {c['pid']}) has not fed for "
            f"{c['last_feed_ago']:.1f}s (timeout {c['timeout']:g}s): the mux stops feeding "
            "at its next keepalive"
        )
    if not st["tripped"] and not overdue:
        out.echo(f"OK: feeding every {st['feed_interval']:g}s, every client on time")
