"""The fence driver contract.

A driver is a plain class: a ``name``, a typed parameter schema (:class:`Param`) and
async actions on one target (a BMC, a switch port, a PDU outlet...). The driver only
*asks* the device; the fencer owns delays, time bounds, retries and the off-then-verify
loop, so no driver can report a fence as done without a confirmed off.

Parameters (:class:`Param`) and the catalogue of standard ones (``ip``, ``ipport``,
``username``, ``password``, ``plug`` and the timing ones) live in
:mod:`hafence.fence.params`. Every driver also accepts the :data:`COMMON_PARAMS`
(timeouts, delays), which the fencer reads from the same options. A secret parameter
``X`` may instead be given as ``X_file=PATH``, ``X_env=VARIABLE`` or ``X_script=COMMAND``
(its first output line) so that no password needs to sit in a config file or on a
command line.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from hafence.errors import NotSupportedError, ParamError, SecretError
from hafence.fence.params import (
    COMMON_PARAMS,
    FLAG,
    INT_RANGE,
    PORT_RANGE,
    SECONDS_RANGE,
    Param,
    deprecation_message,
)
from hafence.secrets import MASK, SECRET_SOURCES, Secret, secret_from_source

__all__ = [  # Param and the common parameters are re-exported: drivers import them here
    "ACTIONS",
    "COMMON_PARAMS",
    "FLAG",
    "INT_RANGE",
    "PORT_RANGE",
    "SECONDS_RANGE",
    "FenceDriver",
    "Param",
    "Port",
    "PowerState",
]

log = logging.getLogger("hafence.fence")
_WARNED: set[tuple[str, str]] = set()  # (driver, old name): deprecations logged so far


class PowerState(StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Port:
    """One target a device can act on (an outlet, a switch port, a BMC)."""

    id: str
    name: str = ""
    alias: str = ""
    state: PowerState = PowerState.UNKNOWN


ACTIONS: tuple[str, ...] = ("status", "off", "on", "reboot", "list", "monitor")

# What a confirmed 'off' of a device means (docs/fencing.md): POWER cuts the target's
# power (a BMC, a PDU outlet, a relay), so the node has stopped; FABRIC cuts it off (a
# switch port, a SAN zone) and it may run on, so only its watchdog can stop it.
POWER = "power"
FABRIC = "fabric"
KINDS = (POWER, FABRIC)


@dataclass
class _Schema:
    params: dict[str, Param] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # name or alias -> canonical
    old: dict[str, str] = field(default_factory=dict)  # deprecated name -> canonical


class FenceDriver(abc.ABC):
    """Base class of fence drivers. Subclasses set ``name`` and ``params``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    # Actions the driver implements itself; 'reboot' missing means the fencer composes it.
    # POWER only for a device whose confirmed off means the target lost its power; a
    # driver that does not say is FABRIC, the safe default (recovery waits for the lease).
    kind: ClassVar[str] = FABRIC
    actions: ClassVar[frozenset[str]] = frozenset({"status", "off", "on", "monitor"})
    # True when the device confirms off/on itself before answering (a ClusterLabs agent
    # polls status): the fencer still verifies, and bounds those calls by bound().
    self_verifying: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any], *, label: str | None = None) -> None:
        self.options: dict[str, Any] = self.validate(options)
        #: How this device is named in logs and errors (fence.cfg device name).
        self.label = label or self.name
        #: ``(old name as given, its message)`` for each deprecated name in ``options``
        self.deprecations: list[tuple[str, str]] = self.deprecated_names(options)
        for old, message in self.deprecations:
            if (self.name, old) not in _WARNED:  # once per process: a fence runs often
                _WARNED.add((self.name, old))
                log.warning("device '%s': %s", self.label, message)

    # -- schema ---------------------------------------------------------------------
    @classmethod
    def all_params(cls) -> tuple[Param, ...]:
        own = {p.name for p in cls.params}
        return tuple(cls.params) + tuple(p for p in COMMON_PARAMS if p.name not in own)

    @classmethod
    def _schema(cls) -> _Schema:
        schema = _Schema()
        for p in cls.all_params():
            schema.params[p.name] = p
            for n in (p.name, *p.aliases):
                schema.names[n] = p.name
            for n in p.deprecated:
                schema.names.setdefault(n, p.name)
                schema.old[n] = p.name
        return schema

    @classmethod
    def deprecated_names(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(key, warning)`` for every key of ``options`` that is a deprecated name
        (or a secret source of one, ``X_file``...)."""
        schema = cls._schema()
        out = []
        for key in options:
            base, _, src = key.rpartition("_")
            old = key if key in schema.old else base if src in SECRET_SOURCES else None
            if old in schema.old and schema.names.get(key) in (None, schema.old[old]):
                new = schema.old[old] + key[len(old) :]
                out.append((key, deprecation_message(key, new, cls.name)))
        return out

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Check and coerce options: unknown and missing names are errors, secrets wrapped.

        Raises :class:`ParamError` naming the offending field.
        """
        schema = cls._schema()
        out: dict[str, Any] = {}
        for key, raw in options.items():
            canon = schema.names.get(key)
            if canon is None:
                base, _, src = key.rpartition("_")
                canon = schema.names.get(base) if src in SECRET_SOURCES else None
                if canon is None or not schema.params[canon].secret:
                    raise ParamError(key, f"unknown parameter for driver '{cls.name}'")
                if raw is FLAG:
                    raise ParamError(key, f"needs a value ({key}=...), not a bare flag")
                try:
                    raw = secret_from_source(src, raw)
                except SecretError as exc:
                    raise ParamError(key, str(exc)) from None
            if canon in out:
                raise ParamError(key, f"given twice (as '{canon}' too)")
            try:
                out[canon] = schema.params[canon].coerce(raw)
            except ParamError as exc:  # name the field as it was written (alias, old name)
                if key == canon or exc.field != canon:
                    raise
                raise ParamError(key, exc.message) from None
        for p in schema.params.values():
            if p.name not in out:
                if p.required:
                    raise ParamError(p.name, f"required by driver '{cls.name}'")
                out[p.name] = p.coerce(p.default) if p.default is not None else None
        return out

    # -- actions --------------------------------------------------------------------
    @abc.abstractmethod
    async def status(self) -> PowerState:
        """Read the target's power state."""

    @abc.abstractmethod
    async def off(self) -> None:
        """Ask the device to power the target off (the fencer verifies)."""

    @abc.abstractmethod
    async def on(self) -> None:
        """Ask the device to power the target on."""

    async def reboot(self) -> None:
        """A device-native reboot. Absent by default: the fencer does off, verify, on."""
        raise NotSupportedError(f"{self.name}: no native reboot", device=self.label)

    async def list(self) -> list[Port]:
        """The targets this device can act on."""
        raise NotSupportedError(f"{self.name}: cannot list ports", device=self.label)

    async def monitor(self) -> None:
        """Check the device is reachable and the credentials work; raise otherwise."""
        await self.status()

    async def close(self) -> None:
        """Release sessions and sockets."""

    async def __aenter__(self) -> FenceDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def bound(self, action: str) -> float:
        """How long one call of ``action`` may take: ``timeout``, plus ``power_wait`` and
        ``power_timeout`` for an off/on/reboot of a self-verifying driver."""
        timeout = float(self.options.get("timeout") or 10.0)
        if self.self_verifying and action in ("off", "on", "reboot"):
            timeout += float(self.options.get("power_wait") or 0.0)
            timeout += float(self.options.get("power_timeout") or 20.0)
        return timeout

    def config_warnings(self) -> list[tuple[str, str]]:
        """``(option, message)`` pairs about these options that ``hafence config check``
        shows: deprecated names here; a driver adds its own (calling this one)."""
        return list(self.deprecations)

    # -- display --------------------------------------------------------------------
    def public_options(self) -> dict[str, Any]:
        """Options with secrets masked, for logs and status output."""
        return {k: (MASK if isinstance(v, Secret) else v) for k, v in self.options.items()}

    def __repr__(self) -> str:
        opts = " ".join(f"{k}={v}" for k, v in self.public_options().items() if v is not None)
        return f"<{type(self).__name__} {self.label} {opts}>"
