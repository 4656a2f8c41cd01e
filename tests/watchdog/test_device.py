"""Device access through the system-call seam: the fake kernel and the real os/fcntl path."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hafence.watchdog import device as d
from hafence.watchdog.device import (
    KernelLog,
    RealSyscalls,
    WatchdogDevice,
    inspect,
    list_watchdogs,
    module_params,
)
from hafence.watchdog.errors import DeviceBusyError, DeviceMissingError, WatchdogError
from hafence.watchdog.fake import FakeKernel

from .conftest import wait_for


class Recorder:
    """Wraps a Syscalls object and records every call (to check what reaches the kernel)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        fn = getattr(self.inner, name)

        def call(*args):
            self.calls.append((name, *args))
            return fn(*args)

        return call


def test_ioctl_numbers_are_the_kernels() -> None:
    # x86-64 values from linux/watchdog.h (PEERS.md), computed here from _IOR/_IOWR
    assert d.WDIOC_GETSUPPORT == 0x80285700
    assert d.WDIOC_GETBOOTSTATUS == 0x80045702
    assert d.WDIOC_SETOPTIONS == 0x80045704
    assert d.WDIOC_KEEPALIVE == 0x80045705
    assert d.WDIOC_SETTIMEOUT == 0xC0045706
    assert d.WDIOC_GETTIMEOUT == 0x80045707
    assert d.WDIOC_SETPRETIMEOUT == 0xC0045708
    assert d.WDIOC_GETTIMELEFT == 0x8004570A
    assert d.WATCHDOG_INFO.size == 40


def test_open_arms_and_magic_close_disarms(kernel: FakeKernel) -> None:
    kernel.modprobe("softdog", {"soft_margin": "30"})
    rec = Recorder(kernel)
    dev = WatchdogDevice("/dev/watchdog0", rec)
    assert kernel.device()["active"] is True
    assert dev.info.identity == "Software Watchdog"
    assert dev.info.flags == ["settimeout", "magicclose", "keepaliveping"]
    # the struct went down at its real size
    getsupport = [c for c in rec.calls if c[0] == "ioctl" and c[2] == d.WDIOC_GETSUPPORT]
    assert len(getsupport[0][3]) == 40
    assert dev.get_timeout() == 30
    assert dev.set_timeout(7) == 7
    assert dev.get_timeout() == 7
    before = kernel.device()["keepalives"]
    dev.keepalive()
    assert kernel.device()["keepalives"] == before + 1
    assert ("ioctl", dev._fd, d.WDIOC_KEEPALIVE, d.INT.pack(0)) in rec.calls
    assert dev.close(magic=True) is True
    assert kernel.device()["active"] is False
    assert [e["type"] for e in kernel.events()][-1] == "magic_close"
    assert ("write", 1000, b"V") in rec.calls


def test_close_without_magic_leaves_it_armed_and_it_resets(kernel: FakeKernel) -> None:
    name = kernel.add_device("Board WDT", timeout=1)
    dev = WatchdogDevice(f"/dev/{name}", kernel)
    assert dev.close(magic=False) is False
    assert kernel.events("close_armed")[0]["reason"] == "no magic close"
    assert "watchdog: watchdog0: watchdog did not stop!" in kernel.kmsg()
    wait_for(lambda: kernel.events("reset"), "the fake node reset")
    assert kernel.device()["bootstatus"] & d.WDIOF_CARDRESET
    # after the reboot, a fresh open reports the watchdog caused it
    with WatchdogDevice("/dev/watchdog", kernel) as dev2:
        assert dev2.boot_status() == d.WDIOF_CARDRESET


def test_nowayout_magic_close_does_not_stop(kernel: FakeKernel) -> None:
    kernel.modprobe("softdog", {"nowayout": "1", "soft_noboot": "1"})
    dev = WatchdogDevice("/dev/watchdog0", kernel, nowayout=True)
    with pytest.raises(WatchdogError, match="SETOPTIONS"):
        dev.set_enabled(False)  # nowayout: the kernel refuses to stop it
    assert dev.close(magic=True) is False
    assert kernel.events("close_armed")[0]["reason"] == "nowayout"
    assert kernel.device()["active"] is True


def test_a_write_without_v_after_v_cancels_the_magic(kernel: FakeKernel) -> None:
    kernel.add_device(timeout=60)
    dev = WatchdogDevice("/dev/watchdog0", kernel)
    kernel.write(dev._fd, b"V")
    kernel.write(dev._fd, b"\0")
    dev.close(magic=False)
    assert kernel.events("close_armed")


def test_second_opener_gets_ebusy(kernel: FakeKernel) -> None:
    kernel.add_device()
    with WatchdogDevice("/dev/watchdog0", kernel):
        with pytest.raises(DeviceBusyError, match="busy"):
            WatchdogDevice("/dev/watchdog0", kernel)
    assert kernel.events("magic_close")


def test_missing_device_is_clear(kernel: FakeKernel) -> None:
    with pytest.raises(DeviceMissingError, match="/dev/watchdog3 does not exist"):
        WatchdogDevice("/dev/watchdog3", kernel)


def test_timeleft_pretimeout_and_bad_timeout(kernel: FakeKernel) -> None:
    kernel.modprobe("iTCO_wdt", {"heartbeat": "20"})
    kernel.modprobe("softdog", {})
    with WatchdogDevice("/dev/watchdog0", kernel) as itco:
        assert itco.info.identity == "iTCO_wdt"
        assert 0 < itco.get_timeleft() <= 20
        with pytest.raises(WatchdogError, match="SETTIMEOUT 9999"):
            itco.set_timeout(9999)  # above iTCO's range: EINVAL from the kernel
        with pytest.raises(WatchdogError, match="no pretimeout"):
            itco.set_pretimeout(5)
    with WatchdogDevice("/dev/watchdog1", kernel) as soft:
        assert soft.get_timeleft() is None  # softdog has no get_timeleft


def test_opener_that_dies_counts_as_close_without_magic(kernel: FakeKernel) -> None:
    kernel.add_device(timeout=60)
    code = (
        "import sys; from hafence.watchdog.fake import FakeKernel;"
        "from hafence.watchdog.device import WatchdogDevice;"
        "d = WatchdogDevice('/dev/watchdog0', FakeKernel(sys.argv[1])); d._fd = None"
    )
    subprocess.run([sys.executable, "-c", code, str(kernel.path)], check=True)
    ev = kernel.events("close_armed")
    assert ev and "died" in ev[0]["why"]


def test_kernel_log_follows_new_messages(kernel: FakeKernel) -> None:
    kernel.modprobe("softdog", {"soft_noboot": "1", "soft_margin": "1"})
    klog = KernelLog(kernel)
    dev = WatchdogDevice("/dev/watchdog0", kernel)
    seen = wait_for(klog.read_new, "softdog to fire")
    assert seen == ["softdog: Triggered - Reboot ignored"]
    assert kernel.events("expired_noboot") and not kernel.events("reset")
    dev.close()
    klog.close()


# -- the real syscalls -------------------------------------------------------------------------
def test_real_syscalls_on_a_non_watchdog_file(tmp_path: Path) -> None:
    """os.open/fcntl.ioctl for real: a plain file answers ENOTTY, and is magic-closed."""
    path = tmp_path / "not-a-watchdog"
    path.write_bytes(b"")
    with pytest.raises(WatchdogError, match="WDIOC_GETSUPPORT"):
        WatchdogDevice(str(path), RealSyscalls())
    assert path.read_bytes() == b"V"  # a failed open still leaves with magic close


def test_real_syscalls_missing_device(tmp_path: Path) -> None:
    with pytest.raises(DeviceMissingError):
        WatchdogDevice(str(tmp_path / "watchdog9"), RealSyscalls())


def test_real_ioctl_error_carries_errno(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as exc:
            RealSyscalls().ioctl(fd, d.WDIOC_GETTIMEOUT, d.INT.pack(0))
        assert exc.value.errno == errno.ENOTTY
    finally:
        os.close(fd)


def _sysfs_tree(root: Path) -> None:
    wd = root / "class/watchdog/watchdog0"
    wd.mkdir(parents=True)
    for name, value in {
        "identity": "iTCO_wdt\n",
        "timeout": "30\n",
        "timeleft": "27\n",
        "bootstatus": "32\n",
        "nowayout": "0\n",
        "state": "active\n",
        "status": "0x8000\n",
        "options": "0x8180\n",
    }.items():
        (wd / name).write_text(value)
    params = root / "module/iTCO_wdt/parameters"
    params.mkdir(parents=True)
    (params / "heartbeat").write_text("30\n")
    (params / "nowayout").write_text("N\n")
    (wd / "device/driver").mkdir(parents=True)
    (wd / "device/driver/module").symlink_to(root / "module/iTCO_wdt")
    soft = root / "class/watchdog/watchdog1"
    soft.mkdir()
    (soft / "identity").write_text("Software Watchdog\n")
    (soft / "timeout").write_text("60\n")


def test_sysfs_inspection_with_real_reads(tmp_path: Path) -> None:
    _sysfs_tree(tmp_path)
    found = list_watchdogs(RealSyscalls(), str(tmp_path))
    assert [w.name for w in found] == ["watchdog0", "watchdog1"]
    itco, soft = found
    assert itco.identity == "iTCO_wdt" and itco.module == "iTCO_wdt"
    assert (itco.timeout, itco.timeleft, itco.state) == (30, 27, "active")
    assert itco.flags == ["settimeout", "magicclose", "keepaliveping"]
    assert itco.boot_flags == ["cardreset"] and itco.as_dict()["watchdog_caused_last_boot"]
    assert itco.module_params == {"heartbeat": "30", "nowayout": "N"}
    assert soft.module == "softdog" and soft.timeleft is None and soft.nowayout is None
    assert inspect("/dev/watchdog", RealSyscalls(), str(tmp_path)).name == "watchdog0"
    with pytest.raises(DeviceMissingError, match="watchdog5"):
        inspect("watchdog5", RealSyscalls(), str(tmp_path))
    assert module_params("softdog", RealSyscalls(), str(tmp_path)) == {}


def test_fake_sysfs_matches_the_device(kernel: FakeKernel) -> None:
    kernel.modprobe("softdog", {"soft_margin": "12", "soft_noboot": "1"})
    wd = inspect("watchdog0", kernel)
    assert (wd.identity, wd.timeout, wd.state, wd.nowayout) == (
        "Software Watchdog",
        12,
        "inactive",
        False,
    )
    assert wd.module_params == {}  # softdog's parameters are mode 0: not in sysfs
    assert "softdog: initialized. soft_noboot=1 soft_margin=12 sec soft_panic=0 (nowayout=0)" in (
        kernel.kmsg()
    )
    with WatchdogDevice("/dev/watchdog0", kernel):
        assert inspect("watchdog0", kernel).state == "active"
    assert list_watchdogs(FakeKernel(kernel.path, sysfs_root="/other")) == []
