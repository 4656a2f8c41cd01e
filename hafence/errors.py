"""Error classes shared by every hafence module.

Fence errors carry a machine-readable ``kind`` so the fencer, the CLI (``--output json``)
and the fence history can report *why* an action failed, not only that it did.
"""

from __future__ import annotations

from dataclasses import dataclass


class HafenceError(Exception):
    """Base class of every error hafence raises on purpose."""


class ParamError(HafenceError):
    """A parameter is missing, unknown or of the wrong type."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConfigError(HafenceError):
    """A configuration file is invalid. Names the file, the line and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        elif line is not None:
            where = f"line {line}: "
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")


@dataclass(frozen=True)
class ConfigWarning:
    """Something in a config file that works but is unsafe or surprising (not an error).

    Worded like :class:`ConfigError`: ``file:line: field: message``.
    """

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        return str(ConfigError(self.message, file=self.file, line=self.line, field=self.field))


class ConfigErrors(HafenceError):
    """Several configuration errors found in one pass (a parser reports them all at once)."""

    def __init__(self, file: str, errors: list[ConfigError]) -> None:
        self.file = file
        self.errors = errors
        lines = "\n".join(str(e) for e in errors)
        super().__init__(f"{len(errors)} error(s) in '{file}':\n{lines}")


class SecretError(HafenceError):
    """A secret could not be read from its file, environment variable or script.

    The message says why and never contains the secret (or any part of the file).
    """


class PluginError(HafenceError):
    """A plugin failed to load or returned something that breaks the contract."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin '{plugin}': {message}")
        self.plugin = plugin
        self.message = message


class UnknownDriverError(HafenceError):
    """No loaded plugin provides a driver of that name."""

    def __init__(
        self, kind: str, name: str, available: list[str], *, reason: str | None = None
    ) -> None:
        avail = ", ".join(sorted(available)) or "none"
        why = f": {reason}" if reason else ""
        super().__init__(f"unknown {kind} driver '{name}' (available: {avail}){why}")
        self.name = name


class FenceError(HafenceError):
    """A fence action failed. ``kind`` says why, in one stable word."""

    kind = "failed"

    def __init__(self, message: str, *, device: str | None = None) -> None:
        super().__init__(message)
        self.device = device
        self.message = message


class AuthError(FenceError):
    """The device answered but refused the credentials."""

    kind = "auth_failed"


class UnreachableError(FenceError):
    """The device could not be reached at all (connection refused, no route, no answer)."""

    kind = "unreachable"


class FenceTimeoutError(FenceError):
    """An action did not complete within its time bound."""

    kind = "timeout"


class StillOnError(FenceError):
    """The device accepted 'off' but status never confirmed the target off."""

    kind = "still_on"


class NotSupportedError(FenceError):
    """The driver does not implement that action."""

    kind = "not_supported"


class DeviceError(FenceError):
    """The device answered with an error or something the driver cannot parse."""

    kind = "device_error"


FENCE_ERROR_KINDS: dict[str, type[FenceError]] = {
    cls.kind: cls
    for cls in (
        FenceError,
        AuthError,
        UnreachableError,
        FenceTimeoutError,
        StillOnError,
        NotSupportedError,
        DeviceError,
    )
}
