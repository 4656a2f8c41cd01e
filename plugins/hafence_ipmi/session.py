"""pyghmi sessions: one per (host, port, user, privilege, password), reused across calls.

pyghmi's ``Command`` is synchronous and drives a process-wide UDP event loop. We run
every pyghmi call in a worker thread so the asyncio event loop never blocks, keep one
logged-in ``Command`` per target so repeated status polls do not log in again, and run
pyghmi's keepalive loop in a daemon thread so idle sessions stay open. A session that
died anyway (BMC reset, network gone) is dropped and logged in once more.

pyghmi 1.6 quirks that shape this module:

* credentials must be passed as ``bytes``: with ``str`` pyghmi's own session sharing
  compares ``b"admin" == "admin"``, never matches, and a second ``Command`` for the same
  BMC waits forever on a stale "logging in" entry;
* pyghmi retries an unanswered login for ~5 s and cannot be interrupted, so callers
  bound each call with :func:`run` (the abandoned thread finishes on its own);
* its synchronous login can lose the failure reason to another thread (see
  :func:`_login`);
* it shares one session per (BMC, user, password) whatever the privilege level: the
  first ``privlvl`` used for a BMC and user in a process is the one in effect.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import logging
import math
import select
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as pyghmi_command
from pyghmi.ipmi.private import session as pyghmi_session

from hafence.errors import (
    AuthError,
    DeviceError,
    FenceError,
    NotSupportedError,
    UnreachableError,
)
from hafence.secrets import Secret

log = logging.getLogger("hafence.ipmi")

T = TypeVar("T")

PRIVILEGE_LEVELS = {"user": 2, "operator": 3, "administrator": 4}

# pyghmi reports login failures as plain text; these mean "credentials refused".
_AUTH_HINTS = (
    "incorrect password",
    "unauthorized name",
    "unauthorized role",
    "unauthorized guid",
    "invalid role",
    "invalid integrity check",
    "privelege",  # sic, pyghmi's spelling in "while requesting privelege level"
    "privilege",
    "password is too long",
    "username too long",
)
_UNREACHABLE_HINTS = ("timeout", "session no longer connected", "unable to transmit")

# IPMI completion codes worth a specific error.
_CC_INSUFFICIENT_PRIVILEGE = 0xD4
_CC_NOT_SUPPORTED = {0xC1: "invalid command", 0xCC: "invalid data field in request"}


@dataclass(frozen=True)
class Target:
    """Where and as whom to log in. ``password`` stays a Secret until pyghmi needs it."""

    host: str
    port: int
    user: str
    password: Secret
    privlvl: str = "administrator"
    kg: Secret | None = None

    @property
    def key(self) -> tuple[str, int, str, str, str]:
        # A digest, not the password, so a changed password gets its own session.
        digest = hashlib.sha256(self.password.reveal().encode()).hexdigest()
        if self.kg is not None:
            digest += hashlib.sha256(self.kg.reveal().encode()).hexdigest()
        return (self.host, self.port, self.user, self.privlvl, digest)

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class SessionPool:
    """Logged-in pyghmi ``Command`` objects by :attr:`Target.key`; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._cmds: dict[tuple, Any] = {}
        #: Logins performed per target key (what session reuse saves).
        self.logins: dict[tuple, int] = {}
        self._exit_hook = False

    def _key_lock(self, key: tuple) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def command(self, target: Target) -> Any:
        """A logged-in ``Command`` for ``target``: the cached one while it lives."""
        key = target.key
        with self._key_lock(key):  # one login per target at a time
            cmd = self._cmds.get(key)
            if cmd is not None and _alive(cmd):
                return cmd
            self._cmds.pop(key, None)
            kg = target.kg.reveal().encode() if target.kg is not None else None
            cmd = _login(target, kg)
            self._cmds[key] = cmd
            self.logins[key] = self.logins.get(key, 0) + 1
            if not self._exit_hook:
                atexit.register(self.close_at_exit)
                self._exit_hook = True
            log.debug("ipmi %s: logged in (login #%d)", target, self.logins[key])
            return cmd

    def drop(self, target: Target, cmd: Any | None = None) -> None:
        """Forget a session (all of the target's, or only if it is still ``cmd``)."""
        with self._lock:
            if cmd is None or self._cmds.get(target.key) is cmd:
                self._cmds.pop(target.key, None)

    def login_count(self, target: Target) -> int:
        return self.logins.get(target.key, 0)

    def close_at_exit(self) -> None:
        """Close every idle session when the process ends, as ``ipmitool`` does.

        A BMC holds only a few sessions; one-shot commands that left theirs open (until
        the BMC's idle timeout) would soon lock everyone out, the fencer included. The
        close request is sent without waiting for its answer (pyghmi's ``retry=False``),
        and a session busy in an abandoned call is skipped: exit never waits on a BMC.
        """
        with self._lock:
            cmds, self._cmds = list(self._cmds.values()), {}
        for cmd in cmds:
            sess = cmd.ipmi_session
            if sess.broken or not sess.logged or sess._isincommand():
                continue
            try:
                sess.logout()
            except Exception as exc:  # the BMC may be gone already
                log.debug("ipmi logout at exit failed: %r", exc)

    def logout_all(self) -> None:
        """Log out of every cached session (best effort; pyghmi waits <= 1 s each)."""
        with self._lock:
            cmds, self._cmds = list(self._cmds.values()), {}
        for cmd in cmds:
            try:
                cmd.ipmi_session.logout()
            except Exception as exc:  # the BMC may be gone already
                log.debug("ipmi logout failed: %r", exc)


_KEEPALIVE_LOCK = threading.Lock()
_keepalive: threading.Thread | None = None
# Longest sleep of the keepalive loop while no session wants anything (pyghmi sends a
# keepalive after 29 s idle, so a session registered meanwhile is served in time).
_KEEPALIVE_IDLE = 1.0


def _keepalive_loop() -> None:
    # Not pyghmi's Housekeeper: it calls wait_for_rsp() without a timeout, which returns
    # at once while no session is alive (all logged out, or broken by a dead BMC). That
    # loop then spins holding the GIL, and every other thread of the process - a CRM's
    # fencer, an SNMP driver's event loop - runs several times slower. With a timeout,
    # wait_for_rsp() sleeps until the earliest session deadline, or this long when idle.
    while True:
        pyghmi_session.Session.wait_for_rsp(timeout=_KEEPALIVE_IDLE)


def _start_keepalive() -> None:
    """Run pyghmi's event loop in a daemon thread, once per process.

    Without it nobody sends pyghmi's keepalives while we are idle, and a BMC drops an
    idle session after ~30 s (ipmi_sim does), so the first request after a pause
    would pay for finding the session dead and logging in again.
    """
    global _keepalive
    with _KEEPALIVE_LOCK:
        if _keepalive is None or not _keepalive.is_alive():
            _keepalive = threading.Thread(
                target=_keepalive_loop, name="hafence-ipmi-keepalive", daemon=True
            )
            _keepalive.start()


def _login(target: Target, kg: bytes | None) -> Any:
    """Log in and wait for the outcome.

    pyghmi's synchronous login reads ``session.errormsg`` after seeing ``broken``, but
    another thread's event loop may set ``broken`` first (AttributeError, message
    lost). With a logon callback the outcome arrives as a dict instead.
    """
    outcome: dict[str, Any] = {}

    def onlogon(response: dict[str, Any], _cmd: Any) -> None:
        outcome.update(response)

    cmd = pyghmi_command.Command(
        bmc=target.host,
        userid=target.user.encode(),
        password=target.password.reveal().encode(),
        port=target.port,
        kg=kg,
        privlevel=PRIVILEGE_LEVELS[target.privlvl],
        onlogon=onlogon,
    )
    sess = cmd.ipmi_session
    # pyghmi gives up on an unanswered login after ~5 s; the deadline is a backstop.
    deadline = time.monotonic() + 30
    while not outcome and time.monotonic() < deadline:
        if sess.broken or (sess.logged and not sess.logging):
            break  # settled without our callback (a session shared inside pyghmi)
        pyghmi_session.Session.wait_for_rsp(0.05)
    error = outcome.get("error")
    if error is None and (sess.broken or not sess.logged):
        error = getattr(sess, "errormsg", None) or "timeout"
    if error is not None:
        raise pyghmi_exc.IpmiException(error)
    # Only now: a one-shot CLI call never races the keepalive loop during its login.
    _start_keepalive()
    return cmd


def _alive(cmd: Any) -> bool:
    sess = getattr(cmd, "ipmi_session", None)
    return bool(sess is not None and not sess.broken and sess.logged)


def _fail_fast(cmd: Any) -> None:
    # On a silent session (e.g. after a BMC reset) pyghmi retransmits for seconds, then
    # re-logs in *inside* the stuck request, where its own command lock delays the
    # re-login by another ~3 s. A BMC on a LAN answers in milliseconds: give up on the
    # first unanswered request instead (pyghmi marks the session broken) and let
    # call() log in afresh, which takes one round trip.
    sess = cmd.ipmi_session
    sess.maxtimeout = min(getattr(sess, "maxtimeout", 1), 1)
    sess.logontries = 0


POOL = SessionPool()

# pyghmi waits for a reply on an event that only a packet arriving *after* the wait
# began sets; a reply that was already queued (a fast BMC, e.g. during the login's
# privilege request) leaves the caller asleep until its 0.5-1 s retransmit deadline.
# So a wait for a reply (directed, no ``evq``: awaitresponse, which processes the queue
# next and waits again if the packet was not its reply) lasts at most 1 ms when a
# session with that BMC already holds a packet (not 0: if the packet is another
# session's, the loop must not spin until someone takes it), and every directed wait
# is capped so a reply queued between that check and the wait costs at most 50 ms. (A
# wait with ``evq`` is for another thread's command to finish.) Deadlines and
# retransmits are unaffected: pyghmi's loop re-computes them on every wake-up.
_REPLY_POLL = 0.05
_QUEUED_POLL = 0.001
# A waiter wakes on its own this long after its deadline: its event is set by pyghmi's
# I/O thread, and one that died took its waiters' events with it (see _io_thread()).
_WAIT_SLACK = 1.0


def _reply_queued(myaddr: Any) -> bool:
    sessions = pyghmi_session.Session.bmc_handlers.get(myaddr) or {}
    return any(s.pktqueue for s in list(sessions.values()))


def _io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
    """pyghmi's wait on its I/O thread, with the caps above and a bounded sleep."""
    if myaddr is not None:
        queued = evq is None and _reply_queued(myaddr)
        timeout = min(timeout, _QUEUED_POLL if queued else _REPLY_POLL)
    timeout = max(timeout, 0.0)
    evt = threading.Event()
    if evq is not None:
        evq.append(evt)
    deadline = pyghmi_session._monotonic_time() + timeout
    pyghmi_session.ioqueue.append((deadline, evt, myaddr))
    if deadline < pyghmi_session.selectdeadline:  # the I/O thread sleeps longer: wake it
        wake = pyghmi_session.iosockets[0]
        wake.sendto(b"\x01", (pyghmi_session.myself, wake.getsockname()[1]))
    # Every caller re-checks its condition and waits again, so waking early is harmless.
    evt.wait(timeout + _WAIT_SLACK)


def _poll_select(rlist: list[Any], wlist: Any, xlist: Any, timeout: float | None = None) -> Any:
    """``select.select`` for pyghmi's I/O thread, on poll(2).

    select() refuses a file descriptor of 1024 or more with ValueError, and that ends
    pyghmi's I/O thread: a process holding a thousand files when it first speaks IPMI
    (a CRM with many clients, a long test run) would get its socket above the limit and
    then never an answer. poll() has no such limit. Only reading is ever asked for.
    """
    poller = select.poll()
    by_fd = {}
    for sock in list(rlist):
        fd = sock.fileno()
        if fd >= 0:  # a closed socket: nothing to read, and poll() would refuse it
            by_fd[fd] = sock
            poller.register(fd, select.POLLIN)
    wait_ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    ready = [by_fd[fd] for fd, _ in poller.poll(wait_ms) if fd in by_fd]
    return ready, [], []


_pyghmi_io_graball = pyghmi_session._io_graball


def _io_graball(sockets: list[Any], waiters: dict[Any, Any]) -> list[Any]:
    """pyghmi's read of every waiting packet, which must not end its I/O thread.

    It looks a packet's session up in two steps while other threads remove sessions
    (a logout, a session marked broken): a session that goes in between raises KeyError
    in the I/O thread. Its packet is dropped (pyghmi sends again what went unanswered).
    """
    try:
        return _pyghmi_io_graball(sockets, waiters)
    except Exception as exc:
        log.debug("ipmi: dropped a packet whose session went away: %r", exc)
        return []


if getattr(pyghmi_session._io_wait, "__module__", None) != __name__:
    pyghmi_session._io_wait = _io_wait
    pyghmi_session._io_graball = _io_graball
    pyghmi_session.select = types.SimpleNamespace(select=_poll_select)

_IO_THREAD_LOCK = threading.Lock()


def _io_thread() -> None:
    """Start pyghmi's I/O thread again if it died.

    pyghmi starts it once per process and never looks at it again; if it dies, every
    request waits on events nobody sets, and each call ends "no IPMI answer" while the
    BMC answers. The cause is logged by Python's thread exception hook.
    """
    dead = pyghmi_session.iothread
    if dead is None or dead.is_alive():
        return
    with _IO_THREAD_LOCK:
        if pyghmi_session.iothread is not dead:
            return  # another call restarted it meanwhile
        log.error("ipmi: pyghmi's I/O thread has died; starting a new one")
        ready = threading.Event()
        pyghmi_session.iothreadready = False
        pyghmi_session.iothreadwaiters.append(ready)
        thread = pyghmi_session.define_worker()()
        thread.daemon = True
        pyghmi_session.iothread = thread
        thread.start()
        ready.wait()


# -- running calls ------------------------------------------------------------------
def call(
    target: Target,
    fn: Callable[[Any], T],
    *,
    pool: SessionPool = POOL,
    deadline: float | None = None,
) -> T:
    """Run ``fn(command)`` on the target's session (blocking; use :func:`run`).

    A session that dies under a request is dropped and ``fn`` tried again on a fresh
    login: once without a ``deadline`` (``time.monotonic()`` when the caller gives up),
    and with one as long as it has not passed. pyghmi declares a session gone by its
    own timers, which a loaded machine outruns; whether the BMC is unreachable is
    judged by our bound, and a fresh login that fails ends it. pyghmi and IPMI errors
    become typed :class:`FenceError`.
    """
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        fresh = False
        _io_thread()
        try:
            before = pool.login_count(target)
            cmd = pool.command(target)
            fresh = pool.login_count(target) != before
        except Exception as exc:
            err = map_error(exc, target, "login")
            if attempt == 1 and "session failed to initialize" in str(exc).lower():
                # pyghmi's catch-all when a session-setup reply went missing (seen under
                # load with a wrong password): one more login gives the real answer
                continue
            raise err from None
        if not fresh:
            _fail_fast(cmd)
        try:
            return fn(cmd)
        except Exception as exc:
            err = map_error(exc, target, "request")
            # A refused request (NotSupported, DeviceError) came over a working session.
            if not isinstance(err, (NotSupportedError, DeviceError)):
                pool.drop(target, cmd)
            if deadline is None:
                again = not fresh and attempt == 1
            else:
                again = attempt < _MAX_ATTEMPTS and time.monotonic() < deadline
            if isinstance(err, UnreachableError) and again:
                log.info("ipmi %s: session lost (%s), logging in again", target, err.message)
                continue
            raise err from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


# Logins per call at most: each one that succeeds shows the BMC answers, so a request
# lost over it was the session's fault; this caps the work of a call left running.
_MAX_ATTEMPTS = 4


async def run(
    target: Target, fn: Callable[[Any], T], bound: float, what: str, *, pool: SessionPool = POOL
) -> T:
    """:func:`call` in a worker thread, bounded by ``bound`` seconds.

    No answer within the bound is :class:`UnreachableError`: a BMC that does not reply
    to IPMI in ``bound`` seconds cannot fence anything.
    """
    deadline = time.monotonic() + bound if bound > 0 else None
    fut = _in_thread(functools.partial(call, target, fn, pool=pool, deadline=deadline))
    try:
        return await asyncio.wait_for(fut, bound if bound > 0 else None)
    except TimeoutError:
        raise UnreachableError(
            f"{what}: no IPMI answer from {target.host}:{target.port} within {bound:g}s"
        ) from None


def _in_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``fn`` in a daemon thread. Not an executor: an abandoned pyghmi login may run
    on for seconds after its caller gave up, and must not hold up interpreter exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if fut.done():  # the caller timed out or was cancelled
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)

    def work() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the event loop is closed: nobody waits any more
            pass

    threading.Thread(target=work, name="hafence-ipmi", daemon=True).start()
    return fut


def raw(cmd: Any, netfn: int, command: int, data: tuple[int, ...] = ()) -> bytes:
    """One raw IPMI request; a non-zero completion code raises a typed error."""
    rsp = cmd.raw_command(netfn=netfn, command=command, data=data)
    if "error" in rsp or rsp.get("code"):
        raise response_error(rsp)
    return bytes(rsp.get("data", b""))


def response_error(rsp: dict[str, Any]) -> FenceError:
    code = rsp.get("code", 0)
    text = str(rsp.get("error") or f"completion code 0x{code:02x}")
    if code == 0xFFFF or text == "timeout":
        return UnreachableError(f"BMC stopped answering: {text}")
    if code == _CC_INSUFFICIENT_PRIVILEGE:
        return AuthError(f"insufficient privilege: {text} (check privlvl and the user's rights)")
    if code in _CC_NOT_SUPPORTED:
        return NotSupportedError(f"BMC refused the request: {text}")
    return DeviceError(f"BMC answered with an error: {text} (0x{code:02x})")


def map_error(exc: BaseException, target: Target, stage: str) -> FenceError:
    """A pyghmi/socket exception as a typed fence error, never echoing a password."""
    if isinstance(exc, FenceError):
        return exc
    text = str(exc) if str(exc) not in ("", "None") else ""
    low = text.lower()
    where = f"{target.host}:{target.port}"
    if isinstance(exc, pyghmi_exc.IpmiException):
        if any(h in low for h in _AUTH_HINTS):
            return AuthError(f"{where} refused user '{target.user}': {text}")
        if not text or any(h in low for h in _UNREACHABLE_HINTS):
            return UnreachableError(f"{where}: no IPMI answer ({stage}: {text or 'timed out'})")
        return DeviceError(f"{where}: {stage} failed: {text}")
    if isinstance(exc, OSError):
        return UnreachableError(f"{where}: {stage}: {exc.strerror or exc}")
    return DeviceError(f"{where}: {stage} failed: {type(exc).__name__}: {text}")
