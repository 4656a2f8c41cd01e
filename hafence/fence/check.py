"""Checking a whole fence.cfg against the drivers, without contacting any device.

``hafence config check``, ``ha-manager fence-config import`` and the master's fence runner
use it: every option error of every device in one report (file, line, field), and the
warnings the drivers have about their options (deprecated names, secrets that would
reach a command line).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hafence.errors import ConfigError, ConfigWarning, UnknownDriverError
from hafence.fence.chain import ChainDevice, build_driver, driver_class, node_chain
from hafence.fence.config import FenceConfig, FenceConfigErrors, SubDevice

if TYPE_CHECKING:
    from hafence.plugins import PluginRegistry


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
        connect_keys = {k for k, _ in spec.connect_args}
        for fld, message in driver.config_warnings():
            line = spec.connect_line if fld in connect_keys else spec.device_line
            warning = ConfigWarning(message, spec.file, line, fld)
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
