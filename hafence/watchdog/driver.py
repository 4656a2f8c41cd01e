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
    module_params,
)
from hafence.watchdog.errors import DeviceMissingError, WatchdogError

log = logging.getLogger("hafence.watchdog")

MIN_TIMEOUT = 1
MAX_TIMEOUT = 3600


@dataclass(frozen=True)
class WatchdogSettings:
    """What the operator asked for (from the mux config or CLI options)."""

    timeout: int = 10  #: hardware timeout in seconds
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
        if self.settings.noboot and not self.supports_noboot:
            raise ParamError("noboot", f"the {self.name} driver has no no-reboot mode")

    # -- module ----------------------------------------------------------------------------
    def module_args(self) -> dict[str, str]:
        """modprobe parameters for the settings (override per driver)."""
        return {"nowayout": "1" if self.settings.nowayout else "0"}

    def load(self) -> None:
        """modprobe the module; refuse a loaded module whose parameters make it unsafe."""
        if not self.module:
            return
        args = self.module_args()
        loaded = module_params(self.module, self.sys, self.sysfs_root)
        if not loaded:
            log.info("loading watchdog module %s %s", self.module, _fmt(args))
            self.sys.modprobe(self.module, args)
            loaded = module_params(self.module, self.sys, self.sysfs_root)
        self.check_loaded(loaded, args)

    def check_loaded(self, loaded: dict[str, str], wanted: dict[str, str]) -> None:
        """A module loaded before us keeps its parameters; say so when they differ."""
        want = wanted.get("nowayout")
        if want is not None and _bool(loaded.get("nowayout", want)) != _bool(want):
            log.warning(
                "%s is loaded with nowayout=%s (asked %s): modprobe does not change a "
                "loaded module",
                self.module,
                loaded.get("nowayout"),
                want,
            )

    # -- device ----------------------------------------------------------------------------
    def find_device(self) -> SysfsWatchdog:
        if self.settings.device:
            return inspect(self.settings.device, self.sys, self.sysfs_root)
        found = list_watchdogs(self.sys, self.sysfs_root)
        for wd in found:
            if self.matches(wd):
                return wd
        have = ", ".join(f"{w.name} ({w.identity})" for w in found) or "none"
        raise DeviceMissingError(
            f"{self.name}: no watchdog device with identity '{self.identity}' "
            f"(watchdogs present: {have})"
        )

    def matches(self, wd: SysfsWatchdog) -> bool:
        return wd.identity == self.identity or (bool(self.module) and wd.module == self.module)

    def device_path(self, wd: SysfsWatchdog) -> str:
        return f"{self.dev_root}/{wd.name}"

    def prepare(self) -> SysfsWatchdog:
        """Load the module and locate the device; nothing is armed."""
        self.load()
        return self.find_device()

    def open(self) -> WatchdogDevice:
        """Prepare, open (ARM) the device and apply the timeout."""
        wd = self.prepare()
        dev = WatchdogDevice(self.device_path(wd), self.sys, nowayout=wd.nowayout)
        try:
            if dev.get_timeout() != self.settings.timeout:
                applied = dev.set_timeout(self.settings.timeout)
                if applied != self.settings.timeout:
                    log.warning(
                        "%s: asked timeout %ds, the driver applied %ds",
                        dev.path,
                        self.settings.timeout,
                        applied,
                    )
        except BaseException:
            dev.close(magic=True)
            raise
        return dev


def _bool(value: str | None) -> bool:
    return str(value).strip() in ("1", "Y", "y", "true")


def _fmt(args: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items())


def unsafe_noboot(driver: str, loaded: str | None, wanted: bool) -> WatchdogError:
    state = "soft_noboot=1 (expiry only logs)" if _bool(loaded) else "soft_noboot=0 (expiry resets)"
    need = "a drill needs soft_noboot=1" if wanted else "self-fencing needs soft_noboot=0"
    return WatchdogError(
        f"{driver}: softdog is already loaded with {state}; {need}. Unload it first "
        "(rmmod softdog) or change the setting"
    )
