"""``hafence watchdog``: inspect and drill the node's watchdog.

``info``    what the kernel reports in sysfs, plus the configured driver: never opens
            (never arms) a device.
``test``    a guarded drill: arm, feed, and stop feeding only after the operator types
            the confirmation word; then report the expiry. softdog with soft_noboot=1
            (the default for softdog here) proves it without a reboot; anything that
            would really reset the node needs ``--allow-reset``.
``status``  the watchdog-mux, its device and its clients, over the mux socket.

``--fake-device STATEFILE`` (or ``$HAFENCE_WATCHDOG_FAKE``) runs against
:class:`hafence.watchdog.fake.FakeKernel`; ``--sysfs-root`` reads another sysfs tree.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import click

from hafence.errors import HafenceError
from hafence.watchdog import client as wdclient
from hafence.watchdog.config import DEFAULT_CONFIG, build_driver, load_config
from hafence.watchdog.device import (
    KernelLog,
    RealSyscalls,
    Syscalls,
    WatchdogDevice,
    list_watchdogs,
)
from hafence.watchdog.driver import KernelModuleDriver, WatchdogDriver, WatchdogSettings
from hafence.watchdog.errors import DeviceMissingError, MuxUnavailableError
from hafence.watchdog.fake import FAKE_ENV, FakeKernel

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
output_opt = click.option(
    "--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True
)


def _syscalls(fake: str | None, sysfs_root: str) -> Syscalls:
    if fake:
        return FakeKernel(fake, sysfs_root=sysfs_root)
    return RealSyscalls()


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


@click.group()
def watchdog() -> None:
    """Inspect and test the watchdog and the watchdog multiplexer."""


# -- info ------------------------------------------------------------------------------------
@watchdog.command()
@click.option("--device", help="only this device (/dev/watchdogN or watchdogN)")
@config_opt
@fake_opt
@sysfs_opt
@output_opt
def info(
    device: str | None,
    config_path: str | None,
    fake_device: str | None,
    sysfs_root: str,
    output: str,
) -> None:
    """Show the watchdog devices and the configured driver, without arming anything."""
    sys = _syscalls(fake_device, sysfs_root)
    try:
        cfg = load_config(config_path, required=config_path is not None)
        if device:
            from hafence.watchdog.device import inspect

            found = [inspect(device, sys, sysfs_root)]
        else:
            found = list_watchdogs(sys, sysfs_root)
        driver = cfg.driver(sys, sysfs_root=sysfs_root)
    except DeviceMissingError as exc:
        _fail(str(exc))
    except HafenceError as exc:
        _fail(str(exc), 2)
    for w in found:
        if w.module == "softdog" and not w.module_params:  # sysfs hides softdog's params
            from hafence_watchdogs.drivers import softdog_init_params

            w.module_params = softdog_init_params(sys) or {}
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
    if output == "json":
        click.echo(
            json.dumps({"configured": configured, "watchdogs": [w.as_dict() for w in found]})
        )
    else:
        src = cfg.file or "defaults"
        kind = "" if plugin else ", a kernel module without a hafence plugin"
        click.echo(f"configured driver: {cfg.module} ({src}{kind})")
        click.echo(
            f"  timeout {cfg.settings.timeout}s, nowayout {int(cfg.settings.nowayout)}, "
            f"noboot {int(cfg.settings.noboot)}, mux socket {cfg.socket}"
        )
        click.echo(f"  its device: {used or 'not present (loaded when the mux starts)'}")
        for w in found:
            click.echo(f"{w.device}: {w.identity or '?'}")
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
                    click.echo(f"  {key:<14} {value}")
    if not found:
        click.echo(
            f"no watchdog device registered (nothing under {sysfs_root}/class/watchdog); "
            f"the mux loads '{cfg.module}' when it starts",
            err=True,
        )
        raise SystemExit(1)


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
@click.option("--timeout", type=int, default=5, show_default=True, help="drill timeout, s")
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
@output_opt
def test(
    module: str | None,
    device: str | None,
    timeout: int,
    noboot: bool | None,
    allow_reset: bool,
    feeds: int,
    confirm_word: str,
    config_path: str | None,
    fake_device: str | None,
    sysfs_root: str,
    output: str,
) -> None:
    """Drill: arm, feed, then stop feeding after confirmation and report the expiry."""
    sys = _syscalls(fake_device, sysfs_root)
    try:
        cfg = load_config(config_path, required=config_path is not None)
        module = module or cfg.module
        if noboot is None:
            noboot = module == "softdog"
        settings = WatchdogSettings(timeout=timeout, noboot=noboot, device=device)
        driver = build_driver(module, settings, sys, sysfs_root=sysfs_root)
    except HafenceError as exc:
        _fail(str(exc), 2)
    if not noboot and not allow_reset:
        _fail(
            f"this drill would RESET the node ({module} without noboot); use softdog with "
            "--noboot, or pass --allow-reset on a node you may reboot. Nothing was armed.",
            2,
        )
    try:
        wdclient.mux_status(cfg.socket, io_timeout=2.0)
    except (MuxUnavailableError, HafenceError, OSError):
        pass
    else:
        _fail(f"watchdog-mux is running ({cfg.socket}) and owns the device: stop it first", 2)
    try:
        klog = KernelLog(sys)
    except OSError as exc:  # the expiry is only visible there: no drill without it
        _fail(f"cannot read the kernel log ({exc.strerror}); run as root. Nothing was armed.", 1)
    try:
        _drill(driver, klog, module, timeout, noboot, feeds, confirm_word, output)
    finally:
        klog.close()


def _drill(
    driver: WatchdogDriver,
    klog: KernelLog,
    module: str,
    timeout: int,
    noboot: bool,
    feeds: int,
    confirm_word: str,
    output: str,
) -> None:
    def say(text: str) -> None:
        if output == "text":
            click.echo(text)

    result: dict[str, Any] = {"driver": module, "timeout": timeout, "noboot": noboot}
    try:
        dev = driver.open()  # ARMED from here on
    except HafenceError as exc:
        _fail(f"{exc} (nothing armed)", 1)
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
                output,
                result,
                "drill aborted: "
                + (f"keepalive failed: {feeder.error}" if feeder.error else "not confirmed")
                + (", watchdog disarmed" if disarmed else ", watchdog STILL ARMED (nowayout)"),
            )
            raise SystemExit(1)
        result["confirmed"] = True
        stopped = time.monotonic()
        say(f"stopped feeding; waiting up to {timeout + 10}s for the expiry")
        seen = _wait_expiry(klog, stopped + timeout + 10)
    finally:
        # an interrupted drill (Ctrl-C, an error) disarms; after a noboot expiry too
        result["disarmed"] = dev.close(magic=True) if not dev.closed else result.get("disarmed")
    result["expired"] = seen is not None
    if seen is None:
        _report(output, result, f"expiry NOT observed within {timeout + 10}s")
        raise SystemExit(1)
    result["expired_after"] = round(time.monotonic() - stopped, 1)
    result["kernel_message"] = seen
    _report(
        output,
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


def _report(output: str, result: dict[str, Any], text: str) -> None:
    if output == "json":
        click.echo(json.dumps(result))
    else:
        click.echo(text)


# -- status ----------------------------------------------------------------------------------
@watchdog.command()
@click.option("--socket", "socket_path", help="mux socket [MUX_SOCKET or the default]")
@config_opt
@output_opt
def status(socket_path: str | None, config_path: str | None, output: str) -> None:
    """Show the watchdog-mux: device, feeding or tripped, clients and their deadlines."""
    try:
        cfg = load_config(config_path, required=config_path is not None)
        st = wdclient.mux_status(socket_path or cfg.socket)
    except MuxUnavailableError as exc:
        _fail(str(exc), 1)
    except HafenceError as exc:
        _fail(str(exc), 2)
    if output == "json":
        click.echo(json.dumps(st))
        return
    dev = st["device"]
    click.echo(f"watchdog-mux pid {st['pid']} on {st['socket']}")
    left = f", {dev['timeleft']}s left" if dev.get("timeleft") is not None else ""
    click.echo(
        f"device {dev['path']} ({dev['identity']}, driver {dev['driver']}), timeout "
        f"{dev.get('timeout')}s{left}, nowayout {dev.get('nowayout')}"
    )
    if st["tripped"]:
        click.echo(f"TRIPPED: {st['tripped']} - not feeding, node reset pending")
    else:
        click.echo(f"feeding every {st['feed_interval']:g}s")
    if not st["clients"]:
        click.echo("no clients")
    for c in st["clients"]:
        click.echo(
            f"client {c['name']} pid {c['pid']}: timeout {c['timeout']:g}s, "
            f"{max(0.0, c['remaining']):.1f}s left, last feed {c['last_feed_ago']:.1f}s ago"
        )
