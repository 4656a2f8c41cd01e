"""A fake kernel for the watchdog system-call seam, shared between processes.

:class:`FakeKernel` implements :class:`hafence.watchdog.device.Syscalls`. Its whole
state lives in one JSON file (guarded by ``flock`` on ``<file>.lock``), so a test and a
real ``hafence-watchdog-mux`` process started with ``--fake-device STATEFILE`` (or
``$HAFENCE_WATCHDOG_FAKE=STATEFILE``; see :mod:`hafence.watchdog.kernel`) see the same
devices. It models what the Linux watchdog core and the softdog / iTCO_wdt drivers do:

* ``modprobe softdog soft_margin=N nowayout=0|1 soft_noboot=0|1`` creates a device
  (identity "Software Watchdog"); ``iTCO_wdt heartbeat=N nowayout=..`` likewise
  ("iTCO_wdt", with time-left support); ``sp5100_tco`` stands for a module without a
  hafence plugin. Loading a loaded module changes nothing (as modprobe); an unknown
  module fails as modprobe does.
* ``open`` arms the timer; a second opener gets EBUSY; ioctls are decoded by their real
  numbers and struct layouts (WDIOC_GETSUPPORT fills ``struct watchdog_info``).
* ``write`` pings, and a 'V' in the data allows the next ``close`` to stop the timer
  (magic close) unless nowayout; any other close leaves it running
  ("watchdog did not stop!"). A process that dies holding the device counts as a close
  without magic.
* Expiry is evaluated against ``time.monotonic()`` (system-wide) whenever anyone looks:
  with soft_noboot the kernel log gets "softdog: Triggered - Reboot ignored"
  (``expired_noboot`` event); otherwise a ``reset`` event records the node reset and the
  device's open file is invalidated.
* ``/sys/class/watchdog/watchdogN/*``, ``/sys/module/<mod>/`` (no ``parameters/``:
  both drivers declare them mode 0) and ``/dev/kmsg`` (with each module's init line)
  are served from the same state.

Faults: :meth:`FakeKernel.fail_keepalive` makes every keepalive of a device fail (hardware
that stopped answering); ``add_device(granularity=N)`` rounds timeouts up as coarse
hardware counters do.

Tests read :meth:`FakeKernel.events`, :meth:`FakeKernel.device` and
:meth:`FakeKernel.kmsg` to see what the kernel saw.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hafence.watchdog import device as d
from hafence.watchdog.errors import ModuleLoadError

_COMMON_OPTS = d.WDIOF_SETTIMEOUT | d.WDIOF_MAGICCLOSE | d.WDIOF_KEEPALIVEPING

# module -> (identity, options, default params, timeout param, time-left support, range)
MODULES: dict[str, dict[str, Any]] = {
    "softdog": {
        "identity": "Software Watchdog",
        "options": _COMMON_OPTS,
        "params": {"soft_margin": "60", "nowayout": "0", "soft_noboot": "0", "soft_panic": "0"},
        "timeout_param": "soft_margin",
        "init_line": "softdog: initialized. soft_noboot={soft_noboot} soft_margin={soft_margin} "
        "sec soft_panic={soft_panic} (nowayout={nowayout})",
        "timeleft": False,
        "min_timeout": 1,
        "max_timeout": 65535,
        "parent_device": False,
    },
    "iTCO_wdt": {
        "identity": "iTCO_wdt",
        "options": _COMMON_OPTS,
        "params": {"heartbeat": "30", "nowayout": "0", "turn_SMI_watchdog_clear_off": "1"},
        "timeout_param": "heartbeat",
        "init_line": "iTCO_wdt iTCO_wdt.1.auto: initialized. heartbeat={heartbeat} sec "
        "(nowayout={nowayout})",
        "timeleft": True,
        "min_timeout": 2,
        "max_timeout": 613,
        "parent_device": True,
    },
    # a module without a hafence plugin: WATCHDOG_MODULE=sp5100_tco (KernelModuleDriver)
    "sp5100_tco": {
        "identity": "SP5100 TCO timer",
        "options": _COMMON_OPTS,
        "params": {"heartbeat": "60", "nowayout": "0"},
        "timeout_param": "heartbeat",
        "init_line": "sp5100-tco sp5100-tco: initialized. heartbeat={heartbeat} sec "
        "(nowayout={nowayout})",
        "timeleft": False,
        "min_timeout": 1,
        "max_timeout": 65535,
        "parent_device": True,
    },
}


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code), what or None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FakeKernel:
    """The fake watchdog kernel backed by ``state_path`` (created empty when missing)."""

    def __init__(
        self,
        state_path: str | os.PathLike[str],
        *,
        sysfs_root: str = "/sys",
        dev_root: str = "/dev",
    ) -> None:
        self.path = Path(state_path)
        self.sysfs_root = sysfs_root.rstrip("/")
        self.dev_root = dev_root.rstrip("/")
        self._lock_path = Path(f"{self.path}.lock")
        with self._state():
            pass

    # -- state ---------------------------------------------------------------------------
    @staticmethod
    def _empty() -> dict[str, Any]:
        return {
            "available": sorted(MODULES),
            "modules": {},
            "devices": {},
            "fds": {},
            "next_fd": 1000,
            "kmsg": [],
            "events": [],
        }

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self.path.read_text())
            except FileNotFoundError:
                state = self._empty()
            self._tick(state)
            yield state
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w") as fh:
                json.dump(state, fh, indent=1)
            os.replace(tmp, self.path)
        finally:
            os.close(lock)

    def _event(self, st: dict[str, Any], kind: str, dev: str | None, **extra: Any) -> None:
        st["events"].append(
            {"t": time.monotonic(), "wall": time.time(), "type": kind, "device": dev, **extra}
        )

    def _log(self, st: dict[str, Any], msg: str) -> None:
        st["kmsg"].append(msg)

    def _tick(self, st: dict[str, Any]) -> None:
        """Apply what happened since the last look: dead openers, expired timers."""
        for fd, f in list(st["fds"].items()):
            if not _pid_alive(f["pid"]):
                self._release(st, fd, why=f"opener pid {f['pid']} died")
        now = time.monotonic()
        for name, dev in st["devices"].items():
            if dev["active"] and dev["deadline"] is not None and now >= dev["deadline"]:
                self._expire(st, name, dev)

    def _expire(self, st: dict[str, Any], name: str, dev: dict[str, Any]) -> None:
        when = dev["deadline"]
        dev["deadline"] = None
        if dev.get("noboot"):
            self._log(st, "softdog: Triggered - Reboot ignored")
            self._event(st, "expired_noboot", name, expired_at=when)
            return
        # The node resets: everything open on the device is gone, the timer stops.
        self._log(st, f"watchdog: {name}: watchdog expired - node reset")
        self._event(st, "reset", name, expired_at=when)
        dev["active"] = False
        dev["expect_close"] = False
        dev["open_fd"] = None
        dev["bootstatus"] = d.WDIOF_CARDRESET if dev["module"] != "softdog" else 0
        for f in st["fds"].values():
            if f.get("device") == name:
                f["dead"] = True

    # -- device model --------------------------------------------------------------------
    def add_device(
        self,
        identity: str = "Fake Hardware Watchdog",
        *,
        timeout: int = 30,
        options: int = _COMMON_OPTS,
        nowayout: bool = False,
        timeleft: bool = True,
        module: str | None = None,
        bootstatus: int = 0,
        min_timeout: int = 1,
        max_timeout: int = 3600,
        granularity: int = 1,
    ) -> str:
        """Add a watchdog that exists without modprobe (a generic /dev/watchdogN).

        ``granularity``: WDIOC_SETTIMEOUT rounds up to a multiple of it, as hardware with
        a coarse counter does (the driver reports what it applied).
        """
        with self._state() as st:
            return self._new_device(
                st,
                identity=identity,
                timeout=timeout,
                options=options,
                nowayout=nowayout,
                timeleft=timeleft,
                module=module,
                bootstatus=bootstatus,
                min_timeout=min_timeout,
                max_timeout=max_timeout,
                granularity=granularity,
            )

    def _new_device(self, st: dict[str, Any], **kw: Any) -> str:
        name = f"watchdog{len(st['devices'])}"
        st["devices"][name] = {
            "identity": kw["identity"],
            "module": kw.get("module"),
            "options": kw["options"],
            "firmware": 0,
            "timeout": kw["timeout"],
            "pretimeout": 0,
            "min_timeout": kw.get("min_timeout", 1),
            "max_timeout": kw.get("max_timeout", 65535),
            "granularity": kw.get("granularity", 1),
            "keepalive_errno": 0,
            "nowayout": kw["nowayout"],
            "noboot": kw.get("noboot", False),
            "timeleft": kw["timeleft"],
            "bootstatus": kw.get("bootstatus", 0),
            "parent_device": kw.get("parent_device", False),
            "active": False,
            "deadline": None,
            "expect_close": False,
            "open_fd": None,
            "keepalives": 0,
            "last_keepalive": None,
        }
        self._event(st, "device_added", name, identity=kw["identity"])
        return name

    def _dev_name(self, st: dict[str, Any], path: str) -> str | None:
        if not path.startswith(self.dev_root + "/"):
            return None
        base = path[len(self.dev_root) + 1 :]
        if base == "watchdog":
            base = "watchdog0"
        return base if base in st["devices"] else None

    def _fd(self, st: dict[str, Any], fd: int) -> dict[str, Any]:
        f = st["fds"].get(str(fd))
        if f is None:
            raise _err(errno.EBADF)
        if f.get("dead"):
            raise _err(errno.ENODEV, "the node was reset")
        return f

    def _ping(self, dev: dict[str, Any]) -> None:
        dev["deadline"] = time.monotonic() + dev["timeout"] if dev["active"] else None
        dev["keepalives"] += 1
        dev["last_keepalive"] = time.monotonic()

    def _release(self, st: dict[str, Any], fd: str, *, why: str = "") -> None:
        f = st["fds"].pop(fd)
        if f["kind"] != "watchdog" or f.get("dead"):
            return
        name = f["device"]
        dev = st["devices"][name]
        dev["open_fd"] = None
        if not dev["active"]:
            self._event(st, "close", name)
        elif dev["expect_close"] and not dev["nowayout"]:
            dev["active"] = False
            dev["deadline"] = None
            self._event(st, "magic_close", name)
        else:
            reason = "nowayout" if dev["expect_close"] else "no magic close"
            self._log(st, f"watchdog: {name}: watchdog did not stop!")
            self._event(st, "close_armed", name, reason=reason, why=why or None)
        dev["expect_close"] = False

    # -- Syscalls ------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        with self._state() as st:
            if path == f"{self.dev_root}/kmsg":
                kind, name = "kmsg", None
            else:
                name = self._dev_name(st, path)
                if name is None:
                    raise _err(errno.ENOENT, path)
                dev = st["devices"][name]
                if dev["open_fd"] is not None:
                    raise _err(errno.EBUSY, path)
                kind = "watchdog"
            fd = st["next_fd"]
            st["next_fd"] += 1
            st["fds"][str(fd)] = {"kind": kind, "device": name, "pid": os.getpid(), "pos": 0}
            if name is not None:
                dev["open_fd"] = fd
                dev["expect_close"] = False
                dev["active"] = True
                self._ping(dev)
                self._event(st, "open", name, pid=os.getpid())
            return fd

    def close(self, fd: int) -> None:
        with self._state() as st:
            if str(fd) not in st["fds"]:
                raise _err(errno.EBADF)
            self._release(st, str(fd))

    def write(self, fd: int, data: bytes) -> int:
        with self._state() as st:
            f = self._fd(st, fd)
            if f["kind"] != "watchdog":
                raise _err(errno.EBADF)
            dev = st["devices"][f["device"]]
            failed = self._keepalive_fault(st, f["device"], dev)
            if not failed:
                # the watchdog core: every write pings; 'V' anywhere allows a magic close
                dev["expect_close"] = b"V" in data and bool(dev["options"] & d.WDIOF_MAGICCLOSE)
                self._ping(dev)
                return len(data)
        raise _err(failed, "keepalive")  # after the state (and its event) is saved

    def _keepalive_fault(self, st: dict[str, Any], name: str, dev: dict[str, Any]) -> int:
        """The errno an injected fault makes this keepalive fail with (0: none)."""
        code = int(dev.get("keepalive_errno") or 0)
        if code:
            self._event(st, "keepalive_failed", name, errno=code)
        return code

    def read(self, fd: int, size: int) -> bytes:
        with self._state() as st:
            f = self._fd(st, fd)
            if f["kind"] != "kmsg":
                raise _err(errno.EINVAL)
            if f["pos"] >= len(st["kmsg"]):
                raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
            seq = f["pos"]
            f["pos"] += 1
            return f"2,{seq},0,-;{st['kmsg'][seq]}\n".encode()[:size]

    def lseek(self, fd: int, pos: int, how: int) -> int:
        with self._state() as st:
            f = self._fd(st, fd)
            if f["kind"] != "kmsg":
                raise _err(errno.ESPIPE)
            f["pos"] = len(st["kmsg"]) if how == os.SEEK_END else 0
            return f["pos"]

    def ioctl(self, fd: int, request: int, arg: bytes) -> bytes:
        failed = 0
        with self._state() as st:
            f = self._fd(st, fd)
            if f["kind"] != "watchdog":
                raise _err(errno.ENOTTY)
            name = f["device"]
            dev = st["devices"][name]
            size = (request >> 16) & 0x3FFF
            if len(arg) < size:
                raise _err(errno.EFAULT)
            if request == d.WDIOC_GETSUPPORT:
                ident = dev["identity"].encode()[:31]
                return d.WATCHDOG_INFO.pack(dev["options"], dev["firmware"], ident)
            value = d.INT.unpack(arg[:4])[0] if size == 4 else 0
            if request in (d.WDIOC_GETSTATUS,):
                return d.INT.pack(0)
            if request == d.WDIOC_GETBOOTSTATUS:
                return d.INT.pack(dev["bootstatus"])
            if request == d.WDIOC_SETOPTIONS:
                if value & d.WDIOS_DISABLECARD:
                    if dev["nowayout"] and dev["active"]:
                        raise _err(errno.EBUSY, "nowayout prevents watchdog being stopped")
                    dev["active"] = False
                    dev["deadline"] = None
                    self._event(st, "disable", name)
                if value & d.WDIOS_ENABLECARD:
                    dev["active"] = True
                    self._ping(dev)
                    self._event(st, "enable", name)
                if not value & (d.WDIOS_DISABLECARD | d.WDIOS_ENABLECARD):
                    raise _err(errno.EINVAL)
                return arg
            if request == d.WDIOC_KEEPALIVE:
                if not dev["options"] & d.WDIOF_KEEPALIVEPING:
                    raise _err(errno.EOPNOTSUPP)
                failed = self._keepalive_fault(st, name, dev)
                if not failed:
                    self._ping(dev)
                    return arg
            if request == d.WDIOC_SETTIMEOUT:
                if not dev["options"] & d.WDIOF_SETTIMEOUT:
                    raise _err(errno.EOPNOTSUPP)
                if not dev["min_timeout"] <= value <= dev["max_timeout"]:
                    raise _err(errno.EINVAL)
                step = dev.get("granularity", 1)  # hardware counting in coarser steps
                value = -(-value // step) * step
                dev["timeout"] = value
                self._event(st, "settimeout", name, timeout=value)
                self._ping(dev)  # the core pings after a new timeout
                return d.INT.pack(value)
            if request == d.WDIOC_GETTIMEOUT:
                return d.INT.pack(dev["timeout"])
            if request == d.WDIOC_SETPRETIMEOUT:
                if not dev["options"] & d.WDIOF_PRETIMEOUT:
                    raise _err(errno.EOPNOTSUPP)
                if value and value >= dev["timeout"]:
                    raise _err(errno.EINVAL)
                dev["pretimeout"] = value
                return d.INT.pack(value)
            if request == d.WDIOC_GETPRETIMEOUT:
                return d.INT.pack(dev["pretimeout"])
            if request == d.WDIOC_GETTIMELEFT:
                if not dev["timeleft"]:
                    raise _err(errno.EOPNOTSUPP)
                left = 0
                if dev["active"] and dev["deadline"] is not None:
                    left = max(0, int(dev["deadline"] - time.monotonic()))
                return d.INT.pack(left)
            if not failed:
                raise _err(errno.ENOTTY)
        raise _err(failed, "keepalive")  # after the state (and its event) is saved

    def modprobe(self, module: str, params: dict[str, str]) -> None:
        with self._state() as st:
            if module not in st["available"] or module not in MODULES:
                raise ModuleLoadError(
                    f"modprobe {module} failed: modprobe: FATAL: Module {module} not found"
                )
            if module in st["modules"]:
                return  # modprobe of a loaded module is a no-op: parameters are NOT applied
            spec = MODULES[module]
            unknown = set(params) - set(spec["params"])
            merged = {**spec["params"], **{k: str(v) for k, v in params.items()}}
            st["modules"][module] = merged
            self._event(st, "modprobe", None, module=module, params=merged)
            for p in sorted(unknown):
                self._log(st, f"{module}: unknown parameter '{p}' ignored")
            self._log(st, spec["init_line"].format(**merged))
            self._new_device(
                st,
                identity=spec["identity"],
                module=module,
                options=spec["options"],
                timeout=int(merged[spec["timeout_param"]]),
                nowayout=merged["nowayout"] in ("1", "Y"),
                noboot=merged.get("soft_noboot") in ("1", "Y"),
                timeleft=spec["timeleft"],
                min_timeout=spec["min_timeout"],
                max_timeout=spec["max_timeout"],
                parent_device=spec["parent_device"],
            )

    # sysfs -------------------------------------------------------------------------------
    def _sysfs(self, st: dict[str, Any], path: str) -> list[str] | str:
        """A sysfs directory listing (list) or file content (str); OSError otherwise."""
        if not path.startswith(self.sysfs_root + "/"):
            raise _err(errno.ENOENT, path)
        parts = path[len(self.sysfs_root) + 1 :].strip("/").split("/")
        if parts[:2] == ["class", "watchdog"]:
            if len(parts) == 2:
                return sorted(st["devices"])
            dev = st["devices"].get(parts[2])
            if dev is None:
                raise _err(errno.ENOENT, path)
            attrs = self._attrs(dev)
            if len(parts) == 3:
                return sorted(attrs)
            if len(parts) == 4 and parts[3] in attrs:
                return attrs[parts[3]]
        elif parts[0] == "module" and len(parts) >= 2 and parts[1] in st["modules"]:
            # softdog/iTCO_wdt declare their parameters with mode 0: no parameters/ here
            files = {"initstate": "live\n", "refcnt": "0\n"}
            if len(parts) == 2:
                return sorted(files)
            if len(parts) == 3 and parts[2] in files:
                return files[parts[2]]
        raise _err(errno.ENOENT, path)

    @staticmethod
    def _attrs(dev: dict[str, Any]) -> dict[str, str]:
        attrs = {
            "identity": dev["identity"] + "\n",
            "timeout": f"{dev['timeout']}\n",
            "min_timeout": f"{dev['min_timeout']}\n",
            "max_timeout": f"{dev['max_timeout']}\n",
            "bootstatus": f"{dev['bootstatus']}\n",
            "nowayout": f"{int(dev['nowayout'])}\n",
            "state": "active\n" if dev["active"] else "inactive\n",
            "status": "0x0\n",
            "options": f"0x{dev['options']:x}\n",
            "fw_version": f"{dev['firmware']}\n",
        }
        if dev["options"] & d.WDIOF_PRETIMEOUT:
            attrs["pretimeout"] = f"{dev['pretimeout']}\n"
        if dev["timeleft"]:
            left = 0
            if dev["active"] and dev["deadline"] is not None:
                left = max(0, int(dev["deadline"] - time.monotonic()))
            attrs["timeleft"] = f"{left}\n"
        return attrs

    def read_file(self, path: str) -> str:
        with self._state() as st:
            out = self._sysfs(st, path)
            if isinstance(out, list):
                raise _err(errno.EISDIR, path)
            return out

    def listdir(self, path: str) -> list[str]:
        with self._state() as st:
            out = self._sysfs(st, path)
            if isinstance(out, str):
                raise _err(errno.ENOTDIR, path)
            return out

    def readlink(self, path: str) -> str:
        with self._state() as st:
            prefix = f"{self.sysfs_root}/class/watchdog/"
            if path.startswith(prefix) and path.endswith("/device/driver/module"):
                dev = st["devices"].get(path[len(prefix) :].split("/")[0])
                if dev and dev.get("parent_device") and dev["module"]:
                    return f"../../../../module/{dev['module']}"
            raise _err(errno.ENOENT, path)

    # -- inspection for tests ------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._state() as st:
            return json.loads(json.dumps(st))

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        evs = self.snapshot()["events"]
        return [e for e in evs if kind is None or e["type"] == kind]

    def device(self, name: str = "watchdog0") -> dict[str, Any]:
        return self.snapshot()["devices"][name]

    def kmsg(self) -> list[str]:
        return self.snapshot()["kmsg"]

    def clear_kmsg(self) -> None:
        """Forget the kernel log (as when the ring buffer has wrapped)."""
        with self._state() as st:
            st["kmsg"] = []
            for f in st["fds"].values():
                if f["kind"] == "kmsg":
                    f["pos"] = 0

    def fail_keepalive(self, name: str = "watchdog0", code: int = errno.EIO) -> None:
        """From now on every keepalive of ``name`` (WDIOC_KEEPALIVE or a write) fails with
        ``code``, as a watchdog whose hardware stopped answering; ``code`` 0 heals it."""
        with self._state() as st:
            st["devices"][name]["keepalive_errno"] = code
            self._event(st, "keepalive_fault", name, errno=code)

    def set_available(self, modules: list[str]) -> None:
        """Which modules modprobe can load (default: every modelled one)."""
        with self._state() as st:
            st["available"] = sorted(modules)
