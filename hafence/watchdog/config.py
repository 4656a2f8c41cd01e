"""The watchdog config file, like Proxmox's /etc/default/pve-ha-manager.

``/etc/default/hafence-watchdog`` (or ``--config FILE``), shell-style ``KEY=VALUE``
lines, ``#`` comments::

    WATCHDOG_MODULE=iTCO_wdt     # driver: softdog (default), iTCO_wdt, generic, or a plugin's
    WATCHDOG_TIMEOUT=10          # hardware timeout, seconds
    WATCHDOG_NOWAYOUT=0          # 1: the watchdog can never be stopped once opened
    WATCHDOG_NOBOOT=0            # softdog only, drills: expiry logs instead of resetting
    WATCHDOG_DEVICE=/dev/watchdog1   # pick a device (default: the driver finds its own)
    MUX_SOCKET=/run/hafence/watchdog-mux.sock
    FEED_INTERVAL=1              # how often the mux feeds the hardware, seconds

A missing file means all defaults. Errors name the file, the line and the key.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from hafence.errors import ConfigError, ParamError
from hafence.plugins import PluginRegistry, get_registry
from hafence.watchdog.device import Syscalls
from hafence.watchdog.driver import (
    DEFAULT_TIMEOUT,
    WatchdogDriver,
    WatchdogSettings,
    module_driver,
)
from hafence.watchdog.protocol import default_socket

DEFAULT_CONFIG = "/etc/default/hafence-watchdog"
DEFAULT_MODULE = "softdog"


@dataclass
class MuxConfig:
    module: str = DEFAULT_MODULE
    settings: WatchdogSettings = field(default_factory=WatchdogSettings)
    socket: str = field(default_factory=default_socket)
    feed_interval: float = 1.0
    file: str | None = None
    lines: dict[str, int] = field(default_factory=dict)  #: KEY -> line number in ``file``

    def driver(
        self, syscalls: Syscalls | None = None, *, sysfs_root: str = "/sys", dev_root: str = "/dev"
    ) -> WatchdogDriver:
        """The configured driver; a setting it rejects is named by file, line and key."""
        try:
            return build_driver(
                self.module, self.settings, syscalls, sysfs_root=sysfs_root, dev_root=dev_root
            )
        except ParamError as exc:
            key = {"noboot": "WATCHDOG_NOBOOT", "timeout": "WATCHDOG_TIMEOUT"}.get(
                exc.field, "WATCHDOG_MODULE"
            )
            raise ConfigError(
                f"{exc.message} (WATCHDOG_MODULE={self.module})",
                file=self.file,
                line=self.lines.get(key),
                field=key,
            ) from None


def _bool(raw: str, key: str, file: str, line: int) -> bool:
    if raw in ("0", "1"):
        return raw == "1"
    raise ConfigError(f"must be 0 or 1, got {raw!r}", file=file, line=line, field=key)


def parse_config(text: str, file: str = DEFAULT_CONFIG) -> MuxConfig:
    values: dict[str, tuple[str, int]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, rest = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not sep or not key.isidentifier():
            raise ConfigError("expected KEY=VALUE", file=file, line=lineno)
        try:
            words = shlex.split(rest, comments=True)
        except ValueError as exc:
            raise ConfigError(str(exc), file=file, line=lineno, field=key) from None
        if len(words) > 1:
            raise ConfigError("one value expected (quote it)", file=file, line=lineno, field=key)
        values[key] = (words[0] if words else "", lineno)

    cfg = MuxConfig(file=file, lines={k: n for k, (_, n) in values.items()})
    timeout, nowayout, noboot, device = DEFAULT_TIMEOUT, False, False, None
    for key, (value, lineno) in values.items():
        if key == "WATCHDOG_MODULE":
            if not value:
                raise ConfigError("must name a driver", file=file, line=lineno, field=key)
            cfg.module = value
        elif key == "WATCHDOG_TIMEOUT":
            try:
                timeout = int(value)
            except ValueError:
                raise ConfigError(
                    f"must be whole seconds, got {value!r}", file=file, line=lineno, field=key
                ) from None
        elif key == "WATCHDOG_NOWAYOUT":
            nowayout = _bool(value, key, file, lineno)
        elif key == "WATCHDOG_NOBOOT":
            noboot = _bool(value, key, file, lineno)
        elif key == "WATCHDOG_DEVICE":
            if not value.startswith("/dev/watchdog"):
                raise ConfigError(
                    f"must be a /dev/watchdogN path, got {value!r}",
                    file=file,
                    line=lineno,
                    field=key,
                )
            device = value
        elif key == "MUX_SOCKET":
            if not value.startswith("/"):
                raise ConfigError("must be an absolute path", file=file, line=lineno, field=key)
            cfg.socket = value
        elif key == "FEED_INTERVAL":
            try:
                cfg.feed_interval = float(value)
            except ValueError:
                cfg.feed_interval = -1
            if not 0.05 <= cfg.feed_interval <= 60:
                raise ConfigError(
                    f"must be 0.05..60 seconds, got {value!r}", file=file, line=lineno, field=key
                )
        else:
            known = "WATCHDOG_MODULE, WATCHDOG_TIMEOUT, WATCHDOG_NOWAYOUT, WATCHDOG_NOBOOT, "
            known += "WATCHDOG_DEVICE, MUX_SOCKET, FEED_INTERVAL"
            raise ConfigError(f"unknown key (known: {known})", file=file, line=lineno, field=key)
    try:
        cfg.settings = WatchdogSettings(
            timeout=timeout, nowayout=nowayout, noboot=noboot, device=device
        )
    except ParamError as exc:
        line = values.get("WATCHDOG_TIMEOUT", ("", None))[1]
        raise ConfigError(exc.message, file=file, line=line, field="WATCHDOG_TIMEOUT") from None
    if cfg.feed_interval >= cfg.settings.timeout:
        raise ConfigError(
            f"must be shorter than WATCHDOG_TIMEOUT ({cfg.settings.timeout}s)",
            file=file,
            line=values.get("FEED_INTERVAL", ("", None))[1],
            field="FEED_INTERVAL",
        )
    return cfg


def load_config(path: str | Path | None = None, *, required: bool = False) -> MuxConfig:
    """Read the config file; a missing default file means defaults."""
    p = Path(path or DEFAULT_CONFIG)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError("file not found", file=str(p)) from None
        return MuxConfig()
    except OSError as exc:
        raise ConfigError(exc.strerror or str(exc), file=str(p)) from None
    return parse_config(text, str(p))


def build_driver(
    module: str,
    settings: WatchdogSettings,
    syscalls: Syscalls | None = None,
    *,
    registry: PluginRegistry | None = None,
    sysfs_root: str = "/sys",
    dev_root: str = "/dev",
) -> WatchdogDriver:
    """The named watchdog driver (UnknownDriverError lists the available ones)."""
    from hafence.errors import UnknownDriverError

    drivers = (registry or get_registry()).watchdog_drivers()
    # a name without a plugin is a kernel module, as in Proxmox (WATCHDOG_MODULE=sp5100_tco);
    # modprobe then says whether it exists
    cls = drivers.get(module) or module_driver(module)
    if cls is None:
        raise UnknownDriverError("watchdog", module, list(drivers))
    return cls(settings, syscalls, sysfs_root=sysfs_root, dev_root=dev_root)


def driver_for_module(
    module: str,
    syscalls: Syscalls | None = None,
    *,
    registry: PluginRegistry | None = None,
    sysfs_root: str = "/sys",
) -> WatchdogDriver | None:
    """The plugin driver that loads kernel module ``module``; None when no plugin does."""
    for cls in (registry or get_registry()).watchdog_drivers().values():
        if cls.module == module:
            return cls(None, syscalls, sysfs_root=sysfs_root)
    return None
