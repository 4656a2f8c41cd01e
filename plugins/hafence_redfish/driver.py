"""The ``redfish`` fence driver: a BMC's ComputerSystem over Redfish, through sushy.

off = ``ComputerSystem.Reset`` ForceOff, on = On, status = the system's PowerState
(re-read on every call), native reboot (``method=cycle``) = ForceRestart, diag = Nmi. The system
is chosen by Redfish Id, by Name or by path (``system``); without it the BMC must
have exactly one. Option names follow ClusterLabs' ``fence_redfish`` (ip, ipport,
ssl, ssl_insecure, username/login, password/passwd, systems_uri).

sushy (OpenStack's Redfish library, the ``redfish`` extra) is synchronous: calls run
in a worker thread with sushy's own connect/read time-outs, and the whole action is
bounded slightly under the fencer's ``timeout``. sushy's retries are turned down to
one attempt: the fencer owns retries. One sushy connection (basic auth, or a Redfish
session with ``auth=session``/``auto`` when the BMC offers one) is kept per driver
and dropped after a connection error.

Errors: 401/403 -> :class:`AuthError`; no connection, TLS refused or no answer ->
:class:`UnreachableError`; anything else the BMC answers (404 system, 400 reset
type, 5xx) -> :class:`DeviceError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from hafence.errors import (
    AuthError,
    DeviceError,
    FenceError,
    NotSupportedError,
    ParamError,
    UnreachableError,
)
from hafence.fence.driver import POWER, FenceDriver, Param, Port, PowerState
from hafence.fence.params import standard

log = logging.getLogger("hafence.redfish")

T = TypeVar("T")
SYSTEMS = "/Systems"
INSTALL_HINT = "the redfish driver needs the 'sushy' library: pip install 'hafence[redfish]'"


def _sushy() -> Any:
    """The sushy module, or a clear error naming the extra to install."""
    try:
        import sushy
    except ImportError:
        raise ParamError("driver", INSTALL_HINT) from None
    return sushy


class RedfishDriver(FenceDriver):
    name: ClassVar[str] = "redfish"
    kind: ClassVar[str] = POWER
    description: ClassVar[str] = (
        "Redfish BMC power control through sushy: ComputerSystem.Reset ForceOff / On / "
        "ForceRestart, status from PowerState; system by Id, Name or the only one; TLS "
        "verification with a CA file or off"
    )
    # 'diag' is an extra (ResetType Nmi); 'reboot' is added per instance by method.
    actions: ClassVar[frozenset[str]] = frozenset(
        {"status", "off", "on", "monitor", "list", "diag"}
    )
    params: ClassVar[tuple[Param, ...]] = (
        standard("ip", required=True, help="BMC address or host name"),
        # 'port' was an alias here; in fence-agents it is the plug
        standard("ipport", help="BMC HTTP(S) port (default 443 / 80)", deprecated=("port",)),
        Param("ssl", bool, default=True, help="Use HTTPS (the default); ssl=0 for plain HTTP"),
        Param(
            "ssl_insecure",
            bool,
            default=False,
            help="Do not verify the BMC's TLS certificate (self-signed BMCs)",
        ),
        Param("ca_file", str, help="Verify the BMC's certificate against this CA bundle"),
        standard("username", default="", help="BMC user name"),
        standard("password", help="BMC password (or password_file=PATH / password_env=VARIABLE)"),
        standard(
            "plug",
            aliases=("system", "systems_uri"),  # not 'port': the deprecated ipport above
            help="ComputerSystem: Id, Name or path (/redfish/v1/Systems/ID); "
            "default: the BMC's only system",
        ),
        Param("redfish_uri", str, default="/redfish/v1", help="Redfish service root"),
        Param(
            "auth",
            str,
            default="auto",
            choices=("auto", "basic", "session"),
            help="auto = a Redfish session if the BMC offers one, else HTTP basic auth",
        ),
        Param(
            "method",
            str,
            default="onoff",
            choices=("onoff", "cycle"),
            help="Reboot method: onoff = off, confirmed off, on (the safe default); "
            "cycle = the BMC's ForceRestart",
        ),
    )

    def __init__(self, options: Mapping[str, Any], *, label: str | None = None) -> None:
        super().__init__(options, label=label)
        _sushy()  # fail at configuration time, not during a fence
        o = self.options
        if o["timeout"] is None or o["timeout"] <= 0:
            raise ParamError("timeout", "must be a positive number of seconds")
        if o["ssl_insecure"] and o["ca_file"]:
            raise ParamError("ca_file", "given together with ssl_insecure=1: choose one")
        if (o["ssl_insecure"] or o["ca_file"]) and not o["ssl"]:
            raise ParamError("ssl", "TLS options given with ssl=0")
        host = _host(o["ip"])
        port = o["ipport"] or (443 if o["ssl"] else 80)
        self.base_url = f"{'https' if o['ssl'] else 'http'}://{host}:{port}"
        self.root = "/" + o["redfish_uri"].strip("/")
        self.verify: bool | str = (
            False if o["ssl_insecure"] else (o["ca_file"] or True) if o["ssl"] else True
        )
        if o["method"] == "cycle":
            self.actions = frozenset({*type(self).actions, "reboot"})
        self._conn: Any = None
        self._auth: Any = None
        self._system: Any = None
        self._lock = threading.Lock()  # sushy objects are not thread-safe

    @property
    def budget(self) -> float:
        return float(self.options["timeout"]) * 0.9

    # -- sushy plumbing (worker thread) -------------------------------------------------
    def _connect(self) -> Any:
        if self._conn is None:
            sushy = _sushy()
            o = self.options
            password = o["password"].reveal() if o["password"] is not None else None
            auth_cls = {
                "auto": sushy.auth.SessionOrBasicAuth,
                "basic": sushy.auth.BasicAuth,
                "session": sushy.auth.SessionAuth,
            }[o["auth"]]
            self._auth = auth_cls(username=o["username"], password=password)
            self._conn = sushy.Sushy(
                self.base_url + self.root,
                verify=self.verify,
                auth=self._auth,
                # one attempt: retries and their back-off belong to the fencer
                server_side_retries=1,
                server_side_retries_delay=0.01,
                read_timeout=self.budget,
                connect_timeout=self.budget,
            )
        return self._conn

    def _system_path(self, conn: Any) -> str:
        wanted = (self.options["plug"] or "").strip()
        collection = conn.get_system_collection()
        members = list(collection.members_identities)
        if not wanted:
            if len(members) == 1:
                return members[0]
            ids = ", ".join(m.rsplit("/", 1)[-1] for m in members) or "none"
            raise DeviceError(
                f"{self.base_url} has {len(members)} systems ({ids}): set system=ID",
                device=self.label,
            )
        if wanted.startswith("/"):
            return wanted
        for m in members:
            if m.rstrip("/").rsplit("/", 1)[-1] == wanted:
                return m
        names = {}
        for m in members:  # not an Id: try the systems' Names
            names[conn.get_system(m).name] = m
        if wanted in names:
            return names[wanted]
        ids = ", ".join(m.rsplit("/", 1)[-1] for m in members) or "none"
        raise DeviceError(
            f"no system '{wanted}' on {self.base_url} (Ids: {ids})", device=self.label
        )

    def _get_system(self) -> Any:
        conn = self._connect()
        if self._system is None:
            self._system = conn.get_system(self._system_path(conn))
        else:
            self._system.refresh(force=True)
        return self._system

    def _drop(self, *, logout: bool = True) -> None:
        """Forget the connection; log out of its Redfish session first if asked.

        BMCs allow few sessions (iDRAC: a handful), so every session we open is
        closed; not after a connection error, when a logout would only wait again.
        """
        conn, auth = self._conn, self._auth
        self._conn = self._auth = self._system = None
        if conn is None:
            return
        if logout and auth is not None:
            try:
                auth.close()  # DELETE of our session, if one was opened
            except Exception as exc:  # a BMC that cannot take a logout
                log.warning("redfish %s: session logout failed: %s", self.label, exc)
        try:
            conn._conn.close()  # the HTTP connection pool (sushy has no public close)
        except Exception as exc:
            log.debug("redfish %s: close: %r", self.label, exc)

    def _locked(self, what: str, fn: Callable[[], T]) -> T:
        sushy = _sushy()
        exc_ = sushy.exceptions
        with self._lock:
            try:
                return fn()
            except FenceError:
                raise
            except exc_.AccessError as exc:
                self._drop(logout=False)
                raise AuthError(
                    f"{what}: {self.base_url} refused the credentials (HTTP {exc.status_code})",
                    device=self.label,
                ) from None
            except exc_.ConnectionError as exc:
                self._drop(logout=False)
                raise UnreachableError(
                    f"{what}: cannot reach {self.base_url}: {_connection_reason(exc)}",
                    device=self.label,
                ) from None
            except exc_.InvalidParameterValueError as exc:
                raise NotSupportedError(f"{what}: {exc}", device=self.label) from None
            except exc_.SushyError as exc:
                raise DeviceError(f"{what}: {exc}", device=self.label) from None

    async def _run(self, what: str, fn: Callable[[], T]) -> T:
        work = asyncio.to_thread(self._locked, what, fn)
        try:
            return await asyncio.wait_for(work, self.budget)
        except TimeoutError:
            raise UnreachableError(
                f"{what}: no answer from {self.base_url} within {self.budget:.2g}s",
                device=self.label,
            ) from None

    # -- actions ------------------------------------------------------------------------
    async def status(self) -> PowerState:
        return await self._run("status", lambda: _power(self._get_system()))

    def _reset(self, reset_type: str) -> None:
        sushy = _sushy()
        self._get_system().reset_system(sushy.ResetType(reset_type))
        log.debug("redfish %s: %s requested", self.label, reset_type)

    async def off(self) -> None:
        await self._run("off", lambda: self._reset("ForceOff"))

    async def on(self) -> None:
        await self._run("on", lambda: self._reset("On"))

    async def reboot(self) -> None:
        if self.options["method"] != "cycle":
            raise NotSupportedError(
                "redfish: method=onoff reboots as off, confirmed off, on (done by the fencer)",
                device=self.label,
            )

        def native() -> None:
            # A restart does nothing to a system that is off (or the BMC refuses it).
            on = _power(self._get_system()) != PowerState.OFF
            self._reset("ForceRestart" if on else "On")

        await self._run("reboot", native)

    async def diag(self) -> None:
        """A diagnostic interrupt (ResetType Nmi): the OS may dump and reboot."""
        await self._run("diag", lambda: self._reset("Nmi"))

    async def monitor(self) -> None:
        """Reachable, credentials accepted, the system found and its power readable."""
        await self.status()

    async def list(self) -> list[Port]:
        def ports() -> list[Port]:
            conn = self._connect()
            out = []
            for path in conn.get_system_collection().members_identities:
                system = conn.get_system(path)
                out.append(
                    Port(
                        id=path.rstrip("/").rsplit("/", 1)[-1],
                        name=system.name or "",
                        alias=path,
                        state=_power(system),
                    )
                )
            return out

        return await self._run("list", ports)

    async def close(self) -> None:
        await asyncio.to_thread(self._closed)

    def _closed(self) -> None:
        with self._lock:
            self._drop()


def _power(system: Any) -> PowerState:
    value = getattr(system.power_state, "value", system.power_state)
    # Transitional states count as the state the target still is in electrically,
    # so "PoweringOff" never passes for a confirmed off.
    return {
        "On": PowerState.ON,
        "PoweringOff": PowerState.ON,
        "Paused": PowerState.ON,
        "Off": PowerState.OFF,
    }.get(str(value), PowerState.UNKNOWN)


_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252}[A-Za-z0-9_])?$")


def _host(text: str) -> str:
    """The BMC's host for a URL: a host name, an IPv4 address or an IPv6 literal (put
    in brackets); anything else is a ParamError now rather than a failed fence later."""
    host = text.strip()
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in literal:
        try:
            return f"[{ipaddress.IPv6Address(literal)}]"
        except ValueError:
            pass
    elif _HOSTNAME.match(host):
        return host
    raise ParamError("ip", f"must be a host name or address, got {text!r}")


def _connection_reason(exc: Exception) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate not trusted (give ca_file=, or ssl_insecure=1)"
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return "TLS handshake failed (is the port plain HTTP? ssl=0)"
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("No route to host", "no route to host"),
    ):
        if needle in text:
            return reason
    return text
