"""fence.cfg: parse and write Proxmox's fence device configuration.

Syntax (one statement a line, ``#`` starts a comment line, blank lines ignored)::

    device NAME[:N] DRIVER key=value flag ...
    connect NAME[:N] node=NODE key=value ...

Arguments are split like a POSIX shell (``password="12\\"345"`` is ``12"345``). A bare
word is a flag (``ssh``, ``x``); a key given twice on one line is an error, a key of a
``connect`` line overrides the device's. ``NAME:1``, ``NAME:2`` are sub-devices of one device:
together they form one *level* of a node's chain and must all succeed. Distinct names
are levels tried in the order they are first declared.

Errors are collected in one pass and raised together as :class:`FenceConfigErrors`,
whose text matches Proxmox's ``[FenceConfig] Encountered error(s) ...`` report. Bytes
that are not UTF-8 or control characters anywhere (even in a comment) are such an
error too, naming the line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hafence.cfgtext import config_lines, decode_config, read_bytes
from hafence.errors import ConfigError, ConfigErrors
from hafence.fence.args import (
    Arg,
    format_args,
    is_secret_key,
    masked_args,
    parse_args,
    shell_quote,
)
from hafence.fence.chain import Level, node_chain, render_tries

__all__ = [  # the argument helpers are re-exported: callers know them from here
    "Arg",
    "Connection",
    "Device",
    "FenceConfig",
    "FenceConfigErrors",
    "SubDevice",
    "format_args",
    "is_secret_key",
    "load_fence_config",
    "masked_args",
    "parse_args",
    "parse_fence_config",
    "shell_quote",
    "write_fence_config",
]

_STATEMENT = re.compile(r"^(device|connect)\s+(\S+)\s+(\S+)(?:\s+(.*))?$")
_DEVICE_NAME = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)(?::([0-9]{1,9}))?$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


class FenceConfigErrors(ConfigErrors):
    """Every error of one fence.cfg, worded like Proxmox's FenceConfig parser."""

    def __str__(self) -> str:
        lines = [f"[FenceConfig] Encountered error(s) on parsing '{self.file}':"]
        for e in self.errors:
            what = f"{e.field}: " if e.field else ""
            lines.append(f"line {e.line}: {what}{e.message}")
        return "\n".join(lines)


@dataclass
class Connection:
    """``connect NAME:N node=NODE args``: how one sub-device reaches one node."""

    node: str
    args: list[Arg] = field(default_factory=list, repr=False)
    line: int = 0

    def __repr__(self) -> str:
        return f"Connection(node={self.node!r}, args={masked_args(self.args)!r}, line={self.line})"


@dataclass
class SubDevice:
    """``device NAME:N DRIVER args``: one physical device (a BMC, a PDU, a switch)."""

    name: str
    index: int
    driver: str
    args: list[Arg] = field(default_factory=list)
    line: int = 0
    connections: dict[str, Connection] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"SubDevice({self.label!r}, driver={self.driver!r}, "
            f"args={masked_args(self.args)!r}, line={self.line}, "
            f"nodes={sorted(self.connections)!r})"
        )

    @property
    def label(self) -> str:
        return f"{self.name}:{self.index}"


@dataclass
class Device:
    """All sub-devices of one name: one level of every chain it is connected to."""

    name: str
    subdevices: dict[int, SubDevice] = field(default_factory=dict)
    line: int = 0

    def sorted_subdevices(self) -> list[SubDevice]:
        return [self.subdevices[i] for i in sorted(self.subdevices)]


@dataclass
class FenceConfig:
    """A parsed fence.cfg. Devices keep declaration order (= level order)."""

    devices: dict[str, Device] = field(default_factory=dict)
    path: str | None = None

    # -- queries --------------------------------------------------------------------
    def nodes(self) -> list[str]:
        """Every node connected to at least one device, sorted."""
        found = {
            node
            for dev in self.devices.values()
            for sub in dev.subdevices.values()
            for node in sub.connections
        }
        return sorted(found)

    def chain(self, node: str) -> list[Level]:
        """The node's fence chain: levels in order, each with its sub-devices for node."""
        return node_chain(self, node)

    def subdevice(self, label: str) -> SubDevice:
        """Look up ``NAME`` or ``NAME:N`` (KeyError names it)."""
        m = _DEVICE_NAME.match(label)
        if not m or m.group(1) not in self.devices:
            raise KeyError(f"no device '{label}' in fence config")
        dev = self.devices[m.group(1)]
        idx = int(m.group(2) or 1)
        if idx not in dev.subdevices:
            raise KeyError(f"no device '{label}' in fence config")
        return dev.subdevices[idx]

    # -- edits (used by the CLI; they keep the same rules as the parser) -------------
    def add_device(self, label: str, driver: str, args: Iterable[Arg] = ()) -> SubDevice:
        m = _DEVICE_NAME.match(label)
        if not m:
            raise ConfigError(f"invalid device name '{label}'", field="device")
        name, idx = m.group(1), int(m.group(2) or 1)
        args = _checked_args(args)
        dev = self.devices.setdefault(name, Device(name))
        if idx in dev.subdevices:
            raise ConfigError(f"device '{name}:{idx}' already declared", field="device")
        sub = SubDevice(name, idx, driver, args)
        dev.subdevices[idx] = sub
        return sub

    def connect(self, label: str, node: str, args: Iterable[Arg] = ()) -> Connection:
        try:
            sub = self.subdevice(label)
        except KeyError:
            raise ConfigError(
                f"device '{label}' must be declared before you can connect to it", field="device"
            ) from None
        if node in sub.connections:
            raise ConfigError(
                f"node '{node}' already connected to device '{sub.label}'", field="node"
            )
        conn = Connection(node, _checked_args(args))
        sub.connections[node] = conn
        return conn

    # -- output ---------------------------------------------------------------------
    def to_text(self) -> str:
        """fence.cfg text that parses back to an equal config."""
        out: list[str] = []
        for dev in self.devices.values():
            for sub in dev.sorted_subdevices():
                if out:
                    out.append("")
                out.append(f"device {sub.label} {sub.driver} {format_args(sub.args)}".rstrip())
                for conn in sub.connections.values():
                    args = format_args(conn.args)
                    out.append(f"connect {sub.label} node={conn.node} {args}".rstrip())
        return "\n".join(out) + "\n" if out else ""

    def render_commands(
        self, nodes: Iterable[str] | None = None, *, reveal_secrets: bool = False
    ) -> str:
        """Which fence-agents command each node gets on each try (a debugging view).

        Secrets are masked unless ``reveal_secrets=True``; only the comparison with
        Proxmox's reference output asks for cleartext.
        """
        names = list(nodes) if nodes is not None else self.nodes()
        return render_tries(self, names, reveal_secrets)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FenceConfig):
            return NotImplemented
        return _shape(self) == _shape(other)


def _checked_args(args: Iterable[Arg]) -> list[Arg]:
    out = list(args)
    bad = next((k for k, _ in out if not _KEY.match(k)), None)
    if bad is not None:
        raise ConfigError(f"invalid argument '{bad}'", field=bad or "argument")
    twice = _repeated_key(out)
    if twice is not None:
        raise ConfigError("given twice", field=twice)
    return out


def _shape(cfg: FenceConfig) -> list:
    return [
        (
            d.name,
            [
                (s.index, s.driver, s.args, [(c.node, c.args) for c in s.connections.values()])
                for s in d.sorted_subdevices()
            ],
        )
        for d in cfg.devices.values()
    ]


# -- parsing ------------------------------------------------------------------------
def parse_fence_config(text: str | bytes, path: str = "fence.cfg") -> FenceConfig:
    """Parse fence.cfg text (or its bytes); raise :class:`FenceConfigErrors` listing
    every error."""
    try:
        text = decode_config(text, path)
    except ConfigError as exc:
        raise FenceConfigErrors(path, [exc]) from None
    cfg = FenceConfig(path=path)
    errors: list[ConfigError] = []

    def err(lineno: int, message: str, fld: str | None = None) -> None:
        errors.append(ConfigError(message, file=path, line=lineno, field=fld))

    for lineno, raw in enumerate(config_lines(text), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _STATEMENT.match(line)
        if not m:
            err(lineno, f"unable to parse line: {line}")
            continue
        command, label, target, rest = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        try:
            args = parse_args(rest)
        except ValueError as exc:  # shlex: unbalanced quotes or a trailing backslash
            err(lineno, f"bad argument quoting: {exc}")
            continue
        bad_key = next((k for k, _ in args if not _KEY.match(k)), None)
        if bad_key is not None:
            err(lineno, f"invalid argument '{bad_key}'", bad_key or "argument")
            continue
        twice = _repeated_key(args)
        if twice is not None:
            err(lineno, "given twice on this line", twice)
            continue
        nm = _DEVICE_NAME.match(label)
        if not nm:
            err(lineno, f"invalid device name '{label}'", "device")
            continue
        name, idx = nm.group(1), int(nm.group(2) or 1)
        if command == "device":
            dev = cfg.devices.get(name)
            if dev is None:
                dev = cfg.devices[name] = Device(name, line=lineno)
            if idx in dev.subdevices:
                err(lineno, f"device '{name}:{idx}' already declared")
                continue
            dev.subdevices[idx] = SubDevice(name, idx, target, args, lineno)
            continue
        # connect
        dev = cfg.devices.get(name)
        if dev is None:
            err(lineno, f"device '{name}' must be declared before you can connect to it")
            continue
        sub = dev.subdevices.get(idx)
        if sub is None:
            err(lineno, f"No parallel device '{name}:{idx}' found")
            continue
        key, eq, node = target.partition("=")
        if key != "node" or not eq or not _NODE_NAME.match(node):
            err(lineno, f"node=nodename needed to connect device '{name}' to node", "node")
            continue
        if node in sub.connections:
            err(lineno, f"node '{node}' already connected to device '{name}:{idx}'")
            continue
        sub.connections[node] = Connection(node, args, lineno)
    if errors:
        raise FenceConfigErrors(path, errors)
    return cfg


def _repeated_key(args: list[Arg]) -> str | None:
    seen: set[str] = set()
    for key, _ in args:
        if key in seen:
            return key
        seen.add(key)
    return None


def load_fence_config(path: str | os.PathLike[str]) -> FenceConfig:
    """Read and parse a fence.cfg file (UTF-8). A file that cannot be read (missing, a
    directory, a device, too big) is a :class:`ConfigError` naming it."""
    p = os.fspath(path)
    return parse_fence_config(read_bytes(p), str(p))


# -- writing ------------------------------------------------------------------------
def write_fence_config(cfg: FenceConfig, path: str | os.PathLike[str] | None = None) -> None:
    """Write atomically (temp file in the same directory, fsync, os.replace), mode 0600.

    The file holds passwords, so it is never readable by others, not even briefly.
    """
    p = Path(path if path is not None else (cfg.path or "fence.cfg"))
    text = cfg.to_text()
    if parse_fence_config(text, str(p)) != cfg:  # never write what would not read back
        raise ConfigError("config would not read back unchanged; not written", file=str(p))
    # Here, not at the top: importing hafence.store costs every reader of fence.cfg.
    from hafence.store.atomic import write_atomic

    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, text, mode=0o600)
