"""A real OpenIPMI ``ipmi_sim`` BMC on loopback, for tests, demos and benchmarks.

``ipmi_sim`` (Debian package ``openipmi``) speaks real IPMI 1.5/2.0 (RMCP+, cipher
suites 0-3) on a UDP port. This runner gives it a lan.conf of its own (one admin user,
``priv_limit admin``), a state directory in a temp dir, and a ``chassis_control``
program that keeps the power state in a file and logs every call, so tests can read
and change the "hardware" directly::

    from hafence.simdevices.ipmi_sim import IpmiSim

    with IpmiSim(password="pw") as bmc:          # or: bmc = IpmiSim().start(); bmc.stop()
        bmc.host, bmc.port, bmc.user, bmc.password
        bmc.power                                # "on" / "off" (read from the state file)
        bmc.set_power(False)                     # flip the simulated power directly
        bmc.calls()                              # ["get power", "set power 0", ...]
        bmc.power_calls()                        # only the "set power ..." requests
        bmc.clear_calls()
        bmc.set_stuck()                          # power-off accepted, power stays on
        bmc.driver_options()                     # options for hafence's ``ipmi`` driver
        bmc.fence_cfg_args()                     # the same as fence.cfg key=value text
        bmc.agent_options() / bmc.agent_args()   # the same for ClusterLabs fence_ipmilan
        bmc.ipmitool_args()                      # argv prefix for ipmitool
        bmc.restart()                            # a BMC reset: same port, sessions lost

``IpmiSim(extra_users=(("viewer", "pw", "user"),))`` adds accounts (privilege
callback/user/operator/admin). ``IpmiSim(stuck=True)`` starts a BMC whose target
never reaches off ("stuck" mode: the chassis program accepts ``set power 0`` and
ignores it); ``set_stuck(False)`` heals it. The port is picked free (bind to port 0)
and the start retried if another process grabs it first; :meth:`start` returns once
our ipmi_sim owns the port alone and answers an RMCP presence ping. :meth:`stop`
kills the whole process group (ipmi_sim and any chassis program it runs) and is safe
to call twice; the context manager always calls it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from hafence.simdevices.procs import stop_group

__all__ = ["IpmiSim", "IpmiSimError", "available", "free_udp_port", "rmcp_ping"]

_HERE = Path(__file__).resolve().parent
CHASSIS_PROGRAM = _HERE / "ipmi_chassis_ctl.sh"
COMMAND_FILE = _HERE / "ipmi_bmc.emu"

_PRIVS = ("callback", "user", "operator", "admin")
# RMCP / ASF presence ping (DMTF ASF 2.0): answered by every IPMI LAN interface.
_PING = bytes([0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x01, 0x00, 0x00])


class IpmiSimError(RuntimeError):
    """ipmi_sim could not be started (not installed, port race lost, config refused)."""


def available() -> bool:
    """Whether ipmi_sim is installed (tests skip with a reason when it is not)."""
    return shutil.which("ipmi_sim") is not None


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port free at the time of the call (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rmcp_ping(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when an IPMI LAN interface answers an RMCP presence ping at host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(_PING, (host, port))
            data, _ = s.recvfrom(512)
        except OSError:  # timeout, or ICMP port unreachable as ConnectionRefusedError
            return False
    return len(data) >= 8 and data[:4] == _PING[:4] and data[8] == 0x40  # pong


def _udp_inodes(port: int) -> list[str] | None:
    """Socket inodes of every UDP socket bound to ``port``; None without /proc."""
    needle = f":{port:04X}"
    found: list[str] | None = None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found = found or []
        found += [f[9] for f in map(str.split, lines) if f[1].endswith(needle)]
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    return inodes


class IpmiSim:
    """One ipmi_sim process acting as a BMC on ``host``:``port`` (see module doc)."""

    def __init__(
        self,
        *,
        user: str = "admin",
        password: str = "hafence-Pw1",
        priv: str = "admin",
        power_on: bool = True,
        stuck: bool = False,
        host: str = "127.0.0.1",
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        extra_users: tuple[tuple[str, str, str], ...] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        if priv not in _PRIVS:
            raise ValueError(f"priv must be one of {', '.join(_PRIVS)}")
        for name, pw, p in ((user, password, priv), *extra_users):
            if p not in _PRIVS or any(c in f"{name}{pw}" for c in '"\n\\'):
                raise ValueError(f"user {name!r}: bad privilege or a character lan.conf refuses")
            # its lan.conf keeps a NUL in IPMI's 16 and 20 byte fields (checked: 20 fails)
            if len(name.encode()) > 15 or len(pw.encode()) > 19:
                raise ValueError(f"user {name!r}: ipmi_sim keeps 15 bytes of a name, 19 of a pw")
        self.user = user
        self.password = password
        self.priv = priv
        self.host = host
        self.port = port or 0
        self.extra_users = extra_users
        self.startup_timeout = startup_timeout
        self._fixed_port = port is not None
        self._initial_power = power_on
        self._initial_stuck = stuck
        self._own_dir = workdir is None
        self._workdir = Path(workdir) if workdir is not None else None

    # -- paths --------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="hafence-ipmi-sim-"))
        return self._workdir

    @property
    def power_file(self) -> Path:
        """The simulated power state: ``1`` (on) or ``0`` (off)."""
        return self.workdir / "power"

    @property
    def call_log(self) -> Path:
        """Every chassis-control call ipmi_sim made, one ``OP ARGS`` line each."""
        return self.workdir / "power.log"

    @property
    def mode_file(self) -> Path:
        return self.workdir / "power.mode"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> IpmiSim:
        """Start ipmi_sim and wait until it answers; returns self."""
        if self.running:
            return self
        if not available():
            raise IpmiSimError("ipmi_sim not found (install the Debian package 'openipmi')")
        wd = self.workdir
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "state").mkdir(exist_ok=True)
        if not self.power_file.exists():
            self.set_power(self._initial_power)
        self.set_stuck(self._initial_stuck)
        tries = 1 if self._fixed_port else 5  # another tester may take the port first
        last = ""
        for _ in range(tries):
            if not self._fixed_port:
                self.port = free_udp_port(self.host)
            self._write_conf()
            out = open(wd / "ipmi_sim.out", "ab")  # handed to the child, closed below
            try:
                self._proc = subprocess.Popen(
                    ["ipmi_sim", "-c", str(wd / "lan.conf"), "-f", str(COMMAND_FILE), "-n",
                     "-s", str(wd / "state")],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=wd,
                    start_new_session=True,  # own process group: stop() kills it whole
                )  # fmt: skip
            finally:
                out.close()
            if self._wait_ready():
                return self
            self._kill()
            last = (wd / "ipmi_sim.out").read_text(errors="replace")[-500:]
        raise IpmiSimError(f"ipmi_sim did not answer on {self.host}:{self.port}: {last}")

    def _wait_ready(self) -> bool:
        """True once *our* ipmi_sim owns the port, alone, and answers a ping.

        ipmi_sim binds with SO_REUSEADDR, so Linux lets it share a UDP port that someone
        else took between our probe and its bind; a ping alone could then be answered
        by the other process.
        """
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            bound = _udp_inodes(self.port)
            if bound is not None and len(bound) > 1:
                log = self.workdir / "ipmi_sim.out"
                with log.open("a") as out:
                    out.write(f"UDP port {self.port} is shared with another process\n")
                return False
            ours = bound is None or bool(set(bound) & _socket_inodes(self._proc.pid))
            if ours and rmcp_ping(self.host, self.port, 0.1):
                return True
            time.sleep(0.02)
        return False

    def _write_conf(self) -> None:
        auths = "none md2 md5 straight"
        lines = [
            'name "hafence-sim"',
            "set_working_mc 0x20",
            "  startlan 1",
            f"    addr {self.host} {self.port}",
            "    priv_limit admin",
            *(f"    allowed_auths_{p} {auths}" for p in _PRIVS),
            "    guid a123456789abcdefa123456789abcdef",
            "  endlan",
            f'  chassis_control "{CHASSIS_PROGRAM} {self.power_file}"',
        ]
        users = ((self.user, self.password, self.priv), *self.extra_users)
        for n, (name, pw, priv) in enumerate(users, start=2):  # user 1 is anonymous
            lines.append(f'  user {n} true "{name}" "{pw}" {priv} 10 {auths}')
        conf = self.workdir / "lan.conf"
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)  # it holds the password

    def stop(self) -> None:
        """Kill ipmi_sim's process group; remove the temp dir if this runner made it."""
        self._kill()
        if self._own_dir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def restart(self) -> IpmiSim:
        """Stop and start again on the same port, keeping the power state (all BMC
        sessions are lost, as after a BMC reset)."""
        self._kill()
        self._fixed_port = True
        return self.start()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc, grace=3.0, kill_wait=5.0)

    def __enter__(self) -> IpmiSim:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:  # never the password
        state = "running" if self.running else "stopped"
        where = f"{getattr(self, 'host', '?')}:{getattr(self, 'port', '?')}"
        return f"<IpmiSim {where} user={getattr(self, 'user', '?')} {state}>"

    # -- the simulated hardware -------------------------------------------------------
    @property
    def power(self) -> str:
        """``"on"`` or ``"off"``, as the chassis program holds it."""
        try:
            return "on" if self.power_file.read_text().strip() == "1" else "off"
        except FileNotFoundError:
            return "off"

    def set_power(self, on: bool) -> None:
        """Set the simulated power directly (not through IPMI, not logged as a call)."""
        tmp = self.power_file.with_suffix(".tmp")
        tmp.write_text("1\n" if on else "0\n")
        os.replace(tmp, self.power_file)

    def set_stuck(self, stuck: bool = True) -> None:
        """Stuck: 'power off' is accepted by the BMC but the power stays as it is."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mode_file.write_text("stuck\n" if stuck else "\n")

    @property
    def stuck(self) -> bool:
        try:
            return self.mode_file.read_text().strip() == "stuck"
        except FileNotFoundError:
            return False

    def calls(self) -> list[str]:
        """Chassis-control calls so far, e.g. ``["get power", "set power 0"]``."""
        try:
            return self.call_log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def power_calls(self) -> list[str]:
        """Only the state-changing calls (``set ...``)."""
        return [c for c in self.calls() if c.startswith("set ")]

    def clear_calls(self) -> None:
        self.call_log.write_text("")

    # -- how clients reach it -----------------------------------------------------------
    def driver_options(self, **extra: Any) -> dict[str, Any]:
        """Options for hafence's ``ipmi`` driver (small timeouts and poll interval)."""
        opts: dict[str, Any] = {
            "ip": self.host,
            "ipport": self.port,
            "username": self.user,
            "password": self.password,
            "lanplus": True,
            "timeout": 5.0,
            "power_timeout": 5.0,
            "poll_interval": 0.05,
        }
        opts.update(extra)
        return opts

    def fence_cfg_args(self, **extra: Any) -> str:
        """:meth:`driver_options` as fence.cfg ``key=value`` text (password quoted)."""
        return _kv(self.driver_options(**extra))

    def agent_options(self, **extra: Any) -> dict[str, Any]:
        """Options for ClusterLabs ``fence_ipmilan`` (lanplus, cipher suite 3)."""
        opts: dict[str, Any] = {
            "ip": self.host,
            "ipport": self.port,
            "username": self.user,
            "password": self.password,
            "lanplus": True,
            "cipher": "3",
            "power_timeout": 5,
            "poll_interval": 0.1,
        }
        opts.update(extra)
        return opts

    def agent_args(self, password: str | None = None, **extra: Any) -> str:
        """:meth:`agent_options` as fence.cfg text."""
        if password is not None:
            extra["password"] = password
        return _kv(self.agent_options(**extra))

    def ipmitool_args(self) -> list[str]:
        """``ipmitool`` argv up to the command (password via -P: tests only)."""
        return ["ipmitool", "-I", "lanplus", "-C", "3", "-H", self.host, "-p", str(self.port),
                "-U", self.user, "-P", self.password]  # fmt: skip


@contextlib.contextmanager
def started_sims(
    workdir: str | os.PathLike[str], **defaults: Any
) -> Iterator[Callable[..., IpmiSim]]:
    """A factory ``start(**kw) -> IpmiSim`` (started, each in its own dir below
    ``workdir``, ``defaults`` overridden by ``kw``); every BMC is stopped on exit."""
    started: list[IpmiSim] = []

    def start(**kw: Any) -> IpmiSim:
        sim = IpmiSim(workdir=Path(workdir) / f"bmc{len(started)}", **{**defaults, **kw})
        started.append(sim)  # before start(): a half-started sim is stopped too
        return sim.start()

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()


def _kv(opts: dict[str, Any]) -> str:
    parts = []
    for k, v in opts.items():
        if v is True:
            v = 1
        elif v is False:
            v = 0
        text = str(v)
        parts.append(f"{k}={shlex.quote(text)}" if text else f"{k}=''")
    return " ".join(parts)
