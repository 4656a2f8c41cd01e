"""First-party watchdog drivers: softdog, iTCO_wdt and any existing /dev/watchdogN."""

from __future__ import annotations

import logging
import re
from typing import ClassVar

from hafence.watchdog.device import KernelLog, Syscalls, SysfsWatchdog
from hafence.watchdog.driver import WatchdogDriver
from hafence.watchdog.errors import WatchdogError

log = logging.getLogger("hafence.watchdog")


class SoftdogDriver(WatchdogDriver):
    """The kernel's software watchdog: a timer, no hardware. soft_noboot=1 is drill mode."""

    name = "softdog"
    description = "Linux software watchdog (softdog): soft_margin, nowayout, soft_noboot"
    module = "softdog"
    identity = "Software Watchdog"
    supports_noboot: ClassVar[bool] = True

    def module_args(self) -> dict[str, str]:
        return {
            "soft_margin": str(self.settings.timeout),
            "nowayout": "1" if self.settings.nowayout else "0",
            "soft_noboot": "1" if self.settings.noboot else "0",
        }

    def loaded_params(self) -> dict[str, str] | None:
        return softdog_init_params(self.sys)  # sysfs hides them; the init line does not

    def verify(self, wd: SysfsWatchdog) -> None:
        super().verify(wd)
        # soft_noboot decides whether expiry resets the node: a mismatch either way is
        # unsafe. sysfs does not show it; the module's init line in the kernel log does.
        if self.loaded_by_us:
            return
        params = softdog_init_params(self.sys)
        noboot = None if params is None else params["soft_noboot"] != "0"
        if noboot is None:
            if self.settings.noboot:
                raise WatchdogError(
                    "softdog was loaded before and its soft_noboot cannot be confirmed (no "
                    "'softdog: initialized' line readable in the kernel log); a drill needs "
                    "soft_noboot=1: rmmod softdog and retry"
                )
            log.warning("softdog was loaded before; cannot confirm soft_noboot=0")
        elif noboot != self.settings.noboot:
            state = "soft_noboot=1 (expiry only logs)" if noboot else "soft_noboot=0 (resets)"
            need = (
                "a drill needs soft_noboot=1"
                if self.settings.noboot
                else ("self-fencing needs soft_noboot=0")
            )
            raise WatchdogError(
                f"softdog is already loaded with {state}; {need}. Unload it (rmmod softdog) "
                "or change the setting"
            )


_INIT = re.compile(
    r"initialized\. soft_noboot=(?P<soft_noboot>\d+) soft_margin=(?P<soft_margin>\d+) sec"
    r"(?: soft_panic=(?P<soft_panic>\d+))? \(nowayout= ?(?P<nowayout>\d+)\)"
)


def softdog_init_params(sys: Syscalls) -> dict[str, str] | None:
    """softdog's parameters from its last init line in /dev/kmsg; None when not found."""
    try:
        klog = KernelLog(sys, from_start=True)
    except OSError:
        return None
    try:
        found = None
        for line in klog.read_new():
            m = _INIT.search(line)
            if m:
                found = {k: v for k, v in m.groupdict().items() if v is not None}
        return found
    except OSError:
        return None
    finally:
        klog.close()


class ITCODriver(WatchdogDriver):
    """Intel TCO hardware watchdog (chipset); resets the board even if the kernel hangs."""

    name = "iTCO_wdt"
    description = "Intel TCO chipset watchdog (iTCO_wdt): heartbeat, nowayout"
    module = "iTCO_wdt"
    identity = "iTCO_wdt"

    def module_args(self) -> dict[str, str]:
        return {
            "heartbeat": str(self.settings.timeout),
            "nowayout": "1" if self.settings.nowayout else "0",
        }


class GenericDriver(WatchdogDriver):
    """Any watchdog whose driver is already loaded: /dev/watchdog (or the configured one)."""

    name = "generic"
    description = "an existing /dev/watchdogN (loads nothing; WATCHDOG_DEVICE picks one)"
    module = None
    identity = None

    def matches(self, wd: SysfsWatchdog) -> bool:
        return True  # the first watchdog the kernel registered (= /dev/watchdog)


DRIVERS: list[type[WatchdogDriver]] = [SoftdogDriver, ITCODriver, GenericDriver]
