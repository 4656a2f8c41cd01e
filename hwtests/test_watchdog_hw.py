"""The watchdog stack against a real ``/dev/watchdogN`` on this machine.

Safe on a real node: a test that ARMS a watchdog runs only when its expiry cannot
reset the machine -- softdog loaded with ``soft_noboot=1`` (confirmed from softdog's
init line in the kernel log) -- or when the operator says the machine may reset
(``HAFENCE_HW_WATCHDOG_ALLOW_RESET=1``, or ``allow_reset = true`` in a
``[watchdog.NAME]`` table of the hardware config). Otherwise those tests skip and say
why; the sysfs inspection (which never opens a device) still runs. No device at all:
everything skips. A device another process holds (a running watchdog-mux) is skipped.
Nothing here loads a kernel module.

On a node::

    modprobe softdog soft_noboot=1 soft_margin=60      # (rmmod softdog first if loaded)
    python -m pytest hwtests/test_watchdog_hw.py -v

Devices: every ``[watchdog.NAME]`` table of the hardware config (``device =
"/dev/watchdogN"``, optional ``allow_reset``), else every watchdog in
/sys/class/watchdog. With ``$HAFENCE_WATCHDOG_FAKE`` the same tests run on the fake
kernel (how tests/watchdog proves this file works).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hafence.errors import ConfigError
from hafence.watchdog.client import WatchdogClient, mux_status
from hafence.watchdog.config import driver_for_module
from hafence.watchdog.device import (
    WDIOF_SETTIMEOUT,
    KernelLog,
    Syscalls,
    SysfsWatchdog,
    WatchdogDevice,
    inspect,
    list_watchdogs,
)
from hafence.watchdog.errors import DeviceBusyError, MuxProtocolError, MuxUnavailableError
from hafence.watchdog.kernel import FAKE_ENV, choose_kernel

from .conftest import config_path, hw_section

ALLOW_ENV = "HAFENCE_HW_WATCHDOG_ALLOW_RESET"
NOBOOT_FIRED = "Triggered - Reboot ignored"
WAIT = 30.0  # upper bound for an event to show up; nothing asserts how fast
# the real kernel, unless the test run names a fake one (tests/watchdog/test_hwtest.py)
KERNEL: Syscalls = choose_kernel(
    os.environ.get(FAKE_ENV), warn=lambda msg: print(f"hwtests: {msg}", file=sys.stderr)
)


@dataclass(frozen=True)
class Target:
    device: str
    allow_reset: bool
    origin: str


def _targets() -> list[Target] | str:
    """The devices to test, or why there are none."""
    tables = hw_section("watchdog")
    if tables:
        file = str(config_path())
        out = []
        for name, table in tables.items():
            where = f"watchdog.{name}"
            if not isinstance(table, dict):
                raise ConfigError("must be a table", file=file, field=where)
            for key in table:
                if key not in ("device", "allow_reset", "description"):
                    raise ConfigError(
                        "unknown key (known: device, allow_reset, description)",
                        file=file,
                        field=f"{where}.{key}",
                    )
            device, allow = table.get("device"), table.get("allow_reset", False)
            if not isinstance(device, str) or not device.startswith("/dev/watchdog"):
                raise ConfigError(
                    "must be a /dev/watchdogN path",
                    file=file,
                    field=f"{where}.device",
                )
            if not isinstance(allow, bool):
                raise ConfigError("must be true or false", file=file, field=f"{where}.allow_reset")
            out.append(Target(device, allow, f"{file} [{where}]"))
        return out
    found = list_watchdogs(KERNEL)
    if not found:
        return (
            "no watchdog device on this machine (/sys/class/watchdog is empty). To run these "
            "tests: modprobe softdog soft_noboot=1 (see docs/watchdog.md)"
        )
    return [Target(w.device, False, "sysfs") for w in found]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    targets = _targets()
    if isinstance(targets, str):
        params = [pytest.param(None, id="none", marks=pytest.mark.skip(reason=targets))]
    else:
        params = [pytest.param(t, id=Path(t.device).name) for t in targets]
    metafunc.parametrize("target", params)


def _allowed_env() -> bool:
    return os.environ.get(ALLOW_ENV, "") in ("1", "yes", "true")


class HwWatchdog:
    """One device under test and the safety gate in front of arming it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.path = target.device
        self.sys: Syscalls = KERNEL
        self.fake = bool(os.environ.get(FAKE_ENV))
        self.sysfs: SysfsWatchdog = inspect(self.path, self.sys)
        self.softdog = self.sysfs.module == "softdog"
        softdog = driver_for_module("softdog", self.sys) if self.softdog else None
        params = softdog.loaded_params() if softdog else None
        #: True/False from softdog's init line; None: not softdog, or not readable
        self.noboot: bool | None = None if params is None else params["soft_noboot"] != "0"

    @property
    def reset_allowed(self) -> bool:
        return self.target.allow_reset or _allowed_env()

    @property
    def expiry_is_harmless(self) -> bool:
        return self.softdog and self.noboot is True

    def require_arming(self) -> None:
        """Skip unless opening this device is safe (or allowed) and possible."""
        if not self.fake and os.geteuid() != 0:
            pytest.skip(f"opening {self.path} needs root")
        if self.sysfs.state == "active":
            pytest.skip(f"{self.path} is active: another process (a watchdog-mux?) uses it")
        if self.expiry_is_harmless or self.reset_allowed:
            return
        if self.softdog and self.noboot is False:
            why = "softdog runs with soft_noboot=0: its expiry resets this machine"
        elif self.softdog:
            why = "softdog's soft_noboot cannot be confirmed (kernel log unreadable or wrapped)"
        else:
            why = f"'{self.sysfs.identity}' is a hardware watchdog: its expiry resets this machine"
        pytest.skip(
            f"not arming {self.path}: {why}. Use softdog with soft_noboot=1 (rmmod softdog; "
            f"modprobe softdog soft_noboot=1), or set {ALLOW_ENV}=1 on a machine that may reset"
        )

    def require_harmless_expiry(self) -> None:
        self.require_arming()
        if not self.expiry_is_harmless:
            pytest.skip(
                f"letting {self.path} expire would reset this machine; only softdog with "
                "soft_noboot=1 proves an expiry without a reboot"
            )

    def open(self) -> WatchdogDevice:
        try:
            return WatchdogDevice(self.path, self.sys, nowayout=self.sysfs.nowayout)
        except DeviceBusyError as exc:
            pytest.skip(str(exc))

    def klog(self) -> KernelLog:
        try:
            return KernelLog(self.sys)
        except OSError as exc:
            pytest.skip(f"cannot read the kernel log: {exc.strerror}")

    def restore_timeout(self, seconds: int) -> None:
        """Reopen the device, put its timeout back and leave with magic close."""
        with self.open() as dev:
            if dev.get_timeout() != seconds:
                dev.set_timeout(seconds)


@pytest.fixture
def hw(target: Target) -> HwWatchdog:
    return HwWatchdog(target)


def _wait_kmsg(klog: KernelLog, marker: str) -> str | None:
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        for line in klog.read_new():
            if marker in line:
                return line
        time.sleep(0.1)
    return None


# -- never arms ----------------------------------------------------------------------------------
def test_inspect_without_arming(hw: HwWatchdog, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hafence.cli.main import cli

    before = inspect(hw.path, hw.sys)
    assert before.identity and before.timeout and before.timeout > 0
    assert hw.path in [w.device for w in list_watchdogs(hw.sys)]
    empty = tmp_path / "hafence-watchdog"
    empty.write_text("")
    r = CliRunner().invoke(
        cli, ["watchdog", "info", "--device", hw.path, "--config", str(empty), "-o", "json"]
    )
    assert r.exit_code == 0, r.output
    [shown] = json.loads(r.stdout)["watchdogs"]
    assert (shown["identity"], shown["timeout"]) == (before.identity, before.timeout)
    after = inspect(hw.path, hw.sys)
    assert after.state == before.state  # info never opened it
    if hw.softdog and hw.noboot is not None:
        assert shown["module_params"]["soft_noboot"] == str(int(hw.noboot))


# -- arms (gated) --------------------------------------------------------------------------------
def test_open_keepalive_magic_close(hw: HwWatchdog) -> None:
    hw.require_arming()
    dev = hw.open()
    try:
        assert dev.info.identity == hw.sysfs.identity[:31]
        assert dev.get_timeout() == hw.sysfs.timeout
        if hw.sysfs.state is not None:
            assert inspect(hw.path, hw.sys).state == "active"
        for _ in range(3):
            dev.keepalive()
        boot = dev.boot_status()
        if hw.sysfs.bootstatus is not None:
            assert boot == hw.sysfs.bootstatus
        left = dev.get_timeleft()
        assert left is None or 0 <= left <= dev.get_timeout()
    finally:
        disarmed = dev.close(magic=True)
    if not hw.sysfs.nowayout:
        assert disarmed
        if hw.sysfs.state is not None:
            assert inspect(hw.path, hw.sys).state == "inactive"


def test_set_timeout_and_restore(hw: HwWatchdog) -> None:
    hw.require_arming()
    if hw.sysfs.options is not None and not hw.sysfs.options & WDIOF_SETTIMEOUT:
        pytest.skip(f"{hw.path}: the timeout is fixed")
    with hw.open() as dev:
        orig = dev.get_timeout()
        want = 7 if orig != 7 else 8
        try:
            applied = dev.set_timeout(want)
            assert dev.get_timeout() == applied
            assert inspect(hw.path, hw.sys).timeout == applied
        finally:
            dev.set_timeout(orig)
        assert dev.get_timeout() == orig


def test_expiry_is_seen_with_soft_noboot(hw: HwWatchdog) -> None:
    hw.require_harmless_expiry()
    klog = hw.klog()
    try:
        with hw.open() as dev:
            orig = dev.get_timeout()
            try:
                dev.set_timeout(1)
                dev.keepalive()
                line = _wait_kmsg(klog, NOBOOT_FIRED)  # no more feeds from here
            finally:
                dev.set_timeout(orig)
    finally:
        klog.close()
    assert line is not None, f"softdog did not report its expiry within {WAIT:g}s"


# -- the real mux on the real device ---------------------------------------------------------------
class RealMux:
    """``hafence-watchdog-mux`` on this device; always reaped (SIGKILL if it refuses)."""

    def __init__(self, hw: HwWatchdog, workdir: Path, timeout: int) -> None:
        self.socket = str(workdir / "mux.sock")
        self.log_path = workdir / "mux.log"
        cfg = workdir / "hafence-watchdog"
        cfg.write_text("")
        mode = ["--module", "softdog", "--noboot"] if hw.expiry_is_harmless else []
        mode = mode or ["--module", "softdog" if hw.softdog else "generic", "--no-noboot"]
        args = [
            *("--config", str(cfg), "--device", hw.path, "--timeout", str(timeout)),
            *("--socket", self.socket, "--feed-interval", str(min(0.5, timeout / 4))),
            *mode,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hafence.watchdog.mux", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        end = time.monotonic() + WAIT
        while True:
            try:
                mux_status(self.socket, io_timeout=2)
                return
            except (MuxUnavailableError, MuxProtocolError):
                pass
            if self.proc.poll() is not None or time.monotonic() > end:
                self.kill()
                pytest.fail(f"watchdog-mux did not start: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def real_mux(hw: HwWatchdog, tmp_path: Path) -> Iterator[list[RealMux]]:
    started: list[RealMux] = []
    yield started
    for m in started:
        if m.proc.poll() is None:
            m.proc.send_signal(signal.SIGTERM)
            try:
                m.proc.wait(5)
            except subprocess.TimeoutExpired:
                m.kill()


def test_mux_serves_and_disarms_on_the_real_device(
    hw: HwWatchdog, tmp_path: Path, real_mux: list[RealMux]
) -> None:
    hw.require_arming()
    timeout = hw.sysfs.timeout or 60  # the device's own: the test leaves it unchanged
    mux = RealMux(hw, tmp_path, timeout)
    real_mux.append(mux)
    with WatchdogClient.connect(mux.socket, 30, name="hwtest") as client:
        client.feed()
        st = mux_status(mux.socket)
        assert st["device"]["path"] == hw.path and st["feeding"] is True
        assert [c["name"] for c in st["clients"]] == ["hwtest"]
        assert st["device"]["timeout"] == timeout
    mux.proc.send_signal(signal.SIGTERM)
    assert mux.proc.wait(WAIT) == 0, mux.log()
    if not hw.sysfs.nowayout:
        assert "disarmed (magic close)" in mux.log()
        if hw.sysfs.state is not None:
            assert inspect(hw.path, hw.sys).state == "inactive"


def test_mux_trip_lets_the_real_device_expire(
    hw: HwWatchdog, tmp_path: Path, real_mux: list[RealMux]
) -> None:
    hw.require_harmless_expiry()
    orig = hw.sysfs.timeout or 60
    klog = hw.klog()
    try:
        mux = RealMux(hw, tmp_path, 2)
        real_mux.append(mux)
        client = WatchdogClient.connect(mux.socket, 1, name="hwtest")  # and never feeds
        line = _wait_kmsg(klog, NOBOOT_FIRED)
        assert line is not None, f"no expiry within {WAIT:g}s: {mux.log()}"
        st = mux_status(mux.socket)
        assert st["tripped"] and "'hwtest'" in st["tripped"]
        mux.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + WAIT
        while "refusing to stop: tripped" not in mux.log() and time.monotonic() < end:
            time.sleep(0.05)
        assert mux.proc.poll() is None and "refusing to stop: tripped" in mux.log()
        mux.kill()  # what the reset would have done
        client.close(magic=False)
    finally:
        klog.close()
        hw.restore_timeout(orig)
