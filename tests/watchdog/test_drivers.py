"""Watchdog drivers (softdog, iTCO_wdt, generic, any kernel module) at the syscall seam.

The fake kernel decodes modprobe parameters, sysfs and /dev/kmsg as Linux does; what a
driver asked for is read back from it. ``RealSyscalls.modprobe`` runs a real process:
a ``modprobe`` stand-in on $PATH records its argv (the real one would load modules on
this host).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from hafence_watchdogs.drivers import (
    GenericDriver,
    ITCODriver,
    SoftdogDriver,
    softdog_init_params,
)

from hafence.errors import ParamError, UnknownDriverError
from hafence.watchdog.config import build_driver, driver_for_module
from hafence.watchdog.device import RealSyscalls
from hafence.watchdog.driver import KernelModuleDriver, WatchdogSettings
from hafence.watchdog.errors import DeviceMissingError, ModuleLoadError, WatchdogError
from hafence.watchdog.fake import FakeKernel


def opened(kernel: FakeKernel) -> list[dict]:
    return kernel.events("open")


def modprobes(kernel: FakeKernel) -> list[dict]:
    return [{"module": e["module"], **e["params"]} for e in kernel.events("modprobe")]


def test_first_party_drivers_are_registered(kernel: FakeKernel) -> None:
    for name, cls in [
        ("softdog", SoftdogDriver),
        ("iTCO_wdt", ITCODriver),
        ("generic", GenericDriver),
    ]:
        assert type(build_driver(name, WatchdogSettings(), kernel)) is cls


def test_softdog_loads_with_margin_nowayout_noboot(kernel: FakeKernel) -> None:
    drv = build_driver("softdog", WatchdogSettings(timeout=12, noboot=True), kernel)
    wd = drv.prepare()
    assert modprobes(kernel) == [
        {
            "module": "softdog",
            "soft_margin": "12",
            "nowayout": "0",
            "soft_noboot": "1",
            "soft_panic": "0",
        }
    ]
    assert (wd.name, wd.identity, wd.module, wd.state) == (
        "watchdog0",
        "Software Watchdog",
        "softdog",
        "inactive",
    )
    assert opened(kernel) == []  # prepare never arms
    with drv.open() as dev:
        assert opened(kernel) and dev.get_timeout() == 12
        assert kernel.device()["noboot"] is True
    assert kernel.events("magic_close")


def test_softdog_nowayout_reaches_the_module(kernel: FakeKernel) -> None:
    SoftdogDriver(WatchdogSettings(timeout=30, nowayout=True), kernel).prepare()
    assert modprobes(kernel)[0]["nowayout"] == "1"
    assert kernel.device()["nowayout"] is True


def test_loaded_softdog_keeps_its_parameters_and_noboot_is_read_from_kmsg(
    kernel: FakeKernel,
) -> None:
    kernel.modprobe("softdog", {"soft_margin": "20", "soft_noboot": "1"})
    assert softdog_init_params(kernel) == {
        "soft_noboot": "1",
        "soft_margin": "20",
        "soft_panic": "0",
        "nowayout": "0",
    }
    drv = SoftdogDriver(WatchdogSettings(timeout=7, noboot=True), kernel)
    drv.prepare()
    assert len(kernel.events("modprobe")) == 1 and not drv.loaded_by_us
    with drv.open() as dev:
        assert dev.get_timeout() == 7  # applied through WDIOC_SETTIMEOUT instead


def test_drill_refused_on_a_softdog_that_resets(kernel: FakeKernel) -> None:
    kernel.modprobe("softdog", {"soft_noboot": "0"})
    drv = SoftdogDriver(WatchdogSettings(noboot=True), kernel)
    with pytest.raises(
        WatchdogError, match=r"soft_noboot=0 \(resets\); a drill needs soft_noboot=1"
    ):
        drv.open()
    assert opened(kernel) == []


def test_self_fencing_refused_on_a_noboot_softdog(kernel: FakeKernel) -> None:
    kernel.modprobe("softdog", {"soft_noboot": "1"})
    with pytest.raises(WatchdogError, match="self-fencing needs soft_noboot=0"):
        SoftdogDriver(WatchdogSettings(), kernel).open()
    assert opened(kernel) == []


def test_unconfirmable_noboot(kernel: FakeKernel, caplog: pytest.LogCaptureFixture) -> None:
    kernel.modprobe("softdog", {"soft_noboot": "1"})
    kernel.clear_kmsg()  # the init line has left the ring buffer
    with pytest.raises(WatchdogError, match="soft_noboot cannot be confirmed"):
        SoftdogDriver(WatchdogSettings(noboot=True), kernel).prepare()
    with caplog.at_level(logging.WARNING, "hafence.watchdog"):
        SoftdogDriver(WatchdogSettings(), kernel).prepare()
    assert "cannot confirm soft_noboot=0" in caplog.text
    assert opened(kernel) == []


def test_nowayout_mismatch_is_logged(kernel: FakeKernel, caplog: pytest.LogCaptureFixture) -> None:
    kernel.modprobe("iTCO_wdt", {"nowayout": "1"})
    with caplog.at_level(logging.WARNING, "hafence.watchdog"):
        ITCODriver(WatchdogSettings(), kernel).prepare()
    assert "/dev/watchdog0 runs with nowayout=1 (asked 0)" in caplog.text


def test_itco_heartbeat_and_device_found_by_module_link(kernel: FakeKernel) -> None:
    kernel.modprobe("softdog", {"soft_noboot": "1"})  # watchdog0 is someone else
    drv = ITCODriver(WatchdogSettings(timeout=25, nowayout=True), kernel)
    wd = drv.prepare()
    assert modprobes(kernel)[1] == {
        "module": "iTCO_wdt",
        "heartbeat": "25",
        "nowayout": "1",
        "turn_SMI_watchdog_clear_off": "1",
    }
    assert (wd.name, wd.module, wd.nowayout) == ("watchdog1", "iTCO_wdt", True)
    dev = drv.open()
    assert dev.path == "/dev/watchdog1" and dev.nowayout is True
    assert dev.close(magic=True) is False  # nowayout: magic close cannot stop it
    assert kernel.events("close_armed")[0]["reason"] == "nowayout"


def test_itco_has_no_noboot_mode() -> None:
    with pytest.raises(ParamError, match="noboot: the iTCO_wdt driver has no no-reboot mode"):
        ITCODriver(WatchdogSettings(noboot=True), RealSyscalls())


def test_generic_uses_an_existing_device_and_loads_nothing(kernel: FakeKernel) -> None:
    kernel.add_device("Board WDT", timeout=40)
    kernel.add_device("Second WDT")
    drv = GenericDriver(WatchdogSettings(timeout=15), kernel)
    assert drv.prepare().identity == "Board WDT"  # /dev/watchdog = watchdog0
    assert GenericDriver(WatchdogSettings(device="/dev/watchdog1"), kernel).prepare().identity == (
        "Second WDT"
    )
    with drv.open() as dev:
        assert dev.get_timeout() == 15
    assert kernel.events("modprobe") == []


def test_short_timeouts_where_the_hardware_supports_them(kernel: FakeKernel) -> None:
    """5 s as sbd uses: fine on iTCO_wdt (2..613 s); outside a device's range, refused
    before anything is armed."""
    with build_driver("iTCO_wdt", WatchdogSettings(timeout=5), kernel).open() as dev:
        assert dev.get_timeout() == 5
    kernel.add_device("Board WDT", timeout=60, min_timeout=10, max_timeout=120)
    opens = len(opened(kernel))
    drv = GenericDriver(WatchdogSettings(timeout=5, device="/dev/watchdog1"), kernel)
    with pytest.raises(WatchdogError) as exc:
        drv.open()
    assert str(exc.value) == (
        "timeout 5s (WATCHDOG_TIMEOUT) is outside the 10..120s that /dev/watchdog1 "
        "(Board WDT) supports"
    )
    assert len(opened(kernel)) == opens  # nothing armed


def test_a_timeout_rounded_up_by_the_hardware_is_refused(kernel: FakeKernel) -> None:
    """The timing rules were checked against WATCHDOG_TIMEOUT: a device that resets later
    than that must not serve; it is disarmed again at once."""
    kernel.add_device("Coarse WDT", timeout=60, granularity=4)
    with pytest.raises(WatchdogError, match="asked a 5s timeout, the driver applied 8s: set "
                       "WATCHDOG_TIMEOUT=8"):  # fmt: skip
        GenericDriver(WatchdogSettings(timeout=5), kernel).open()
    assert kernel.events("magic_close") and kernel.device()["active"] is False
    with GenericDriver(WatchdogSettings(timeout=8), kernel).open() as dev:
        assert dev.get_timeout() == 8


def test_loaded_parameters_through_the_registry(kernel: FakeKernel) -> None:
    """How the core reads a module's parameters without importing a plugin."""
    kernel.modprobe("softdog", {"soft_margin": "20", "soft_noboot": "1"})
    kernel.modprobe("iTCO_wdt", {})
    softdog = driver_for_module("softdog", kernel)
    assert isinstance(softdog, SoftdogDriver)
    assert softdog.loaded_params() == softdog_init_params(kernel)  # sysfs hides them
    itco = driver_for_module("iTCO_wdt", kernel)
    assert isinstance(itco, ITCODriver) and itco.loaded_params() == {}  # mode 0 in sysfs
    assert driver_for_module("sp5100_tco", kernel) is None  # no plugin knows it


def test_generic_without_any_watchdog(kernel: FakeKernel) -> None:
    with pytest.raises(DeviceMissingError, match="watchdogs present: none"):
        GenericDriver(WatchdogSettings(), kernel).open()
    with pytest.raises(DeviceMissingError, match="no watchdog watchdog3"):
        GenericDriver(WatchdogSettings(device="/dev/watchdog3"), kernel).open()
    assert opened(kernel) == []


def test_configured_device_must_belong_to_the_driver(kernel: FakeKernel) -> None:
    """softdog's noboot promise must never be applied to an iTCO chip that resets."""
    kernel.modprobe("iTCO_wdt", {})
    drv = SoftdogDriver(WatchdogSettings(noboot=True, device="/dev/watchdog0"), kernel)
    with pytest.raises(WatchdogError, match=r"/dev/watchdog0 is 'iTCO_wdt'.*not a softdog device"):
        drv.open()
    assert opened(kernel) == []


def test_unknown_module_fails_in_modprobe_with_nothing_armed(kernel: FakeKernel) -> None:
    drv = build_driver("nosuch_wdt", WatchdogSettings(), kernel)
    assert isinstance(drv, KernelModuleDriver) and drv.name == "nosuch_wdt"
    with pytest.raises(ModuleLoadError, match="Module nosuch_wdt not found"):
        drv.open()
    assert opened(kernel) == [] and kernel.snapshot()["devices"] == {}


def test_module_not_available_on_this_kernel(kernel: FakeKernel) -> None:
    kernel.set_available([])
    with pytest.raises(ModuleLoadError, match="Module softdog not found"):
        SoftdogDriver(WatchdogSettings(), kernel).open()
    assert opened(kernel) == []


def test_a_name_that_is_no_module_is_an_unknown_driver(kernel: FakeKernel) -> None:
    with pytest.raises(
        UnknownDriverError, match=r"'\.\./softdog' \(available: generic, iTCO_wdt, softdog\)"
    ):
        build_driver("../softdog", WatchdogSettings(), kernel)


def test_any_kernel_module_like_proxmox(kernel: FakeKernel) -> None:
    """WATCHDOG_MODULE=sp5100_tco: no plugin, loaded and found by its sysfs module link."""
    kernel.modprobe("softdog", {})
    drv = build_driver("sp5100_tco", WatchdogSettings(timeout=9), kernel)
    wd = drv.prepare()
    assert modprobes(kernel)[1] == {"module": "sp5100_tco", "heartbeat": "60", "nowayout": "0"}
    assert (wd.name, wd.identity) == ("watchdog1", "SP5100 TCO timer")
    with drv.open() as dev:
        assert dev.get_timeout() == 9


def test_module_loaded_but_its_device_missing(kernel: FakeKernel) -> None:
    kernel.add_device("Other WDT")
    with pytest.raises(
        DeviceMissingError, match=r"module softdog_x \(watchdogs present: watchdog0"
    ):
        build_driver("softdog_x", WatchdogSettings(), kernel).find_device()


# -- the real modprobe command ------------------------------------------------------------------
def _stand_in(bindir: Path, body: str) -> None:
    bindir.mkdir(exist_ok=True)
    script = bindir / "modprobe"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_real_modprobe_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = tmp_path / "argv"
    _stand_in(tmp_path / "bin", f'printf "%s\\n" "$@" > {argv}')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    drv = SoftdogDriver(WatchdogSettings(timeout=11, noboot=True), RealSyscalls())
    RealSyscalls().modprobe(drv.module, drv.module_args())
    assert argv.read_text().split() == ["softdog", "soft_margin=11", "nowayout=0", "soft_noboot=1"]


def test_real_modprobe_failure_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(
        tmp_path / "bin", 'echo "modprobe: FATAL: Module $1 not found in directory" >&2\nexit 1'
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ModuleLoadError, match="modprobe nosuch failed: modprobe: FATAL: Module"):
        RealSyscalls().modprobe("nosuch", {})
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ModuleLoadError, match="modprobe is not installed"):
        RealSyscalls().modprobe("softdog", {})
