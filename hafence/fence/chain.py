"""A node's fence chain: ordered levels of devices, and turning them into drivers.

A *level* is one device name of fence.cfg: all its sub-devices connected to the node
(``power:1`` and ``power:2`` for dual power supplies) must confirm off for the level to
succeed. Levels are tried in declaration order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hafence.errors import ConfigError, ConfigWarning, ParamError, UnknownDriverError
from hafence.fence.config import (
    Arg,
    FenceConfig,
    FenceConfigErrors,
    SubDevice,
    is_secret_key,
    masked_args,
    shell_quote,
)
from hafence.fence.driver import FLAG
from hafence.secrets import MASK

if TYPE_CHECKING:
    from hafence.fence.driver import FenceDriver
    from hafence.plugins import PluginRegistry

# Options fence.cfg may carry for ClusterLabs agents that the fencer itself owns, and
# the values Proxmox's configs give them (the fencer chooses the action per call).
FENCER_OWNED = frozenset({"action"})
FENCER_ACTIONS = ("off", "reboot")

BRIDGE_DRIVER = "fence_agent"


@dataclass(frozen=True)
class ChainDevice:
    """One sub-device of a level, with the arguments for one node merged."""

    node: str
    device: str  # fence.cfg device name
    index: int  # sub-device number (1 when not given)
    driver: str  # hafence driver name or fence_* agent
    device_args: tuple[Arg, ...]
    connect_args: tuple[Arg, ...]
    file: str | None = None
    device_line: int = 0
    connect_line: int = 0
    label: str = ""  # name in logs: "NAME" alone, "NAME:N" for parallel sub-devices

    @property
    def args(self) -> tuple[Arg, ...]:
        return self.device_args + self.connect_args

    def __repr__(self) -> str:
        return (
            f"ChainDevice(node={self.node!r}, label={self.label!r}, driver={self.driver!r}, "
            f"args={masked_args(self.args)!r})"
        )

    def options(self) -> dict[str, Any]:
        """Driver options: a bare flag is :data:`FLAG` (True for a boolean, an error for
        any other parameter); fencer-owned keys are checked and dropped. Raises
        :class:`ParamError`."""
        out: dict[str, Any] = {}
        for key, value in self.args:
            if key in FENCER_OWNED:
                if value not in FENCER_ACTIONS:
                    raise ParamError(key, f"must be one of {', '.join(FENCER_ACTIONS)}")
                continue
            out[key] = FLAG if value is None else value
        return out

    def command(self, *, reveal_secrets: bool = False) -> str:
        """The fence-agents style command line (``fence_x --ip=... -x``), for display.

        Values of credential keys show as ``******`` unless ``reveal_secrets``.
        """
        words = [self.driver]
        for key, value in self.args:
            prefix = "-" if len(key) == 1 else "--"
            if value is None or value == "":
                words.append(prefix + key)
                continue
            shown = shell_quote(value) if reveal_secrets or not is_secret_key(key) else MASK
            words.append(f"{prefix}{key}={shown}")
        return " ".join(words)


@dataclass(frozen=True)
class Level:
    """One level of a node's chain: every device in it must confirm off."""

    number: int  # 1-based position in the node's chain (as in logs)
    name: str
    devices: tuple[ChainDevice, ...]


def node_chain(cfg: FenceConfig, node: str) -> list[Level]:
    """The levels that can fence ``node``, in order; empty if no device reaches it."""
    levels: list[Level] = []
    for dev in cfg.devices.values():
        members = []
        for sub in dev.sorted_subdevices():
            conn = sub.connections.get(node)
            if conn is None:
                continue
            label = sub.label if len(dev.subdevices) > 1 else dev.name
            members.append(
                ChainDevice(
                    node=node,
                    device=dev.name,
                    index=sub.index,
                    driver=sub.driver,
                    device_args=tuple(sub.args),
                    connect_args=tuple(conn.args),
                    file=cfg.path,
                    device_line=sub.line,
                    connect_line=conn.line,
                    label=label,
                )
            )
        if members:
            levels.append(Level(len(levels) + 1, dev.name, tuple(members)))
    return levels


def render_tries(cfg: FenceConfig, nodes: Iterable[str], reveal_secrets: bool = False) -> str:
    """Proxmox's test view: per try (level, from 0), the commands each node gets.

    Stops after the first try where no node has a command left.
    """
    nodes = list(nodes)
    chains = {n: node_chain(cfg, n) for n in nodes}
    out: list[str] = []
    attempt = 0
    while True:
        out.append(f"[try] {attempt}")
        any_cmd = False
        for n in nodes:
            chain = chains[n]
            if attempt < len(chain):
                any_cmd = True
                for d in chain[attempt].devices:
                    out.append(f"[{n}-cmd] {d.command(reveal_secrets=reveal_secrets)}")
            else:
                out.append(f"[{n}-cmd] none")
        if not any_cmd:
            break
        attempt += 1
    return "\n".join(out) + "\n"


def driver_class(name: str, registry: PluginRegistry | None = None) -> type[FenceDriver]:
    """A hafence driver by name, or the fence_agent bridge for a ClusterLabs ``fence_*``.

    Raises :class:`UnknownDriverError`.
    """
    if registry is None:
        from hafence.plugins import get_registry

        registry = get_registry()
    try:  # imports only the plugin providing it (see hafence.plugins)
        return registry.fence_driver(name)
    except UnknownDriverError as exc:
        if not name.startswith("fence_") or name == BRIDGE_DRIVER:
            raise
        unknown = exc
    try:
        bridge: Any = registry.fence_driver(BRIDGE_DRIVER)
    except UnknownDriverError:
        bridge = None
    if not hasattr(bridge, "for_agent"):
        raise unknown
    return bridge.for_agent(name)


def build_driver(spec: ChainDevice, registry: PluginRegistry | None = None) -> FenceDriver:
    """Instantiate and validate the driver of one chain device.

    Raises :class:`ConfigError` naming the fence.cfg file, line and field.
    """
    try:
        cls = driver_class(spec.driver, registry)
    except UnknownDriverError as exc:
        raise ConfigError(str(exc), file=spec.file, line=spec.device_line, field="driver") from None
    try:
        return cls(spec.options(), label=spec.label)
    except ParamError as exc:
        connect_keys = {k for k, _ in spec.connect_args}
        line = spec.connect_line if exc.field in connect_keys else spec.device_line
        raise ConfigError(exc.message, file=spec.file, line=line, field=exc.field) from None
    except Exception as exc:  # a driver bug; its text could hold a secret, so only the type
        raise ConfigError(
            f"driver '{spec.driver}' failed on these options ({type(exc).__name__}); "
            "this is a bug in the driver",
            file=spec.file,
            line=spec.device_line,
            field="driver",
        ) from None


def check_drivers(cfg: FenceConfig, registry: PluginRegistry | None = None) -> list[ConfigWarning]:
    """Build every device for every node it is connected to, without contacting any;
    a device connected to no node is checked with its own arguments (a required option
    may still come from a ``connect`` line added later).

    Raises :class:`FenceConfigErrors` with every driver/option error (file, line, field).
    Returns the warnings the drivers have about their options (e.g. a fence agent that
    would put a password on a command line), each naming file, line and field.
    """
    errors: list[ConfigError] = []
    warnings: list[ConfigWarning] = []
    seen: set[tuple[str, int | None, str | None]] = set()
    specs = [(spec, False) for n in cfg.nodes() for lv in node_chain(cfg, n) for spec in lv.devices]
    specs += [(_unconnected(cfg, sub), True) for sub in _unconnected_subdevices(cfg)]
    for spec, partial in specs:
        try:
            driver = build_driver(spec, registry)
        except ConfigError as exc:
            if partial and _missing_required(spec, exc, registry):
                continue
            key = (str(exc), exc.line, exc.field)
            if key not in seen:
                seen.add(key)
                errors.append(exc)
            continue
        for fld, message in _driver_warnings(driver):
            warning = ConfigWarning(message, spec.file, spec.device_line, fld)
            if warning not in warnings:
                warnings.append(warning)
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        raise FenceConfigErrors(cfg.path or "fence.cfg", errors)
    return sorted(warnings, key=lambda w: w.line or 0)


def _unconnected_subdevices(cfg: FenceConfig) -> list[SubDevice]:
    return [s for d in cfg.devices.values() for s in d.sorted_subdevices() if not s.connections]


def _unconnected(cfg: FenceConfig, sub: SubDevice) -> ChainDevice:
    return ChainDevice(
        node="",
        device=sub.name,
        index=sub.index,
        driver=sub.driver,
        device_args=tuple(sub.args),
        connect_args=(),
        file=cfg.path,
        device_line=sub.line,
        label=sub.label,
    )


def _missing_required(spec: ChainDevice, exc: ConfigError, registry: PluginRegistry | None) -> bool:
    """Whether ``exc`` only says a required option is missing (for a device connected
    to no node, that option may belong on its future ``connect`` lines)."""
    try:
        params = driver_class(spec.driver, registry).all_params()
    except UnknownDriverError:
        return False
    given = {k for k, _ in spec.args}
    return any(
        p.required and exc.field == p.name and not given & {p.name, *p.aliases} for p in params
    )


def _driver_warnings(driver: FenceDriver) -> list[tuple[str, str]]:
    """``(field, message)`` pairs a driver reports through an optional
    ``config_warnings()`` method (the fence-agent bridge has one)."""
    method = getattr(driver, "config_warnings", None)
    return list(method()) if callable(method) else []
