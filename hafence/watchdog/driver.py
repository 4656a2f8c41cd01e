"""The watchdog driver contract (hook ``hafence_watchdog_drivers``).

A driver knows how to bring one kind of watchdog up: which kernel module to load with
which parameters, and how to find its ``/dev/watchdogN``. It never decides *when* to
feed; that is the mux's job. Lifecycle::

    drv = SoftdogDriver(WatchdogSettings(timeout=10, noboot=True), syscalls)
    info = drv.prepare()      # modprobe + locate + sysfs check; nothing is armed yet
    dev = drv.open()          # opens (ARMS) the device and applies the timeout

Errors: :class:`ModuleLoadError` (modprobe failed), :class:`DeviceMissingError` (no
device after loading), :class:`WatchdogError` (loaded with settings that would make the
watchdog unsafe, e.g. soft_noboot differs from what was asked). Nothing is armed when
``prepare`` fails.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import ClassVar

from hafence.errors import ParamError
from hafence.watchdog.device import (
    Syscalls,
    SysfsWatchdog,
    WatchdogDevice,
    default_syscalls,
    inspect,
    list_watchdogs,
    loaded_module,
    module_params,
)
from hafence.watchdog.errors import DeviceMissingError, WatchdogError

log = logging.getLogger("hafence.watchdog")

MIN_TIMEOUT = 1
MAX_TIMEOUT = 3600
DEFAULT_TIMEOUT = 10  #: WATCHDOG_TIMEOUT's default, as Proxmox's watchdog-mux


@dataclass(frozen=True)
class WatchdogSettings:
    """What the operator asked for (from the mux config or CLI options)."""

    timeout: int = DEFAULT_TIMEOUT  #: hardware timeout in seconds
    nowayout: bool = False  #: once opened, the watchdog can never be stopped
    noboot: bool = False  #: softdog only: expiry logs instead of resetting (drills)
    device: str | None = None  #: explicit /dev/watchdogN (generic driver; else found)

    def __post_init__(self) -> None:
        if not isinstance(self.timeout, int) or not MIN_TIMEOUT <= self.timeout <= MAX_TIMEOUT:
            raise ParamError("timeout", f"must be {MIN_TIMEOUT}..{MAX_TIMEOUT} seconds")


class WatchdogDriver:
    """Base class: subclasses set ``name``, ``description`` and usually ``module``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    module: ClassVar[str | None] = None  #: kernel module to modprobe (None: load nothing)
    identity: ClassVar[str | None] = None  #: sysfs identity of its device
    supports_noboot: ClassVar[bool] = False

    def __init__(
        self,
        settings: WatchdogSettings | None = None,
        syscalls: Syscalls | None = None,
        *,
        sysfs_root: str = "/sys",
        dev_root: str = "/dev",
    ) -> None:
        self.settings = settings or WatchdogSettings()
        self.sys = syscalls or default_syscalls()
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root.rstrip("/")
        self.loaded_by_us = False
        if self.settings.noboot and not self.supports_noboot:
            raise ParamError("noboot", f"the {self.name} driver has no no-reboot mode")

    # -- module ----------------------------------------------------------------------------
    def module_args(self) -> dict[str, str]:
        """modprobe parameters for the settings (override per driver)."""
        return {"nowayout": "1" if self.settings.nowayout else "0"}

    def load(self) -> None:
        """modprobe the module unless it is loaded (then its parameters stay as they are)."""
        self.loaded_by_us = False
        if not self.module:
            return
        if loaded_module(self.module, self.sys, self.sysfs_root):
            log.info("watchdog module %s already loaded; its parameters stay", self.module)
            return
        args = self.module_args()
        log.info("loading watchdog module %s %s", self.module, _fmt(args))
        self.sys.modprobe(self.module, args)
        self.loaded_by_us = True

    def loaded_params(self) -> dict[str, str] | None:
        """The parameters the loaded module runs with (None: they cannot be read).

        What sysfs shows; a driver whose module hides them (mode 0) overrides this.
        """
        return module_params(self.module, self.sys, self.sysfs_root) if self.module else {}

    def verify(self, wd: SysfsWatchdog) -> None:
        """Check the located device against the settings; raise when it would be unsafe."""
        lo, hi, want = wd.min_timeout, wd.max_timeout, self.settings.timeout
        if (lo is not None and want < lo) or (hi is not None and want > hi):
            raise WatchdogError(
                f"timeout {want}s (WATCHDOG_TIMEOUT) is outside the {lo or '?'}..{hi or '?'}s "
                f"that {wd.device} ({wd.identity}) supports"
            )
        if wd.nowayout is not None and wd.nowayout != self.settings.nowayout:
            log.warning(
                "%s runs with nowayout=%d (asked %d): a loaded driver keeps its setting",
                wd.device,
                wd.nowayout,
                self.settings.nowayout,
            )

    # -- device ----------------------------------------------------------------------------
    def find_device(self) -> SysfsWatchdog:
        if self.settings.device:
            wd = inspect(self.settings.device, self.sys, self.sysfs_root)
            # never arm a device the driver does not own: softdog's noboot promise says
            # nothing about an iTCO chip that happens to be the configured device
            if not self.matches(wd):
                raise WatchdogError(
                    f"{self.name}: {wd.device} is '{wd.identity}' (module {wd.module or '?'}), "
                    f"not a {self.name} device; fix WATCHDOG_DEVICE or WATCHDOG_MODULE"
                )
            return wd
        found = list_watchdogs(self.sys, self.sysfs_root)
        for wd in found:
            if self.matches(wd):
                return wd
        have = ", ".join(f"{w.name} ({w.identity})" for w in found) or "none"
        want = f"identity '{self.identity}'" if self.identity else f"module {self.module}"
        raise DeviceMissingError(
            f"{self.name}: no watchdog device with {want} (watchdogs present: {have}); "
            "WATCHDOG_DEVICE names one explicitly"
        )

    def matches(self, wd: SysfsWatchdog) -> bool:
        return wd.identity == self.identity or (bool(self.module) and wd.module == self.module)

    def device_path(self, wd: SysfsWatchdog) -> str:
        return f"{self.dev_root}/{wd.name}"

    def prepare(self) -> SysfsWatchdog:
        """Load the module, locate and check the device; nothing is armed."""
        self.load()
        wd = self.find_device()
        self.verify(wd)
        return wd

    def open(self, prepared: SysfsWatchdog | None = None) -> WatchdogDevice:
        """Open (ARM) the device and apply the timeout; prepares first unless given
        what :meth:`prepare` returned."""
        wd = prepared or self.prepare()
        dev = WatchdogDevice(self.device_path(wd), self.sys, nowayout=wd.nowayout)
        try:
            want = self.settings.timeout
            if dev.get_timeout() != want:
                applied = dev.set_timeout(want)
                if applied > want:  # the timing rules were checked against `want`
                    raise WatchdogError(
                        f"{dev.path}: asked a {want}s timeout, the driver applied {applied}s: "
                        f"set WATCHDOG_TIMEOUT={applied} (and check the daemons' timings)"
                    )
                if applied != want:
                    log.warning(
                        "%s: asked timeout %ds, the driver applied %ds", dev.path, want, applied
                    )
        except BaseException:
            dev.close(magic=True)
            raise
        return dev


def _fmt(args: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items())


_MODULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class KernelModuleDriver(WatchdogDriver):
    """Any watchdog kernel module without a plugin (``WATCHDOG_MODULE=sp5100_tco``).

    As Proxmox's watchdog-mux does with WATCHDOG_MODULE: modprobe the module (only
    ``nowayout``, which watchdog drivers share), then use the watchdog whose sysfs
    device belongs to that module; the timeout is set through WDIOC_SETTIMEOUT.
    """

    description = "a watchdog kernel module without its own plugin (modprobe NAME nowayout=)"

    def matches(self, wd: SysfsWatchdog) -> bool:
        return wd.module == self.module


def module_driver(module: str) -> type[WatchdogDriver] | None:
    """A :class:`KernelModuleDriver` subclass for ``module``; None if not a module name."""
    if not _MODULE_NAME.fullmatch(module):
        return None
    return type(
        f"KernelModuleDriver_{module}", (KernelModuleDriver,), {"name": module, "module": module}
    )
