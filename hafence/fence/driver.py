"""The fence driver contract.

A driver is a plain class: a ``name``, a typed parameter schema (:class:`Param`) and
async actions on one target (a BMC, a switch port, a PDU outlet...). The driver only
*asks* the device; the fencer owns delays, time bounds, retries and the off-then-verify
loop, so no driver can report a fence as done without a confirmed off.

Every driver also accepts the :data:`COMMON_PARAMS` (timeouts, delays), which the
fencer reads from the same options. A secret parameter ``X`` may instead be given as
``X_file=PATH``, ``X_env=VARIABLE`` or ``X_script=COMMAND`` (its first output line) so
that no password needs to sit in a config file or on a command line.
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from hafence.cfgtext import bad_character
from hafence.errors import NotSupportedError, ParamError, SecretError
from hafence.secrets import MASK, SECRET_SOURCES, Secret, secret_from_source

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


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


# Bounds of a value whose Param declares none: no count, index or port of a fence device
# is negative or beyond 2**31, and no time bound exceeds a day (a bigger one is a typo that
# would stall a fence just like ``inf``).
INT_RANGE = (0, 2**31 - 1)
PORT_RANGE = (1, 65535)
SECONDS_RANGE = (0.0, 86400.0)
_PORT_NAMES = frozenset({"port", "ipport", "udpport", "tcpport"})
_INT_TEXT = re.compile(r"^[+-]?[0-9]{1,20}$|^0[xX][0-9a-fA-F]{1,16}$")
_FLOAT_TEXT = re.compile(r"^[+-]?([0-9]{1,20}(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$")


class _Flag:
    """A bare ``key`` without ``=value`` (fence.cfg, ``-o key``): a boolean's True, for
    any other parameter a missing value."""

    def __repr__(self) -> str:
        return "FLAG"


FLAG: Any = _Flag()


@dataclass(frozen=True)
class Param:
    """One driver parameter: its type, whether it is required, its default, if secret.

    ``min``/``max`` bound an int or float value (inclusive). Without them an int is
    0..2**31-1 (a parameter named ``port``/``ipport``: 1..65535) and a float (seconds)
    0..86400. A float is always finite.
    """

    name: str
    type: type = str
    required: bool = False
    default: Any = None
    secret: bool = False
    help: str = ""
    choices: tuple[str, ...] = ()
    # Alternative names, e.g. fence-agents' "ipaddr" for "ip" or "login" for "username".
    aliases: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.type not in (str, int, float, bool):
            raise TypeError(f"Param {self.name}: type must be str, int, float or bool")

    @property
    def type_name(self) -> str:
        return {str: "string", int: "integer", float: "second", bool: "boolean"}[self.type]

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The inclusive (low, high) range of a number, None for strings and booleans."""
        if self.type is int:  # by its own name: "port" is an outlet's alias elsewhere
            lo, hi = PORT_RANGE if self.name in _PORT_NAMES else INT_RANGE
        elif self.type is float:
            lo, hi = SECONDS_RANGE
        else:
            return None
        return (lo if self.min is None else self.min, hi if self.max is None else self.max)

    def coerce(self, raw: Any) -> Any:
        """Convert a raw value (usually a string from a config file) to the param type.

        Raises :class:`ParamError` naming the parameter: a flag without a value for a
        non-boolean, a number that is not finite or outside :attr:`bounds`, a value not in
        ``choices``, a control character in a string, an empty secret or required string.
        """
        if raw is FLAG:
            if self.type is not bool:
                raise ParamError(self.name, f"needs a value ({self.name}=VALUE), not a bare flag")
            raw = True
        if self.secret:
            return self._secret(raw)
        if isinstance(raw, Secret):
            raise ParamError(self.name, "is not a secret parameter")
        value = self._convert(raw)
        bounds = self.bounds
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise ParamError(self.name, f"{value!r} out of range ({bounds[0]:g}..{bounds[1]:g})")
        # The fence-agent bridge passes one option per stdin line, and a device must see
        # what the file says: no line breaks or other control characters.
        bad = bad_character(value) if isinstance(value, str) else None
        if bad is not None:
            raise ParamError(self.name, f"must not contain {bad}")
        if value == "" and self.required:
            raise ParamError(self.name, "must not be empty (it is required)")
        if self.choices and str(value) not in self.choices:
            raise ParamError(self.name, f"must be one of {', '.join(self.choices)}, got {value!r}")
        return value

    def _convert(self, raw: Any) -> Any:
        bad = ParamError(self.name, f"expected {self.type_name}, got {_show(raw)}")
        if self.type is bool:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, (str, int)):
                text = str(raw).strip().lower()
                if text in _TRUE:
                    return True
                if text in _FALSE:
                    return False
            raise bad
        if isinstance(raw, bool):  # True is an int in Python, never in a config file
            raise bad
        if self.type is int:
            if isinstance(raw, int):
                return raw
            if isinstance(raw, str) and _INT_TEXT.match(raw.strip()):
                text = raw.strip()
                return int(text, 16) if text[:2] in ("0x", "0X") else int(text, 10)
            raise bad
        if self.type is float:
            if isinstance(raw, int):
                return float(raw)
            if isinstance(raw, float) and math.isfinite(raw):
                return raw
            if isinstance(raw, str) and _FLOAT_TEXT.match(raw.strip()):
                value = float(raw.strip())
                if math.isfinite(value):
                    return value
            raise ParamError(self.name, f"expected a finite number of seconds, got {_show(raw)}")
        if isinstance(raw, str):
            return raw
        if isinstance(raw, int):
            return str(raw)
        raise bad

    def _secret(self, raw: Any) -> Secret:
        if isinstance(raw, Secret):
            value = raw.reveal()
        elif isinstance(raw, str):
            value = raw
        else:
            raise ParamError(self.name, "expected a string (the secret itself)")
        if not value:
            raise ParamError(self.name, "is empty")
        bad = bad_character(value)
        if bad is not None:
            raise ParamError(self.name, f"must not contain {bad}")
        return raw if isinstance(raw, Secret) else Secret(value)


def _show(raw: Any) -> str:
    """A rejected value for an error message: its repr, cut short."""
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


# Options every driver accepts; the fencer, not the driver, acts on most of them.
COMMON_PARAMS: tuple[Param, ...] = (
    Param(
        "timeout",
        float,
        default=10.0,
        min=0.01,
        max=3600.0,
        help="Time bound of one request to the device",
    ),
    Param(
        "power_timeout",
        float,
        default=20.0,
        max=3600.0,
        help="How long to poll status for the target to reach the requested state",
    ),
    Param(
        "power_wait",
        float,
        default=0.0,
        max=3600.0,
        help="Wait this long after a power command before the first status poll",
    ),
    Param(
        "poll_interval",
        float,
        default=0.2,
        min=0.01,
        max=60.0,
        help="Interval between status polls",
    ),
    Param(
        "delay",
        float,
        default=0.0,
        max=3600.0,
        help="Fixed delay before 'off', so two nodes fencing each other do not both win",
    ),
    Param(
        "delay_max",
        float,
        default=0.0,
        max=3600.0,
        help="Random extra delay (0..delay_max) added to 'delay'",
    ),
)

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


class FenceDriver(abc.ABC):
    """Base class of fence drivers. Subclasses set ``name`` and ``params``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    # Actions the driver implements itself; 'reboot' missing means the fencer composes it.
    actions: ClassVar[frozenset[str]] = frozenset({"status", "off", "on", "monitor"})
    # POWER only for a device whose confirmed off means the target lost its power; a
    # driver that does not say is FABRIC, the safe default (recovery waits for the lease).
    kind: ClassVar[str] = FABRIC

    def __init__(self, options: Mapping[str, Any], *, label: str | None = None) -> None:
        self.options: dict[str, Any] = self.validate(options)
        #: How this device is named in logs and errors (fence.cfg device name).
        self.label = label or self.name

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
        return schema

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
            out[canon] = schema.params[canon].coerce(raw)
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

    # -- display --------------------------------------------------------------------
    def public_options(self) -> dict[str, Any]:
        """Options with secrets masked, for logs and status output."""
        return {k: (MASK if isinstance(v, Secret) else v) for k, v in self.options.items()}

    def __repr__(self) -> str:
        opts = " ".join(f"{k}={v}" for k, v in self.public_options().items() if v is not None)
        return f"<{type(self).__name__} {self.label} {opts}>"
