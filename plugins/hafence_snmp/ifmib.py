"""``snmp_ifmib``: fence by disabling a switch port through IF-MIB ``ifAdminStatus``.

off = SET ifAdminStatus.<ifIndex> down(2), on = up(1), status reads it back
(up -> on, down -> off, testing -> unknown). The port (``plug``) is an ifIndex, an
ifName or an ifDescr, as in ClusterLabs' ``fence_ifmib``; ``ifIndex:N``, ``ifName:X``
and ``ifDescr:X`` force one kind (e.g. a port literally named "1"). A name is resolved
once per driver instance by walking ifName, then ifDescr, and cached; every later
request reads the name back at that ifIndex (in the same PDU as the status), so a
switch that re-numbered its interfaces never gets a SET meant for another port.

Every action (all its SNMP requests together) is bounded below the fencer's
``timeout`` (see ``client``): no answer is :class:`UnreachableError`, refused
credentials :class:`AuthError`, a missing or unwritable port :class:`DeviceError`
naming the port.

Option names follow fence_ifmib (ip, ipport, community, snmp_version, username,
password, snmp_auth_prot, snmp_sec_level, snmp_priv_prot, snmp_priv_passwd, plug).
There is no native reboot: the fencer composes off, verify, on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from pysnmp.proto.rfc1902 import Integer

from hafence.errors import AuthError, DeviceError, ParamError
from hafence.fence.driver import FABRIC, FenceDriver, Param, Port, PowerState
from hafence.fence.params import standard
from hafence_snmp.client import (
    AUTH_PROTOCOLS,
    PRIV_PROTOCOLS,
    SECURITY_LEVELS,
    Credentials,
    SnmpClient,
    is_missing,
)

log = logging.getLogger("hafence.snmp")

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_ALIAS = "1.3.6.1.2.1.31.1.1.1.18"

ADMIN_UP, ADMIN_DOWN, ADMIN_TESTING = 1, 2, 3
_STATE = {ADMIN_UP: PowerState.ON, ADMIN_DOWN: PowerState.OFF}
_KINDS = {"ifindex": "ifIndex", "ifname": "ifName", "ifdescr": "ifDescr"}


class IfMibDriver(FenceDriver):
    name = "snmp_ifmib"
    kind = FABRIC
    description = (
        "Switch port through SNMP IF-MIB: off = ifAdminStatus down(2), on = up(1) "
        "(SNMP v1, v2c, v3 via pysnmp)"
    )
    actions: ClassVar[frozenset[str]] = frozenset({"status", "off", "on", "list", "monitor"})
    params: ClassVar[tuple[Param, ...]] = (
        standard("ip", required=True, help="Switch address"),
        standard("ipport", default=161, help="SNMP UDP port"),
        standard(
            "plug",
            required=True,
            help="Switch port: ifIndex, ifName or ifDescr (prefix ifIndex:/ifName:/ifDescr: "
            "to force one)",
        ),
        Param("snmp_version", str, default="2c", choices=("1", "2c", "3"), help="SNMP version"),
        Param("community", str, secret=True, help="SNMP v1/v2c community (needs write access)"),
        standard("username", help="SNMPv3 user (security name)"),
        standard("password", help="SNMPv3 auth password"),
        Param(
            "snmp_auth_prot",
            str,
            default="SHA",
            choices=tuple(AUTH_PROTOCOLS),
            help="SNMPv3 authentication protocol",
        ),
        Param(
            "snmp_sec_level",
            str,
            choices=SECURITY_LEVELS,
            help="SNMPv3 security level (default: from the passwords given)",
        ),
        Param(
            "snmp_priv_prot",
            str,
            default="AES",
            choices=tuple(PRIV_PROTOCOLS),
            help="SNMPv3 privacy (encryption) protocol",
        ),
        Param("snmp_priv_passwd", str, secret=True, help="SNMPv3 privacy password"),
        Param("snmp_context", str, default="", help="SNMPv3 context name (usually empty)"),
        Param(
            "snmp_retries",
            int,
            default=2,
            help="Retransmissions within 'timeout' (each try gets timeout/(retries+1))",
        ),
    )

    def __init__(self, options: Mapping[str, Any], *, label: str | None = None) -> None:
        super().__init__(options, label=label)
        o = self.options
        self.plug: str = o["plug"].strip()
        if not self.plug:
            raise ParamError("plug", "must name a port (ifIndex, ifName or ifDescr)")
        self._kind, self._key = _parse_plug(self.plug)
        timeout = o["timeout"]
        if timeout is None or timeout <= 0:
            raise ParamError("timeout", "must be a positive number of seconds")
        if o["snmp_retries"] < 0:
            raise ParamError("snmp_retries", "must not be negative")
        # Answer before the fencer's own bound on the call (which is 'timeout'), so
        # an unreachable switch is reported as unreachable, not as a bare timeout; the
        # margin also absorbs a busy event loop.
        margin = min(max(0.2 * timeout, 0.5), 0.5 * timeout)
        self.client = SnmpClient(
            o["ip"],
            o["ipport"],
            _credentials(o),
            timeout=timeout - margin,
            retries=o["snmp_retries"],
            context=o["snmp_context"],
            label=self.label,
        )
        self._index: int | None = int(self._key) if self._kind == "ifIndex" else None
        self._column: str | None = None  # the name column _index was resolved through

    # -- port resolution --------------------------------------------------------------
    async def if_index(self) -> int:
        """The ifIndex of ``plug``: resolved by name on first use, then cached.

        A cached resolution is checked with one GET of the name at that index, so a
        switch that re-numbered its interfaces (reboot, new line card) never gets a
        SET aimed at what is now another port.
        """
        if self._index is not None and self._column is not None:
            with self._about_port(self._index):
                ((_, name),) = await self.client.get(f"{self._column}.{self._index}")
            if _text(name) == self._key:
                return self._index
            self._stale()
        if self._index is None:
            self._index, self._column = await self._resolve()
        return self._index

    def _stale(self) -> None:
        log.warning(
            "%s: port '%s' is no longer ifIndex %s, resolving it again",
            self.label, self.plug, self._index,
        )  # fmt: skip
        self._index = self._column = None

    async def _resolve(self) -> tuple[int, str]:
        kinds = [self._kind] if self._kind else ["ifName", "ifDescr"]
        near: list[str] = []  # same name but for case: offered in the error, never used
        for kind in kinds:
            column = IF_NAME if kind == "ifName" else IF_DESCR
            names = {
                idx[0]: _text(value)
                async for idx, value in self.client.walk(column)
                if len(idx) == 1
            }
            found = [i for i, name in names.items() if name == self._key]
            if len(found) > 1:
                raise DeviceError(
                    f"port '{self.plug}' is ambiguous: {kind} matches ifIndex "
                    f"{', '.join(map(str, found))}; use ifIndex:N",
                    device=self.label,
                )
            if found:
                log.debug("%s: port '%s' is ifIndex %d (%s)", self.label, self.plug, found[0], kind)
                return found[0], column
            near += [n for n in names.values() if n.casefold() == self._key.casefold()]
        hint = (
            f"; did you mean {' or '.join(repr(n) for n in dict.fromkeys(near))}?" if near else ""
        )
        raise DeviceError(
            f"port '{self.plug}' not found on {self.client.where} "
            f"(no {' or '.join(kinds)} with that value{hint})",
            device=self.label,
        )

    def _port_desc(self, index: int) -> str:
        return f"port '{self.plug}'" + ("" if self._kind == "ifIndex" else f" (ifIndex {index})")

    @contextlib.contextmanager
    def _about_port(self, index: int) -> Iterator[None]:
        """Device and access errors (noSuchName, noAccess...) name the port concerned."""
        try:
            yield
        except (DeviceError, AuthError) as exc:
            raise type(exc)(f"{self._port_desc(index)}: {exc.message}", device=self.label) from None

    # -- actions ----------------------------------------------------------------------
    async def _read_admin(self) -> tuple[int, Any]:
        index, column = self._index, self._column
        if index is not None and column is not None:
            # Cached name: read it back in the same request as the status (one round trip).
            with self._about_port(index):
                (_, name), (_, value) = await self.client.get(
                    f"{column}.{index}", f"{IF_ADMIN_STATUS}.{index}"
                )
            if _text(name) == self._key:
                return index, value
            self._stale()
        index = await self.if_index()
        with self._about_port(index):
            ((_, value),) = await self.client.get(f"{IF_ADMIN_STATUS}.{index}")
        return index, value

    async def status(self) -> PowerState:
        with self.client.one_call():
            index, value = await self._read_admin()
        if is_missing(value):
            raise DeviceError(
                f"{self._port_desc(index)}: no ifAdminStatus.{index} on {self.client.where} "
                "(no such interface)",
                device=self.label,
            )
        try:
            admin = int(value)
        except (TypeError, ValueError):
            raise DeviceError(
                f"{self._port_desc(index)}: ifAdminStatus is not an integer: {value!r}",
                device=self.label,
            ) from None
        return _STATE.get(admin, PowerState.UNKNOWN)

    async def _set_admin(self, wanted: int) -> None:
        index = await self.if_index()
        oid = f"{IF_ADMIN_STATUS}.{index}"
        with self._about_port(index):
            echoed = await self.client.set(oid, Integer(wanted))
        if is_missing(echoed) or echoed is None:
            raise DeviceError(
                f"{self._port_desc(index)}: agent refused SET ifAdminStatus.{index}="
                f"{wanted} (not writable or no such interface)",
                device=self.label,
            )
        try:
            same = int(echoed) == wanted
        except (TypeError, ValueError):
            same = False
        if not same:
            raise DeviceError(
                f"{self._port_desc(index)}: agent answered ifAdminStatus={echoed} to SET {wanted}",
                device=self.label,
            )

    async def off(self) -> None:
        with self.client.one_call():  # resolving the port and the SET share the bound
            await self._set_admin(ADMIN_DOWN)

    async def on(self) -> None:
        with self.client.one_call():
            await self._set_admin(ADMIN_UP)

    async def list(self) -> list[Port]:
        columns: dict[str, dict[int, Any]] = {}
        with self.client.one_call():
            for key, oid in (
                ("descr", IF_DESCR),
                ("name", IF_NAME),
                ("alias", IF_ALIAS),
                ("admin", IF_ADMIN_STATUS),
            ):
                walk = self.client.walk(oid)
                columns[key] = {idx[0]: v async for idx, v in walk if len(idx) == 1}
        ports = []
        for index in sorted(set(columns["descr"]) | set(columns["admin"])):
            admin = columns["admin"].get(index)
            ports.append(
                Port(
                    id=str(index),
                    name=_text(columns["name"].get(index)) or _text(columns["descr"].get(index)),
                    alias=_text(columns["alias"].get(index)),
                    state=_STATE.get(int(admin), PowerState.UNKNOWN)
                    if admin is not None
                    else PowerState.UNKNOWN,
                )
            )
        return ports

    async def monitor(self) -> None:
        """The switch answers (sysDescr, sysUpTime) and the port's status is readable."""
        with self.client.one_call():
            values = await self.client.get(SYS_DESCR, SYS_UPTIME)
            if all(is_missing(v) for _, v in values):
                raise DeviceError(
                    f"{self.client.where} answers but has no sysDescr/sysUpTime",
                    device=self.label,
                )
            await self.status()

    async def close(self) -> None:
        await self.client.close()


def _parse_plug(plug: str) -> tuple[str | None, str]:
    kind, sep, rest = plug.partition(":")
    if sep and kind.lower() in _KINDS:
        kind = _KINDS[kind.lower()]
        if kind == "ifIndex" and not rest.isdigit():
            raise ParamError("plug", f"ifIndex must be a number, got {rest!r}")
        return kind, rest
    if plug.isdigit():
        return "ifIndex", plug
    return None, plug


def _credentials(o: Mapping[str, Any]) -> Credentials:
    version = o["snmp_version"]
    if version in ("1", "2c"):
        if o["community"] is None:
            raise ParamError("community", f"required for SNMP version {version}")
        return Credentials(version, community=o["community"])
    if not o["username"]:
        raise ParamError("username", "required for SNMP version 3")
    level = o["snmp_sec_level"]
    if level is None:  # derive from what was given, like net-snmp's defaults would not
        level = (
            "authPriv"
            if o["snmp_priv_passwd"] is not None
            else "authNoPriv"
            if o["password"] is not None
            else "noAuthNoPriv"
        )
    if level != "noAuthNoPriv" and o["password"] is None:
        raise ParamError("password", f"required for snmp_sec_level={level}")
    if level == "authPriv" and o["snmp_priv_passwd"] is None:
        raise ParamError("snmp_priv_passwd", "required for snmp_sec_level=authPriv")
    for field in ("password", "snmp_priv_passwd"):
        secret = o[field]
        if secret is not None and len(secret.reveal()) < 8:
            raise ParamError(field, "SNMPv3 passwords must be at least 8 characters")
    return Credentials(
        "3",
        username=o["username"],
        auth_key=o["password"],
        auth_protocol=o["snmp_auth_prot"],
        priv_key=o["snmp_priv_passwd"],
        priv_protocol=o["snmp_priv_prot"],
        security_level=level,
    )


def _text(value: Any) -> str:
    if value is None or is_missing(value):
        return ""
    try:
        return bytes(value.asOctets()).decode("utf-8", errors="replace")
    except AttributeError:
        return str(value)
