"""A small asyncio SNMP client over pysnmp 7: GET, SET and column walks, typed errors.

One :class:`SnmpClient` owns one pysnmp ``SnmpEngine`` (created on first use, closed
by :meth:`close`) and one transport target. The engine's socket belongs to the event
loop it was created on: used from another loop (another thread, or after
``asyncio.run()`` returned), the client drops it and starts a new one, since the old
loop would never deliver its answers.

Every request (each page of a walk) is bounded by ``timeout`` in total: pysnmp gets
``timeout / (retries + 1)`` per try, and since its retry timer ticks every 0.1 s and
overshoots, an asyncio deadline enforces the bound. Inside :meth:`SnmpClient.one_call`
all requests share one deadline ``timeout`` from its start: a driver action (resolve a
port name, then SET) is one call to the fencer, which bounds the call, not each request.
Failures become hafence fence errors so the fencer can say *why*:

* no answer -> :class:`UnreachableError` (with v1/v2c a wrong community looks the
  same: agents drop such requests silently);
* a v3 report PDU (unknown user, wrong digest, decryption error...) or an access
  error status -> :class:`AuthError`;
* any other error status or error indication -> :class:`DeviceError`.

Values come back as pysnmp/pyasn1 objects (``lookupMib=False``: no MIB files needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    Udp6TransportTarget,
    UdpTransportTarget,
    UsmUserData,
    bulk_walk_cmd,
    get_cmd,
    set_cmd,
    usm3DESEDEPrivProtocol,
    usmAesBlumenthalCfb192Protocol,
    usmAesBlumenthalCfb256Protocol,
    usmAesCfb128Protocol,
    usmAesCfb192Protocol,
    usmAesCfb256Protocol,
    usmDESPrivProtocol,
    usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
    walk_cmd,
)
from pysnmp.proto import errind
from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject
from pysnmp.smi import builder, view

from hafence.errors import AuthError, DeviceError, FenceError, UnreachableError
from hafence.secrets import Secret

AUTH_PROTOCOLS: dict[str, tuple[int, ...]] = {
    "MD5": usmHMACMD5AuthProtocol,
    "SHA": usmHMACSHAAuthProtocol,
    "SHA224": usmHMAC128SHA224AuthProtocol,
    "SHA256": usmHMAC192SHA256AuthProtocol,
    "SHA384": usmHMAC256SHA384AuthProtocol,
    "SHA512": usmHMAC384SHA512AuthProtocol,
}
PRIV_PROTOCOLS: dict[str, tuple[int, ...]] = {
    "DES": usmDESPrivProtocol,
    "3DES": usm3DESEDEPrivProtocol,
    "AES": usmAesCfb128Protocol,
    "AES128": usmAesCfb128Protocol,
    "AES192": usmAesCfb192Protocol,
    "AES256": usmAesCfb256Protocol,
    # Key localisation as in Cisco IOS ("Blumenthal" draft).
    "AES192C": usmAesBlumenthalCfb192Protocol,
    "AES256C": usmAesBlumenthalCfb256Protocol,
}
SECURITY_LEVELS = ("noAuthNoPriv", "authNoPriv", "authPriv")

# Error indications that mean "the agent refused who we are", not "nothing answered".
_AUTH_INDICATIONS: tuple[type[errind.ErrorIndication], ...] = (
    errind.UnknownUserName,
    errind.UnknownSecurityName,
    errind.WrongDigest,
    errind.DecryptionError,
    errind.AuthenticationError,
    errind.AuthenticationFailure,
    errind.UnsupportedSecurityLevel,
    errind.UnsupportedAuthProtocol,
    errind.UnsupportedPrivProtocol,
    errind.NotInTimeWindow,
    errind.UnknownCommunityName,
    errind.NoSuchView,
    errind.NoAccessEntry,
    errind.NoGroupName,
    errind.NotInView,
)
# Error statuses (RFC 3416) meaning the credentials lack the right, not a bad object.
_AUTH_STATUSES = {"noAccess", "authorizationError"}

_MISSING = (NoSuchInstance, NoSuchObject, EndOfMibView)

# Loop time by which the driver call in progress (in this task) must be answered.
_CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "hafence_snmp_call_deadline", default=None
)


_VIEW: view.MibViewController | None = None
_VIEW_LOCK = threading.Lock()


class _NoMibCompiler:
    """Stands in for pysmi: we address objects by numeric OID only, so a missing MIB
    module is an error, never a reason to parse MIB files (0.3 s of parser setup)."""

    def compile(self, *names: str, **_: Any) -> dict[str, str]:
        return dict.fromkeys(names, "missing")


class _MibRunner:
    """What pysnmp's MIB loader calls as ``runpy.run_path``, with each file compiled once.

    pysnmp compiles every MIB module of every new ``SnmpEngine`` from source, twice:
    its reader looks for a legacy ``NAME.pyc`` beside ``NAME.py`` (never in
    ``__pycache__``), and then, unless Python runs with -O, it executes the file with
    ``runpy.run_path`` "to enable break points", which compiles it again. That was
    most of an engine's set-up, 100 ms and more on a busy machine, inside a fence
    call's time bound. The MIB files are part of the installed package and do not
    change while we run: their code objects are kept per path.
    """

    def __init__(self) -> None:
        self.code: dict[str, Any] = {}

    def run_path(self, path: str, init_globals: dict[str, Any] | None = None) -> dict[str, Any]:
        code = self.code.get(path)
        if code is None:
            with open(path, encoding="utf-8") as f:
                code = self.code[path] = compile(f.read(), path, "exec")
        namespace = {**(init_globals or {}), "__name__": "<run_path>", "__file__": path}
        exec(code, namespace)
        return namespace


def _cache_compiled_mibs() -> None:
    """Install :class:`_MibRunner` in pysnmp's MIB loader, and cache what its reader
    compiles (the reader's code object is unused when the runner runs the file)."""
    if isinstance(builder.runpy, _MibRunner):
        return
    builder.runpy = _MibRunner()  # type: ignore[assignment]
    read = builder.DirMibSource.read
    cache: dict[tuple[str, str], Any] = {}

    def cached_read(source: builder.DirMibSource, name: str) -> Any:
        key = (source.full_path(), name)
        if key not in cache:
            cache[key] = read(source, name)
        return cache[key]

    builder.DirMibSource.read = cached_read  # type: ignore[method-assign]


def _shared_mib_view() -> view.MibViewController:
    """One MIB view per process (pysnmp would build one per engine); read-only once
    loaded, and only pysnmp's bundled base MIBs are ever needed."""
    global _VIEW
    with _VIEW_LOCK:  # engines are built in threads: one builds it, the others wait
        if _VIEW is None:
            _VIEW = _build_mib_view()
    return _VIEW


def _build_mib_view() -> view.MibViewController:
    _cache_compiled_mibs()
    mib_builder = builder.MibBuilder()
    sources = mib_builder.get_mib_sources()
    mib_builder.set_mib_compiler(_NoMibCompiler(), sources[0].full_path())
    mib_builder.set_mib_sources(*sources)  # set_mib_compiler added a source: undo
    mib_view = view.MibViewController(mib_builder)
    # The first resolution loads the base MIBs: do it now, not inside the first
    # request's time bound.
    ObjectIdentity("1.3.6.1.2.1.1.1.0").resolve_with_mib(mib_view)
    return mib_view


def _new_engine() -> SnmpEngine:
    engine = SnmpEngine()
    # hlapi looks its MIB view up under this key of the engine's cache.
    engine.cache["mibViewController"] = _shared_mib_view()
    return engine


def is_missing(value: Any) -> bool:
    """True for noSuchObject / noSuchInstance / endOfMibView answers."""
    return isinstance(value, _MISSING)


@dataclass(frozen=True)
class Credentials:
    """SNMP credentials: a community (v1/v2c) or a USM user (v3)."""

    version: str  # "1", "2c" or "3"
    community: Secret | None = None
    username: str | None = None
    auth_key: Secret | None = None
    auth_protocol: str = "SHA"
    priv_key: Secret | None = None
    priv_protocol: str = "AES"
    security_level: str = "authPriv"

    def auth_data(self) -> CommunityData | UsmUserData:
        if self.version in ("1", "2c"):
            assert self.community is not None
            return CommunityData(self.community.reveal(), mpModel=0 if self.version == "1" else 1)
        assert self.username is not None
        if self.security_level == "noAuthNoPriv":
            return UsmUserData(self.username)
        assert self.auth_key is not None
        auth = {
            "authKey": self.auth_key.reveal(),
            "authProtocol": AUTH_PROTOCOLS[self.auth_protocol],
        }
        if self.security_level == "authNoPriv":
            return UsmUserData(self.username, **auth)
        assert self.priv_key is not None
        return UsmUserData(
            self.username,
            privKey=self.priv_key.reveal(),
            privProtocol=PRIV_PROTOCOLS[self.priv_protocol],
            **auth,
        )


class SnmpClient:
    """GET/SET/walk against one agent; raises hafence fence errors."""

    def __init__(
        self,
        host: str,
        port: int,
        credentials: Credentials,
        *,
        timeout: float,
        retries: int = 2,
        context: str = "",
        label: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.credentials = credentials
        self.timeout = timeout
        self.retries = max(retries, 0)
        self.context = context
        self.label = label or f"{host}:{port}"
        self._engine: SnmpEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the engine's socket's loop
        self._target: UdpTransportTarget | Udp6TransportTarget | None = None
        self._auth: CommunityData | UsmUserData | None = None
        _shared_mib_view()  # costly once per process: pay it here, not in a request's bound

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @contextlib.contextmanager
    def one_call(self) -> Iterator[None]:
        """Requests inside share one deadline, ``timeout`` from now (nested: the outer
        one holds), so a multi-request driver action answers within the fencer's bound,
        which runs from the start of the call too."""
        if _CALL_DEADLINE.get() is not None:
            yield
            return
        token = _CALL_DEADLINE.set(asyncio.get_running_loop().time() + self.timeout)
        try:
            yield
        finally:
            _CALL_DEADLINE.reset(token)

    def _deadline(self) -> float:
        own = asyncio.get_running_loop().time() + self.timeout
        call = _CALL_DEADLINE.get()
        return own if call is None else min(own, call)

    async def _session(self) -> tuple[SnmpEngine, Any, Any]:
        loop = asyncio.get_running_loop()
        if self._engine is not None and self._loop is not loop:
            self._drop_engine()
        if self._engine is None:
            # An engine loads its MIBs (and the first one the shared view's): 0.1-0.3 s
            # of CPU, over a second on a busy machine. Built in a thread, so the loop
            # (another device's fence, the CRM's round) is not held up meanwhile.
            engine = await asyncio.to_thread(_new_engine)
            if self._engine is None:  # (a concurrent call of this client may have won)
                self._engine, self._loop = engine, loop
                self._auth = self.credentials.auth_data()
        if self._target is None:
            per_try = self.timeout / (self.retries + 1)
            cls = UdpTransportTarget
            try:
                if ipaddress.ip_address(self.host).version == 6:
                    cls = Udp6TransportTarget
            except ValueError:
                pass  # a host name: resolved by pysnmp (IPv4)
            try:  # resolving a host name is part of the request's bound too
                async with asyncio.timeout_at(self._deadline()):
                    self._target = await cls.create(
                        (self.host, self.port), timeout=per_try, retries=self.retries
                    )
            except TimeoutError:
                raise self._timed_out("resolve its address") from None
            except Exception as exc:  # name resolution failed and the like
                raise UnreachableError(
                    f"cannot reach SNMP agent {self.where}: {exc}", device=self.label
                ) from None
        return self._engine, self._auth, self._target

    def _timed_out(self, what: str) -> UnreachableError:
        hint = " (agent down, wrong address/port, or wrong community)"
        if self.credentials.version == "3":
            hint = " (agent down or wrong address/port)"
        return UnreachableError(
            f"no SNMP response from {self.where} within {self.timeout:g}s to {what}{hint}",
            device=self.label,
        )

    async def _bounded(self, what: str, request: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout_at(self._deadline()):
                return await request
        except TimeoutError:
            raise self._timed_out(what) from None

    def _context(self) -> ContextData:
        return ContextData(contextName=self.context) if self.context else ContextData()

    def _check(self, what: str, indication: Any, status: Any, index: Any, binds: Sequence) -> None:
        if indication:
            text = str(indication)
            if isinstance(indication, errind.RequestTimedOut):
                raise self._timed_out(what)
            if isinstance(indication, _AUTH_INDICATIONS):
                raise AuthError(
                    f"SNMP agent {self.where} refused the credentials for {what}: {text}",
                    device=self.label,
                )
            raise DeviceError(f"SNMP {what} on {self.where} failed: {text}", device=self.label)
        if status:
            name = status.prettyPrint()
            i = int(index)
            oid = str(binds[i - 1][0]) if 0 < i <= len(binds) else "?"
            cls: type[FenceError] = AuthError if name in _AUTH_STATUSES else DeviceError
            hint = ""
            if what.startswith("SET") and (
                cls is AuthError or (name == "noSuchName" and self.credentials.version == "1")
            ):  # SNMPv1 reports a refused write as noSuchName too
                hint = " (do these credentials have write access?)"
            raise cls(f"SNMP {what} on {self.where}: {name} at {oid}{hint}", device=self.label)

    async def get(self, *oids: str) -> list[tuple[str, Any]]:
        """GET the OIDs; missing objects come back as noSuch* values (see is_missing)."""
        engine, auth, target = await self._session()
        binds = [ObjectType(ObjectIdentity(o)) for o in oids]
        what = "GET " + " ".join(oids)
        ind, status, index, out = await self._bounded(
            what, get_cmd(engine, auth, target, self._context(), *binds, lookupMib=False)
        )
        self._check(what, ind, status, index, out)
        return [(str(o), v) for o, v in out]

    async def set(self, oid: str, value: Any) -> Any:
        """SET one OID; returns the value the agent echoed."""
        engine, auth, target = await self._session()
        bind = ObjectType(ObjectIdentity(oid), value)
        ind, status, index, out = await self._bounded(
            f"SET {oid}", set_cmd(engine, auth, target, self._context(), bind, lookupMib=False)
        )
        self._check(f"SET {oid}", ind, status, index, out)
        return out[0][1] if out else None

    async def walk(self, column: str) -> AsyncIterator[tuple[tuple[int, ...], Any]]:
        """Walk one table column: yields (index suffix, value) in OID order."""
        engine, auth, target = await self._session()
        prefix = tuple(int(x) for x in column.split("."))
        start = ObjectType(ObjectIdentity(column))
        ctx = self._context()
        opts = {"lexicographicMode": False, "lookupMib": False}
        if self.credentials.version == "1":  # no GETBULK in SNMPv1
            rows = walk_cmd(engine, auth, target, ctx, start, **opts)
        else:
            rows = bulk_walk_cmd(engine, auth, target, ctx, 0, 25, start, **opts)
        what = f"walk {column}"
        try:
            while True:
                try:  # each page of the walk is one bounded request
                    ind, status, index, out = await self._bounded(what, anext(rows))
                except StopAsyncIteration:
                    return
                if status and status.prettyPrint() == "noSuchName" and not ind:
                    return  # SNMPv1's way of saying end of table
                self._check(what, ind, status, index, out)
                for name, value in out:
                    oid = tuple(name)
                    if oid[: len(prefix)] != prefix or is_missing(value):
                        return
                    yield oid[len(prefix) :], value
        finally:  # also when we stop early or a page timed out
            with contextlib.suppress(Exception):
                await rows.aclose()

    def _drop_engine(self) -> SnmpEngine | None:
        """Forget the engine. One of the running loop is returned for the caller to
        close; one of another loop is closed there."""
        engine, loop, udp = self._engine, self._loop, self._udp()
        self._engine = self._loop = self._target = self._auth = None
        if engine is None or loop is None:
            return None
        with contextlib.suppress(RuntimeError):  # RuntimeError: no loop runs here
            if loop is asyncio.get_running_loop():
                return engine
        if not loop.is_closed():
            loop.call_soon_threadsafe(engine.close_dispatcher)
        elif udp is not None and getattr(udp, "_sock", None) is not None:
            # A closed loop runs nothing any more, not even its transports' close: run
            # the transport's last step here (asyncio has no public call for it).
            udp._call_connection_lost(None)  # type: ignore[attr-defined]
        return None

    def _udp(self) -> asyncio.DatagramTransport | None:
        """The asyncio transport under the engine (once a request opened it)."""
        return getattr(getattr(self._target, "transport", None), "transport", None)

    async def close(self) -> None:
        udp = self._udp()
        engine = self._drop_engine()
        if engine is None:
            return
        try:
            # Stop reading, then let datagrams already read reach the dispatcher: closing
            # it under a queued callback makes pysnmp log "Unregistered transport".
            if udp is not None:
                udp.close()
            await asyncio.sleep(0)
        finally:
            engine.close_dispatcher()
