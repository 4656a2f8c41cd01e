"""A node's fence chain: ordered levels of devices, and turning them into drivers.

A *level* is one device name of fence.cfg: all its sub-devices connected to the node
(``power:1`` and ``power:2`` for dual power supplies) must confirm off for the level to
succeed. Levels are tried in declaration order.

This module reads a parsed fence.cfg through the shape it needs (:class:`ChainSource`)
and never imports :mod:`hafence.fence.config`, which builds on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hafence.errors import ConfigError, ParamError, UnknownDriverError
from hafence.fence.args import Arg, is_secret_key, masked_args, shell_quote
from hafence.fence.driver import FLAG
from hafence.secrets import MASK

if TYPE_CHECKING:
    from hafence.fence.driver import FenceDriver
    from hafence.plugins import PluginRegistry


class ChainSource(Protocol):
    """What a chain is read from: a parsed fence.cfg (``hafence.fence.config.FenceConfig``)."""

    path: str | None

    @property
    def devices(self) -> Mapping[str, Any]: ...


# Options fence.cfg may carry for ClusterLabs agents that the fencer itself owns, and
# the values Proxmox's configs give them (the fencer chooses the action per call).
FENCER_OWNED = frozenset({"action"})
FENCER_ACTIONS = ("off", "reboot")


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


def node_chain(cfg: ChainSource, node: str) -> list[Level]:
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


def render_tries(cfg: ChainSource, nodes: Iterable[str], reveal_secrets: bool = False) -> str:
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
    """A hafence driver by name, else a driver for a ClusterLabs ``fence_*`` agent from
    the plugin that implements the ``hafence_fence_agent_driver`` hook.

    Raises :class:`UnknownDriverError`.
    """
    if registry is None:
        from hafence.plugins import get_registry

        registry = get_registry()
    try:  # imports only the plugin providing it (see hafence.plugins)
        return registry.fence_driver(name)
    except UnknownDriverError:
        if not name.startswith("fence_"):
            raise
        agent = registry.fence_agent_driver(name)
        if agent is None:
            raise
        return agent


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
