"""Linux watchdog device access (linux/watchdog.h) through a system-call seam.

Everything that touches the kernel goes through a :class:`Syscalls` object:
``open/ioctl/write/read/lseek/close`` on device nodes, ``read_file``/``listdir`` on
sysfs and ``modprobe``. :class:`RealSyscalls` is os/fcntl/subprocess and the default
everywhere; only an entry point may pass another one (the mux's and the CLI's
``--fake-device`` pass :class:`hafence.watchdog.fake.FakeKernel`, which decodes the same
ioctl numbers and struct layouts, and log it). Nothing above this seam is mocked.

* :class:`WatchdogDevice` — an *opened* (therefore armed) device: identity and support
  flags (WDIOC_GETSUPPORT), boot status, timeout / pretimeout / time left, keepalive,
  enable/disable, and :meth:`WatchdogDevice.close` with magic close ('V').
* :func:`inspect` / :func:`list_watchdogs` — read ``/sys/class/watchdog/watchdogN/*``
  only: they never open the device, so they never arm it.
* :class:`KernelLog` — follow ``/dev/kmsg`` (how a soft_noboot expiry is observed).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol

from hafence.watchdog.errors import (
    DeviceBusyError,
    DeviceMissingError,
    ModuleLoadError,
    WatchdogError,
)

# -- linux/watchdog.h -----------------------------------------------------------------------
_IOC_WRITE, _IOC_READ = 1, 2
WATCHDOG_IOCTL_BASE = ord("W")
WATCHDOG_INFO = struct.Struct("=II32s")  # options, firmware_version, identity[32]
INT = struct.Struct("=i")


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (WATCHDOG_IOCTL_BASE << 8) | nr


WDIOC_GETSUPPORT = _ioc(_IOC_READ, 0, WATCHDOG_INFO.size)
WDIOC_GETSTATUS = _ioc(_IOC_READ, 1, 4)
WDIOC_GETBOOTSTATUS = _ioc(_IOC_READ, 2, 4)
WDIOC_SETOPTIONS = _ioc(_IOC_READ, 4, 4)
WDIOC_KEEPALIVE = _ioc(_IOC_READ, 5, 4)
WDIOC_SETTIMEOUT = _ioc(_IOC_READ | _IOC_WRITE, 6, 4)
WDIOC_GETTIMEOUT = _ioc(_IOC_READ, 7, 4)
WDIOC_SETPRETIMEOUT = _ioc(_IOC_READ | _IOC_WRITE, 8, 4)
WDIOC_GETPRETIMEOUT = _ioc(_IOC_READ, 9, 4)
WDIOC_GETTIMELEFT = _ioc(_IOC_READ, 10, 4)

WDIOF_OVERHEAT = 0x0001
WDIOF_FANFAULT = 0x0002
WDIOF_EXTERN1 = 0x0004
WDIOF_EXTERN2 = 0x0008
WDIOF_POWERUNDER = 0x0010
WDIOF_CARDRESET = 0x0020
WDIOF_POWEROVER = 0x0040
WDIOF_SETTIMEOUT = 0x0080
WDIOF_MAGICCLOSE = 0x0100
WDIOF_PRETIMEOUT = 0x0200
WDIOF_ALARMONLY = 0x0400
WDIOF_KEEPALIVEPING = 0x8000

WDIOS_DISABLECARD = 0x0001
WDIOS_ENABLECARD = 0x0002

FLAG_NAMES = {
    WDIOF_OVERHEAT: "overheat",
    WDIOF_FANFAULT: "fanfault",
    WDIOF_EXTERN1: "extern1",
    WDIOF_EXTERN2: "extern2",
    WDIOF_POWERUNDER: "powerunder",
    WDIOF_CARDRESET: "cardreset",
    WDIOF_POWEROVER: "powerover",
    WDIOF_SETTIMEOUT: "settimeout",
    WDIOF_MAGICCLOSE: "magicclose",
    WDIOF_PRETIMEOUT: "pretimeout",
    WDIOF_ALARMONLY: "alarmonly",
    WDIOF_KEEPALIVEPING: "keepaliveping",
}

KMSG = "/dev/kmsg"


def flag_names(bits: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if bits & bit]


# -- the seam ---------------------------------------------------------------------------------
class Syscalls(Protocol):
    """The system calls watchdog code may make. Errors are ``OSError`` with an errno."""

    def open(self, path: str, flags: int) -> int: ...
    def ioctl(self, fd: int, request: int, arg: bytes) -> bytes: ...
    def write(self, fd: int, data: bytes) -> int: ...
    def read(self, fd: int, size: int) -> bytes: ...
    def lseek(self, fd: int, pos: int, how: int) -> int: ...
    def close(self, fd: int) -> None: ...
    def read_file(self, path: str) -> str: ...
    def listdir(self, path: str) -> list[str]: ...
    def readlink(self, path: str) -> str: ...
    def modprobe(self, module: str, params: dict[str, str]) -> None: ...


class RealSyscalls:
    """The kernel itself."""

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: bytes) -> bytes:
        buf = bytearray(arg)
        fcntl.ioctl(fd, request, buf, True)
        return bytes(buf)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def read(self, fd: int, size: int) -> bytes:
        return os.read(fd, size)

    def lseek(self, fd: int, pos: int, how: int) -> int:
        return os.lseek(fd, pos, how)

    def close(self, fd: int) -> None:
        os.close(fd)

    def read_file(self, path: str) -> str:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def modprobe(self, module: str, params: dict[str, str]) -> None:
        args = ["modprobe", module, *(f"{k}={v}" for k, v in params.items())]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError:
            raise ModuleLoadError(f"cannot load {module}: modprobe is not installed") from None
        except subprocess.TimeoutExpired:
            raise ModuleLoadError(f"modprobe {module} did not finish within 60 s") from None
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
            raise ModuleLoadError(f"modprobe {module} failed: {msg}")


_real: RealSyscalls | None = None


def default_syscalls() -> Syscalls:
    """The real kernel. A fake one is chosen only at an entry point (``--fake-device``)."""
    global _real
    if _real is None:
        _real = RealSyscalls()
    return _real


# -- an opened device -------------------------------------------------------------------------
@dataclass(frozen=True)
class WatchdogInfo:
    options: int
    firmware_version: int
    identity: str

    @property
    def flags(self) -> list[str]:
        return flag_names(self.options)

    @property
    def magic_close(self) -> bool:
        return bool(self.options & WDIOF_MAGICCLOSE)


class WatchdogDevice:
    """An open watchdog device node. Opening it ARMS the watchdog.

    Feed it with :meth:`keepalive` within the timeout or the node resets. Leave with
    :meth:`close` (magic close: writes 'V' first, which disarms unless the driver runs
    with nowayout). ``nowayout`` may be given (from the module parameter or sysfs) so
    :meth:`close` can tell whether the watchdog really stopped.
    """

    def __init__(
        self,
        path: str,
        syscalls: Syscalls | None = None,
        *,
        nowayout: bool | None = None,
    ) -> None:
        self.path = path
        self.sys = syscalls or default_syscalls()
        self.nowayout = nowayout
        self._fd: int | None = None
        try:
            self._fd = self.sys.open(path, os.O_WRONLY)
        except FileNotFoundError:
            raise DeviceMissingError(f"watchdog device {path} does not exist") from None
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise DeviceBusyError(
                    f"watchdog device {path} is busy: another process holds it open (a "
                    "watchdog-mux or watchdog daemon?); the kernel allows one opener"
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise WatchdogError(f"watchdog device {path}: permission denied (root?)") from None
            raise WatchdogError(f"cannot open watchdog device {path}: {exc.strerror}") from None
        try:
            self.info = self.get_support()
        except BaseException:
            self.close(magic=True)
            raise

    # ioctl helpers -----------------------------------------------------------------------
    def _fd_or_raise(self) -> int:
        if self._fd is None:
            raise WatchdogError(f"watchdog device {self.path} is closed")
        return self._fd

    def _ioctl_int(self, request: int, value: int = 0, what: str = "") -> int:
        try:
            out = self.sys.ioctl(self._fd_or_raise(), request, INT.pack(value))
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
                raise WatchdogError(
                    f"{self.path}: {what or hex(request)} not supported ({exc.strerror})"
                ) from None
            raise WatchdogError(f"{self.path}: {what or hex(request)}: {exc.strerror}") from None
        return INT.unpack(out)[0]

    def get_support(self) -> WatchdogInfo:
        try:
            raw = self.sys.ioctl(self._fd_or_raise(), WDIOC_GETSUPPORT, bytes(WATCHDOG_INFO.size))
        except OSError as exc:
            raise WatchdogError(f"{self.path}: WDIOC_GETSUPPORT: {exc.strerror}") from None
        options, firmware, ident = WATCHDOG_INFO.unpack(raw)
        return WatchdogInfo(options, firmware, ident.split(b"\0", 1)[0].decode(errors="replace"))

    def boot_status(self) -> int:
        """WDIOF_* bits for the last reboot (WDIOF_CARDRESET: the watchdog caused it)."""
        return self._ioctl_int(WDIOC_GETBOOTSTATUS, what="GETBOOTSTATUS")

    def keepalive(self) -> None:
        if self.info.options & WDIOF_KEEPALIVEPING:
            self._ioctl_int(WDIOC_KEEPALIVE, what="KEEPALIVE")
        else:  # every driver accepts a write as a ping
            self._write(b"\0")

    def set_timeout(self, seconds: int) -> int:
        """Set the timeout; returns what the driver actually applied (it may round)."""
        if not self.info.options & WDIOF_SETTIMEOUT:
            raise WatchdogError(f"{self.path} ({self.info.identity}): timeout is fixed")
        return self._ioctl_int(WDIOC_SETTIMEOUT, int(seconds), what=f"SETTIMEOUT {seconds}")

    def get_timeout(self) -> int:
        return self._ioctl_int(WDIOC_GETTIMEOUT, what="GETTIMEOUT")

    def set_pretimeout(self, seconds: int) -> int:
        if not self.info.options & WDIOF_PRETIMEOUT:
            raise WatchdogError(f"{self.path} ({self.info.identity}): no pretimeout support")
        return self._ioctl_int(WDIOC_SETPRETIMEOUT, int(seconds), what="SETPRETIMEOUT")

    def get_timeleft(self) -> int | None:
        """Seconds until reset, or None when the driver cannot tell (e.g. softdog)."""
        try:
            return self._ioctl_int(WDIOC_GETTIMELEFT, what="GETTIMELEFT")
        except WatchdogError:
            return None

    def set_enabled(self, enabled: bool) -> None:
        flag = WDIOS_ENABLECARD if enabled else WDIOS_DISABLECARD
        self._ioctl_int(WDIOC_SETOPTIONS, flag, what="SETOPTIONS")

    def _write(self, data: bytes) -> None:
        try:
            self.sys.write(self._fd_or_raise(), data)
        except OSError as exc:
            raise WatchdogError(f"{self.path}: write: {exc.strerror}") from None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self, magic: bool = True) -> bool:
        """Close the device. Returns True when the watchdog is believed disarmed.

        With ``magic`` (and a driver supporting WDIOF_MAGICCLOSE) 'V' is written first;
        the kernel then stops the timer unless nowayout is set. Without magic the timer
        keeps running: the node resets unless someone reopens and feeds it.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return True
        wrote_magic = False
        try:
            if magic:
                self.sys.write(fd, b"V")
                wrote_magic = True
        except OSError:
            pass  # e.g. the device went away: closing without magic is the safe side
        finally:
            try:
                self.sys.close(fd)
            except OSError as exc:
                raise WatchdogError(f"{self.path}: close: {exc.strerror}") from None
        info = getattr(self, "info", None)
        supports = info is None or info.magic_close
        return wrote_magic and supports and not self.nowayout

    def __enter__(self) -> WatchdogDevice:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(magic=True)

    def __del__(self) -> None:  # never leave an fd behind silently; no magic: fail safe
        if getattr(self, "_fd", None) is not None:
            try:
                self.sys.close(self._fd)  # type: ignore[arg-type]
            except Exception:
                pass


# -- sysfs inspection (never opens the device) ------------------------------------------------
@dataclass
class SysfsWatchdog:
    """What /sys/class/watchdog/watchdogN says; fields the driver does not expose are None."""

    name: str
    device: str
    identity: str | None = None
    timeout: int | None = None
    min_timeout: int | None = None  #: the range of timeouts the driver accepts
    max_timeout: int | None = None
    pretimeout: int | None = None
    timeleft: int | None = None
    bootstatus: int | None = None
    nowayout: bool | None = None
    state: str | None = None  # "active" / "inactive"
    status: int | None = None
    options: int | None = None
    module: str | None = None
    module_params: dict[str, str] = field(default_factory=dict)  #: those sysfs exposes

    @property
    def flags(self) -> list[str]:
        return flag_names(self.options or 0)

    @property
    def boot_flags(self) -> list[str]:
        return flag_names(self.bootstatus or 0)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = self.flags
        d["boot_flags"] = self.boot_flags
        d["watchdog_caused_last_boot"] = bool((self.bootstatus or 0) & WDIOF_CARDRESET)
        return d


def _parse_int(text: str) -> int:
    text = text.strip()
    return int(text, 0)  # options/status are "0x8180"; timeout "10"


def _try_read(sys: Syscalls, path: str) -> str | None:
    try:
        return sys.read_file(path).strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EIO, errno.EOPNOTSUPP, errno.EINVAL):
            return None  # e.g. status/timeleft are root-only or unsupported
        raise


def module_params(
    module: str, sys: Syscalls | None = None, sysfs_root: str = "/sys"
) -> dict[str, str]:
    """/sys/module/<module>/parameters/* that are readable.

    Empty when the module is not loaded -- and for softdog and iTCO_wdt always: they
    declare their parameters with mode 0, so sysfs does not show them. Their
    nowayout is in /sys/class/watchdog/*/nowayout; softdog's soft_noboot only in its
    init line in the kernel log (see ``hafence_watchdogs.drivers``).
    """
    sys = sys or default_syscalls()
    base = f"{sysfs_root.rstrip('/')}/module/{module}/parameters"
    try:
        names = sys.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for n in names:
        value = _try_read(sys, f"{base}/{n}")
        if value is not None:
            out[n] = value
    return out


def loaded_module(module: str, sys: Syscalls | None = None, sysfs_root: str = "/sys") -> bool:
    """Whether /sys/module/<module> exists (loaded, or built into the kernel)."""
    sys = sys or default_syscalls()
    try:
        sys.listdir(f"{sysfs_root.rstrip('/')}/module/{module}")
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _device_module(sys: Syscalls, base: str) -> str | None:
    # watchdogN/device/driver/module -> ../../module/iTCO_wdt. softdog has no parent
    # device: inspect() falls back to its identity.
    try:
        return PurePosixPath(sys.readlink(f"{base}/device/driver/module")).name or None
    except OSError:
        return None


def inspect(
    name_or_path: str, sys: Syscalls | None = None, sysfs_root: str = "/sys"
) -> SysfsWatchdog:
    """Read a watchdog's sysfs attributes without opening (arming) it.

    ``name_or_path`` is ``watchdog0`` or ``/dev/watchdog0``; ``/dev/watchdog`` is the
    legacy alias of watchdog0.
    """
    sys = sys or default_syscalls()
    name = PurePosixPath(name_or_path).name
    if name == "watchdog":
        name = "watchdog0"
    base = f"{sysfs_root.rstrip('/')}/class/watchdog/{name}"
    try:
        sys.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        raise DeviceMissingError(
            f"no watchdog {name}: {base} does not exist (no driver loaded?)"
        ) from None
    wd = SysfsWatchdog(name=name, device=f"/dev/{name}")

    def num(attr: str) -> int | None:
        raw = _try_read(sys, f"{base}/{attr}")
        try:
            return _parse_int(raw) if raw else None
        except ValueError:
            return None

    wd.identity = _try_read(sys, f"{base}/identity")
    wd.timeout = num("timeout")
    wd.min_timeout = num("min_timeout")
    wd.max_timeout = num("max_timeout")
    wd.pretimeout = num("pretimeout")
    wd.timeleft = num("timeleft")
    wd.bootstatus = num("bootstatus")
    nwo = num("nowayout")
    wd.nowayout = None if nwo is None else bool(nwo)
    wd.state = _try_read(sys, f"{base}/state")
    wd.status = num("status")
    wd.options = num("options")
    wd.module = _device_module(sys, base)
    if wd.module is None and wd.identity == "Software Watchdog":
        wd.module = "softdog"
    if wd.module:
        wd.module_params = module_params(wd.module, sys, sysfs_root)
        if wd.nowayout is None and "nowayout" in wd.module_params:
            wd.nowayout = wd.module_params["nowayout"] in ("1", "Y", "y")
    return wd


def list_watchdogs(sys: Syscalls | None = None, sysfs_root: str = "/sys") -> list[SysfsWatchdog]:
    """Every watchdog the kernel knows (empty when none), read from sysfs only."""
    sys = sys or default_syscalls()
    try:
        names = sys.listdir(f"{sysfs_root.rstrip('/')}/class/watchdog")
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = [n for n in names if n.startswith("watchdog") and n[8:].isdigit()]
    return [inspect(n, sys, sysfs_root) for n in sorted(names, key=lambda n: int(n[8:]))]


# -- kernel log -------------------------------------------------------------------------------
class KernelLog:
    """Follow /dev/kmsg: :meth:`read_new` returns messages logged since the last call.

    By default it starts at the end (only new messages); ``from_start=True`` reads the
    whole ring buffer first (how a loaded module's init line is found). Needs root.
    """

    def __init__(
        self, sys: Syscalls | None = None, path: str = KMSG, *, from_start: bool = False
    ) -> None:
        self.sys = sys or default_syscalls()
        self.path = path
        self._fd: int | None = self.sys.open(path, os.O_RDONLY | os.O_NONBLOCK)
        if not from_start:
            self.sys.lseek(self._fd, 0, os.SEEK_END)

    def read_new(self) -> list[str]:
        out: list[str] = []
        while self._fd is not None:
            try:
                rec = self.sys.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten records: continue with the next
                    continue
                raise
            if not rec:
                break
            # "prio,seq,usec,flags;message\n"
            text = rec.decode(errors="replace")
            out.append(text.split(";", 1)[-1].split("\n", 1)[0])
        return out

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self.sys.close(fd)
