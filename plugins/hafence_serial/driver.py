"""The ``serial`` fence driver: a power switch or relay board on a serial line (pyserial).

Each action opens the port, optionally pulses DTR or RTS, logs in if the switch wants
a password, sends one command line and reads the reply line, then closes the port
(so a switch shared with a console or another node's fencer is held only briefly).
Commands, expected replies and status words are options, so one driver covers most
line-based switches; ``device`` may also be a pyserial URL (``rfc2217://host:port``
for a terminal server, ``socket://host:port`` for a raw TCP bridge).

Over RFC 2217 pyserial's telnet negotiation costs about 0.4 s per open and 0.3 s per
close (it polls at 50 ms), so an action there takes ~0.8 s: keep ``timeout`` >= 3.

pyserial blocks: the whole exchange runs in a worker thread, every read bounded by
what is left of the action's time budget (slightly under ``timeout``, the fencer's
own bound), so the event loop never blocks and a silent switch is reported as
unreachable, not as a bare time-out. A per-device lock keeps two driver instances
(two outlets of one switch) from interleaving on the line; ``exclusive`` flock-s the
port against other processes.

Errors: cannot open the port or no byte of reply -> :class:`UnreachableError`; a
reply matching ``reply_denied`` -> :class:`AuthError`; anything else unexpected
(line noise, wrong baud rate, an error word) -> :class:`DeviceError` quoting what was
received, with any password masked.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import serial

from hafence.errors import (
    AuthError,
    DeviceError,
    NotSupportedError,
    ParamError,
    UnreachableError,
)
from hafence.fence.driver import POWER, FenceDriver, Param, Port, PowerState
from hafence.fence.params import standard

from .protocol import EOLS, Command, Pattern, command, show

log = logging.getLogger("hafence.serial")

PARITIES = ("N", "E", "O", "M", "S")
_STOPBITS = {"1": serial.STOPBITS_ONE, "1.5": serial.STOPBITS_ONE_POINT_FIVE, "2": 2}
_LINE_END = (b"\r", b"\n")
# Replies meaning "wrong password" on common switches; narrow enough that an error
# such as "ERR invalid outlet" stays a device error.
DENIED = (
    r"re:(?i).*\b(access denied|denied|unauthori[sz]ed|(invalid|incorrect|wrong|bad) "
    r"(password|login|credentials)|login (failed|incorrect|required)|password required)\b.*"
)
URL_POLL = 0.02  # read timeout of URL ports (rfc2217://, socket://), see _open

# One lock per device path in this process: two outlets of one switch share a line.
_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _device_lock(device: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(device, threading.Lock())


class _Budget:
    """What is left of one action's time bound."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.opened = False  # the worker got the port: every read and write is bounded

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)


class SerialDriver(FenceDriver):
    name: ClassVar[str] = "serial"
    kind: ClassVar[str] = POWER
    description: ClassVar[str] = (
        "Serial-attached power switch or relay (pyserial): configurable command lines, "
        "expected replies and status words, line settings, optional DTR/RTS pulse, "
        "optional password; device paths or rfc2217:// / socket:// URLs"
    )
    # 'list' needs outlets=N; without it list() raises NotSupportedError saying so.
    actions: ClassVar[frozenset[str]] = frozenset({"status", "off", "on", "monitor", "list"})
    params: ClassVar[tuple[Param, ...]] = (
        Param(
            "device",
            str,
            required=True,
            aliases=("serial_port", "tty"),
            help="Serial port (/dev/ttyUSB0) or pyserial URL (rfc2217://host:port, socket://)",
        ),
        Param("baudrate", int, default=9600, aliases=("baud", "speed"), help="Line speed"),
        Param("parity", str, default="N", choices=PARITIES, help="N, E, O, M (mark), S (space)"),
        Param("bytesize", int, default=8, choices=("5", "6", "7", "8"), help="Data bits"),
        Param("stopbits", str, default="1", choices=tuple(_STOPBITS), help="Stop bits"),
        Param("xonxoff", bool, default=False, help="Software flow control"),
        Param("rtscts", bool, default=False, help="Hardware (RTS/CTS) flow control"),
        Param(
            "exclusive",
            bool,
            default=True,
            help="Lock the port (flock) so no other process uses it during an action",
        ),
        Param(
            "eol",
            str,
            default="cr",
            choices=tuple(EOLS),
            help="Line ending appended to every command (replies may end in CR and/or LF)",
        ),
        standard(
            "plug",
            also=("outlet",),
            help="Outlet or relay number, put into commands in place of {plug}",
        ),
        Param(
            "outlets",
            int,
            help="Number of outlets: enables 'list' (cmd_status with {plug} per outlet)",
        ),
        Param(
            "cmd_off",
            str,
            default="OFF",
            help=r"Power-off command ({plug}; escapes \r \n \t \\ \xHH)",
        ),
        Param("cmd_on", str, default="ON", help="Power-on command"),
        Param("cmd_status", str, default="STATUS", help="Status query command"),
        Param(
            "reply_off",
            str,
            default="OK",
            help="Expected reply to cmd_off: text (case-insensitive) or re:REGEX; "
            "empty = the switch does not answer power commands",
        ),
        Param("reply_on", str, default="OK", help="Expected reply to cmd_on"),
        Param("status_on", str, default="ON", help="Status reply meaning on (text or re:REGEX)"),
        Param("status_off", str, default="OFF", help="Status reply meaning off"),
        standard(
            "password", help="Switch password (or password_file=PATH / password_env=VARIABLE)"
        ),
        Param(
            "cmd_login",
            str,
            default="",
            help="Login command sent before every command, with {password}; empty = no login",
        ),
        Param("reply_login", str, default="OK", help="Expected reply to cmd_login"),
        Param(
            "reply_denied",
            str,
            default=DENIED,
            help="A reply meaning the password was refused (-> auth_failed)",
        ),
        Param(
            "pulse",
            str,
            default="none",
            choices=("none", "dtr", "rts"),
            help="Modem line to pulse before off/on (held inactive otherwise)",
        ),
        Param("pulse_ms", int, default=100, help="Pulse length in milliseconds"),
    )

    def __init__(self, options: Mapping[str, Any], *, label: str | None = None) -> None:
        super().__init__(options, label=label)
        o = self.options
        self.device: str = o["device"].strip()
        if not self.device:
            raise ParamError("device", "must name a serial port or URL")
        if o["timeout"] is None or o["timeout"] <= 0:
            raise ParamError("timeout", "must be a positive number of seconds")
        if o["baudrate"] <= 0:
            raise ParamError("baudrate", f"must be positive, got {o['baudrate']}")
        if o["pulse_ms"] < 0 or (o["pulse"] != "none" and o["pulse_ms"] / 1000 >= self.budget):
            raise ParamError(
                "pulse_ms", f"must be between 0 and the time budget ({self.budget * 1000:.0f} ms)"
            )
        self.password = o["password"]
        eol, plug = EOLS[o["eol"]], o["plug"]
        self.commands: dict[str, Command] = {
            action: command(f"cmd_{action}", o[f"cmd_{action}"], eol, plug=plug, password=None)
            for action in ("off", "on", "status")
        }
        self.login: Command | None = None
        if o["cmd_login"]:
            self.login = command(
                "cmd_login", o["cmd_login"], eol, plug=plug, password=self.password
            )
        elif self.password is not None:
            raise ParamError("cmd_login", "required with a password (e.g. 'LOGIN {password}')")
        self.expect: dict[str, Pattern | None] = {
            k: Pattern.parse(f"reply_{k}", o[f"reply_{k}"]) if o[f"reply_{k}"] else None
            for k in ("off", "on", "login")
        }
        self.status_words = {
            PowerState.ON: Pattern.parse("status_on", o["status_on"]),
            PowerState.OFF: Pattern.parse("status_off", o["status_off"]),
        }
        self.denied = (
            Pattern.parse("reply_denied", o["reply_denied"]) if o["reply_denied"] else None
        )
        self.outlet_status: dict[str, Command] = {}
        if o["outlets"] is not None:
            if not 1 <= o["outlets"] <= 256:
                raise ParamError("outlets", f"must be 1..256, got {o['outlets']}")
            if plug is not None and plug.isdigit() and not 1 <= int(plug) <= o["outlets"]:
                raise ParamError("plug", f"outlet {plug} is not in 1..{o['outlets']}")
            if "{plug}" not in o["cmd_status"]:
                raise ParamError("outlets", "needs a cmd_status with {plug} to list outlets")
            self.outlet_status = {
                str(n): command("cmd_status", o["cmd_status"], eol, plug=str(n), password=None)
                for n in range(1, o["outlets"] + 1)
            }
        self._lock = _device_lock(self.device)
        self.local = "://" not in self.device  # a device node, not a pyserial URL

    @property
    def budget(self) -> float:
        # Under the fencer's bound on the call, so our precise error wins over its
        # generic time-out.
        return float(self.options["timeout"]) * 0.9

    # -- actions ------------------------------------------------------------------------
    async def status(self) -> PowerState:
        # _ask returns only replies matching a status word
        return self._state_of(await self._exchange("status"))

    async def off(self) -> None:
        await self._exchange("off")
        log.debug("serial %s: power off requested", self.label)

    async def on(self) -> None:
        await self._exchange("on")

    async def monitor(self) -> None:
        """The port opens, the switch answers (and takes the password), status parses."""
        await self.status()

    async def list(self) -> list[Port]:
        """Every outlet (``outlets``) with its state, read in one session on the line."""
        if not self.outlet_status:
            raise NotSupportedError(
                "serial: set outlets=N (and cmd_status with {plug}) to list outlets",
                device=self.label,
            )
        replies = await self._exchange("list")
        return [
            Port(id=n, name=f"outlet {n}", state=self._state_of(reply))
            for n, reply in replies.items()
        ]

    def _state_of(self, reply: str) -> PowerState:
        for state, word in self.status_words.items():
            if word.matches(reply):
                return state
        return PowerState.UNKNOWN

    # -- the exchange (worker thread) ----------------------------------------------------
    async def _exchange(self, action: str) -> Any:
        budget = _Budget(self.budget)
        work = asyncio.ensure_future(asyncio.to_thread(self._session, action, budget))
        no_answer = UnreachableError(
            f"{self.device}: {action} got no answer within {budget.seconds:.2g}s",
            device=self.label,
        )
        # The worker bounds every read and write itself; this catches what it cannot
        # bound (a terminal server's telnet negotiation, a kernel stuck in open()).
        # A worker left behind finishes on its own and releases the device lock.
        try:
            try:
                return await asyncio.wait_for(
                    asyncio.shield(work), budget.seconds + 0.05 * self.options["timeout"]
                )
            except TimeoutError:
                if not budget.opened:
                    raise no_answer from None
            # The port is open, so the worker ends at the deadline on its own: a busy
            # machine only woke it late. Its own verdict ("incomplete reply: received
            # ...") says more than ours; the fencer's bound on the call still holds (this
            # backstop is for a close() that hangs on flow control).
            try:
                return await asyncio.wait_for(work, self.options["timeout"])
            except TimeoutError:
                raise no_answer from None
        finally:
            if not work.done():  # given up on (or the caller was cancelled): the thread
                work.cancel()  # runs on alone; nobody waits for its result

    def _session(self, action: str, budget: _Budget) -> Any:
        if not self._lock.acquire(timeout=budget.left()):
            raise DeviceError(
                f"{self.device}: busy with another action for {budget.seconds:.2g}s",
                device=self.label,
            )
        try:
            port = self._open(budget)
            budget.opened = True
            try:
                if action in ("off", "on") and self.options["pulse"] != "none":
                    self._pulse(port)
                if self.login is not None:
                    self._ask(port, self.login, _one(self.expect["login"]), budget)
                words = tuple(self.status_words.values())
                if action == "list":  # a login before every command, as for one command
                    replies = {}
                    for n, cmd in self.outlet_status.items():
                        if self.login is not None and replies:
                            self._ask(port, self.login, _one(self.expect["login"]), budget)
                        replies[n] = self._ask(port, cmd, words, budget)
                    return replies
                expect = words if action == "status" else _one(self.expect[action])
                reply = self._ask(port, self.commands[action], expect, budget)
            finally:
                port.close()
        finally:
            self._lock.release()
        return reply

    def _open(self, budget: _Budget) -> serial.SerialBase:
        o = self.options
        url = self.device
        kwargs: dict[str, Any] = {}
        if "://" not in url:
            kwargs["exclusive"] = o["exclusive"]
            kwargs["write_timeout"] = max(budget.left(), 0.01)  # URL handlers refuse it
        elif url.startswith("rfc2217://") and "timeout=" not in url:
            # bound the telnet option negotiation too
            url += f"{'&' if '?' in url else '?'}timeout={max(budget.left() / 2, 0.05):.3f}"
        try:
            port = serial.serial_for_url(
                url,
                baudrate=o["baudrate"],
                bytesize=o["bytesize"],
                parity=o["parity"],
                stopbits=_STOPBITS[o["stopbits"]],
                xonxoff=o["xonxoff"],
                rtscts=o["rtscts"],
                # URL handlers re-negotiate every setting when the timeout changes
                # (~0.1 s over RFC 2217): they keep a short fixed one and are polled.
                timeout=0 if self.local else URL_POLL,
                do_not_open=True,
                **kwargs,
            )
            if o["pulse"] == "dtr":
                port.dtr = False  # applied at open: idle level until the pulse
            elif o["pulse"] == "rts":
                port.rts = False
            port.open()
        except serial.SerialException as exc:
            if "exclusively lock" in str(exc):
                raise DeviceError(
                    f"{self.device} is in use by another process (exclusive lock); "
                    "a console or another fencer holds it",
                    device=self.label,
                ) from None
            raise UnreachableError(
                f"cannot open {self.device}: {_reason(exc)}", device=self.label
            ) from None
        except (OSError, ValueError) as exc:
            raise UnreachableError(
                f"cannot open {self.device}: {_reason(exc)}", device=self.label
            ) from None
        return port

    def _pulse(self, port: serial.SerialBase) -> None:
        line, ms = self.options["pulse"], self.options["pulse_ms"]
        try:
            setattr(port, line, True)
            time.sleep(ms / 1000)  # real milliseconds; we are in a worker thread
            setattr(port, line, False)
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(
                f"{self.device}: cannot pulse {line.upper()} ({_reason(exc)}; "
                "a pty or a bare TCP bridge has no modem lines)",
                device=self.label,
            ) from None
        log.debug("serial %s: pulsed %s for %d ms", self.label, line.upper(), ms)

    def _ask(
        self,
        port: serial.SerialBase,
        cmd: Command,
        expect: tuple[Pattern, ...],
        budget: _Budget,
    ) -> str:
        """Send one command; return the reply line matching one of ``expect``.

        No ``expect``: the device answers nothing to this command; do not wait.
        """
        if budget.left() <= 0:  # the caller gave up: a late command must not go out
            raise UnreachableError(
                f"{self.device}: '{cmd.shown}' not sent, no time left of {budget.seconds:.2g}s",
                device=self.label,
            )
        try:
            port.reset_input_buffer()  # a late answer to an earlier command is not ours
            port.write(cmd.data)
            port.flush()
        except serial.SerialTimeoutException:
            raise UnreachableError(
                f"{self.device}: '{cmd.shown}' not sent within {budget.seconds:.2g}s "
                "(flow control holding the line?)",
                device=self.label,
            ) from None
        except (serial.SerialException, OSError) as exc:
            raise UnreachableError(
                f"{self.device}: writing '{cmd.shown}' failed: {_reason(exc)}", device=self.label
            ) from None
        if not expect:
            return ""
        reply = self._read_reply(port, cmd, budget)
        if any(p.matches(reply) for p in expect):
            return reply  # what we asked for wins, even if it reads like a refusal
        if self.denied is not None and self.denied.matches(reply):
            raise AuthError(f"{self.device}: '{cmd.shown}' refused: '{reply}'", device=self.label)
        wanted = " or ".join(f"'{p}'" for p in expect)
        raise DeviceError(
            f"{self.device}: unexpected reply '{reply}' to '{cmd.shown}' (expected {wanted})",
            device=self.label,
        )

    def _read_reply(self, port: serial.SerialBase, cmd: Command, budget: _Budget) -> str:
        """The first non-empty line that is not the echo of ``cmd``, as shown text."""
        sent = cmd.data.strip(b"\r\n")
        received = b""
        buf = b""
        while True:
            while any(end in buf for end in _LINE_END):
                cut = min(i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0)
                line, buf = buf[:cut].strip(), buf[cut + 1 :]
                if line and line != sent:
                    return show(line, self.password)
            left = budget.left()
            if left <= 0:
                break
            if self.local:  # a tcsetattr away: wait exactly what is left
                port.timeout = left
            try:
                chunk = port.read(max(port.in_waiting, 1))
            except (serial.SerialException, OSError) as exc:
                raise UnreachableError(
                    f"{self.device}: reading the reply to '{cmd.shown}' failed: {_reason(exc)}",
                    device=self.label,
                ) from None
            received += chunk
            buf += chunk
        if not received:
            raise UnreachableError(
                f"{self.device}: no answer to '{cmd.shown}' within {budget.seconds:.2g}s",
                device=self.label,
            )
        raise DeviceError(
            f"{self.device}: incomplete reply to '{cmd.shown}' within {budget.seconds:.2g}s: "
            f"received '{show(received, self.password)}'",
            device=self.label,
        )


def _one(pattern: Pattern | None) -> tuple[Pattern, ...]:
    return () if pattern is None else (pattern,)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).strip() or type(exc).__name__
