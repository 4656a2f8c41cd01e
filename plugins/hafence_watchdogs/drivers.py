"""First-party watchdog drivers: softdog, iTCO_wdt and any existing /dev/watchdogN."""

from __future__ import annotations

from typing import ClassVar

from hafence.watchdog.device import SysfsWatchdog
from hafence.watchdog.driver import WatchdogDriver, _bool, unsafe_noboot


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

    def check_loaded(self, loaded: dict[str, str], wanted: dict[str, str]) -> None:
        super().check_loaded(loaded, wanted)
        # soft_noboot decides whether expiry resets the node: a mismatch either way is unsafe
        if _bool(loaded.get("soft_noboot", "0")) != self.settings.noboot:
            raise unsafe_noboot(self.name, loaded.get("soft_noboot"), self.settings.noboot)


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
