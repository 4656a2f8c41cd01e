"""Driver parameters: the typed :class:`Param`, and the catalogue of standard ones.

Every driver names the same things the same way, as fence-agents names them, so one
fence.cfg vocabulary (and ``fence_hafence``'s options) fits every device:

==================  ==================================================================
``ip``              address of the device (alias ``ipaddr``)
``ipport``          its TCP/UDP port (never ``port``: in fence-agents ``port`` is the plug)
``username``        user name (alias ``login``)
``password``        password (alias ``passwd``); like every secret also as
                    ``password_file=PATH``, ``password_env=VARIABLE``,
                    ``password_script=COMMAND``
``plug``            the target on the device: outlet, switch port, system (alias ``port``)
timing              ``timeout``, ``power_timeout``, ``power_wait``, ``poll_interval``,
                    ``delay``, ``delay_max`` (:data:`COMMON_PARAMS`: every driver has them)
==================  ==================================================================

A driver takes an entry with :func:`standard` (its own help, default, ``required``...);
the conformance kit fails a driver that uses one of these names, or an alias of one, for
another parameter. A name a driver used before the catalogue stays accepted through
``Param.deprecated``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from hafence.cfgtext import bad_character
from hafence.errors import ParamError
from hafence.secrets import SECRET_SOURCES, Secret

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


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
    # Old names still accepted, each with a deprecation warning (logged once per process
    # and shown by ``hafence config check``); unlike aliases, never shown as valid names.
    deprecated: tuple[str, ...] = ()

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


# -- the catalogue ----------------------------------------------------------------
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

IP = Param("ip", str, aliases=("ipaddr",), help="Address of the device (IP or host name)")
IPPORT = Param("ipport", int, help="TCP or UDP port of the device")
USERNAME = Param("username", str, aliases=("login",), help="User name on the device")
PASSWORD = Param(
    "password",
    str,
    secret=True,
    aliases=("passwd",),
    help="Password (or password_file=PATH / password_env=VARIABLE / password_script=COMMAND)",
)
PLUG = Param(
    "plug", str, aliases=("port",), help="Target on the device: outlet, switch port, system"
)

#: The standard parameters by name: what a driver takes through :func:`standard`.
STANDARD: dict[str, Param] = {p.name: p for p in (IP, IPPORT, USERNAME, PASSWORD, PLUG)}
STANDARD.update({p.name: p for p in COMMON_PARAMS})
#: Every standard name and alias -> its standard parameter's name.
STANDARD_NAMES: dict[str, str] = {
    n: p.name for p in STANDARD.values() for n in (p.name, *p.aliases)
}
#: The secret sources of a secret ``X``: ``X_file``, ``X_env``, ``X_script``.
SECRET_SUFFIXES = tuple(f"_{s}" for s in SECRET_SOURCES)
# Why an old name went away, where there is more to say than "use the new one".
_DEPRECATION_REASONS = {"port": "in fence-agents 'port' means the plug"}


def standard(name: str, type: type | None = None, *, also: tuple[str, ...] = (),
             **changes: Any) -> Param:  # fmt: skip
    """The catalogue's parameter ``name`` for one driver: ``type`` (a PDU's outlet
    number is an ``int`` plug), more aliases (``also``) and any other :class:`Param`
    field (``required``, ``default``, ``help``, ``deprecated``...) of its own."""
    base = STANDARD[name]
    if type is not None:
        changes["type"] = type
    if also:
        changes["aliases"] = (*base.aliases, *also)
    return dataclasses.replace(base, **changes)


def deprecation_message(old: str, new: str, driver: str) -> str:
    """The warning for an old parameter name."""
    why = _DEPRECATION_REASONS.get(old)
    return (f"'{old}' is deprecated for driver '{driver}', write '{new}'"
            + (f" ({why})" if why else ""))  # fmt: skip


def standard_misuse(params: tuple[Param, ...]) -> list[str]:
    """Parameters that use a standard name (or alias) for something else: each as a
    sentence naming the parameter and the standard one (the kit's ``standard_params``)."""
    out = []
    for p in params:
        for n in (p.name, *p.aliases):
            std = STANDARD_NAMES.get(n)
            if std is None:
                continue
            if std != p.name:
                role = "" if n == p.name else f" (alias '{n}')"
                out.append(
                    f"parameter '{p.name}'{role}: '{n}' is the standard name of '{std}'"
                    + (f" ({_DEPRECATION_REASONS[n]})" if n in _DEPRECATION_REASONS else "")
                )
            elif p.secret != STANDARD[std].secret:
                out.append(f"parameter '{p.name}': the standard '{std}' is "
                           + ("secret" if STANDARD[std].secret else "not secret"))  # fmt: skip
    return out
