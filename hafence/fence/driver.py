"""The fence driver contract.

A driver is a plain class: a ``name``, a typed parameter schema (:class:`Param`) and
async actions on one target (a BMC, a switch port, a PDU outlet...). The driver only
*asks* the device; the fencer owns delays, time bounds, retries and the off-then-verify
loop, so no driver can report a fence as done without a confirmed off.

Every driver also accepts the :data:`COMMON_PARAMS` (timeouts, delays), which the
fencer reads from the same options. A secret parameter ``X`` may instead be given as
``X_file=PATH`` or ``X_env=VARIABLE`` so that no password needs to sit in a config
file or on a command line.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from hafence.errors import NotSupportedError, ParamError
from hafence.secrets import MASK, Secret, secret_from_env, secret_from_file

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


@dataclass(frozen=True)
class Param:
    """One driver parameter: its type, whether it is required, its default, if secret."""

    name: str
    type: type = str
    required: bool = False
    default: Any = None
    secret: bool = False
    help: str = ""
    choices: tuple[str, ...] = ()
    # Alternative names, e.g. fence-agents' "ipaddr" for "ip" or "login" for "username".
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in (str, int, float, bool):
            raise TypeError(f"Param {self.name}: type must be str, int, float or bool")

    @property
    def type_name(self) -> str:
        return {str: "string", int: "integer", float: "second", bool: "boolean"}[self.type]

    def coerce(self, raw: Any) -> Any:
        """Convert a raw value (usually a string from a config file) to the param type."""
        if self.secret:
            return Secret(raw)
        if isinstance(raw, Secret):
            raise ParamError(self.name, "is not a secret parameter")
        try:
            if self.type is bool:
                if isinstance(raw, bool):
                    value: Any = raw
                else:
                    text = str(raw).strip().lower()
                    if text in _TRUE:
                        value = True
                    elif text in _FALSE:
                        value = False
                    else:
                        raise ValueError(raw)
            elif self.type is int:
                if isinstance(raw, bool):
                    raise ValueError(raw)
                value = int(str(raw), 0) if isinstance(raw, str) else int(raw)
            elif self.type is float:
                value = float(raw)
            else:
                value = str(raw)
        except (TypeError, ValueError):
            raise ParamError(self.name, f"expected {self.type_name}, got {raw!r}") from None
        if self.choices and str(value) not in self.choices:
            raise ParamError(self.name, f"must be one of {', '.join(self.choices)}, got {value!r}")
        return value


# Options every driver accepts; the fencer, not the driver, acts on most of them.
COMMON_PARAMS: tuple[Param, ...] = (
    Param("timeout", float, default=10.0, help="Time bound of one request to the device"),
    Param(
        "power_timeout",
        float,
        default=20.0,
        help="How long to poll status for the target to reach the requested state",
    ),
    Param(
        "power_wait",
        float,
        default=0.0,
        help="Wait this long after a power command before the first status poll",
    ),
    Param("poll_interval", float, default=0.2, help="Interval between status polls"),
    Param(
        "delay",
        float,
        default=0.0,
        help="Fixed delay before 'off', so two nodes fencing each other do not both win",
    ),
    Param(
        "delay_max", float, default=0.0, help="Random extra delay (0..delay_max) added to 'delay'"
    ),
)

ACTIONS: tuple[str, ...] = ("status", "off", "on", "reboot", "list", "monitor")


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
                canon = schema.names.get(base) if src in ("file", "env") else None
                if canon is None or not schema.params[canon].secret:
                    raise ParamError(key, f"unknown parameter for driver '{cls.name}'")
                try:
                    raw = secret_from_file(raw) if src == "file" else secret_from_env(str(raw))
                except (OSError, KeyError) as exc:
                    raise ParamError(key, str(exc).strip("'\"")) from None
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
