"""Fencing: driver contract, fence.cfg, per-node chains, the fencer and its history.

Public API (stable; the CLI and the CRM build on it)::

    from hafence.fence import (
        load_fence_config, parse_fence_config, write_fence_config, FenceConfig,
        Level, ChainDevice, build_driver, check_drivers, driver_class,
        Fencer, FenceResult, ActionResult, CheckReport, DeviceCheck,
        FenceHistory, FenceRecord,
    )

fence.cfg (``hafence.fence.config``)
    ``load_fence_config(path) -> FenceConfig``; ``parse_fence_config(text, path)``.
    Errors: ``FenceConfigErrors`` (a ``ConfigErrors``; ``.errors`` are ``ConfigError``
    with ``.file``, ``.line``, ``.field``), all errors of the file in one pass.
    ``FenceConfig.nodes()``, ``.chain(node) -> list[Level]``, ``.subdevice("NAME:N")``,
    ``.add_device(label, driver, args)``, ``.connect(label, node, args)``,
    ``.to_text()``, ``.render_commands(nodes, reveal_secrets=False)`` (Proxmox's
    per-try command view; secrets masked unless asked).
    ``write_fence_config(cfg, path)``: atomic (temp + fsync + os.replace), mode 0600.

chains (``hafence.fence.chain``, ``hafence.fence.check``)
    ``Level(number, name, devices)``: ``number`` is 1-based; all ``devices`` must
    confirm. ``ChainDevice``: one sub-device for one node (``.label``, ``.driver``,
    ``.options()``, ``.command()``). ``build_driver(spec, registry=None) ->
    FenceDriver`` validates options against the driver's Param schema and raises
    ``ConfigError`` naming file, line, field. DRIVER is a hafence driver or a
    ClusterLabs ``fence_*`` agent (answered by the ``hafence_fence_agent_driver`` hook).
    ``check_drivers(cfg, registry=None)`` builds every device for every node without
    contacting any and raises ``FenceConfigErrors`` listing all option errors; it
    returns the drivers' warnings (deprecated names, secrets on a command line).
    Reprs of config objects mask credential values.

parameters (``hafence.fence.params``, ``hafence.fence.driver``)
    ``Param`` (typed, ranged, secret, aliases, deprecated names); the catalogue of
    standard ones, named as fence-agents names them: ``standard("ip"|"ipport"|
    "username"|"password"|"plug"|timing, ...)``; ``COMMON_PARAMS`` (timing).

fencer (``hafence.fence.fencer``: the chain; ``hafence.fence.engine``: one device)
    ``Fencer(config, registry=None, history=None, *, retries=2, backoff=1.0,
    backoff_max=30.0, actor=hostname, rng=None, clock=SYSTEM_CLOCK)``.
    ``await fencer.fence(node, action="off"|"reboot"|"on") -> FenceResult``
    (``.ok`` only after a whole level confirmed; ``.level`` 1-based, ``.attempts``,
    ``.error_kind``, ``.to_dict()``/``.to_json()``).
    ``await fencer.check(node) -> CheckReport`` (dry run: monitor + status on every
    device, nothing powered off; ``.budget_seconds`` worst case of ``fence``).
    ``await fencer.run_device(driver, action, node=None) -> ActionResult``
    (status/off/on/reboot/list/monitor on one driver, off/on verified by polling).
    Results (``hafence.fence.results``) are dataclasses; ``error_kind`` is a
    ``FenceError.kind`` or ``config_error`` / ``no_device``.

time (``hafence.fence.clock``)
    The fencer's every wait goes through a ``Clock`` that follows its event loop:
    ``ThreadLoop`` (a real loop in a thread, the daemons) or ``VirtualLoop`` (virtual
    time, advanced by its owner with ``run_until``: the simulator, timing tests).

history (``hafence.fence.history``)
    ``FenceHistory(path=None, max_bytes=1 MiB)``: JSON lines, fsync'ed, mode 0600,
    rotates to ``PATH.1``; default ``$HAFENCE_STATE_DIR/fence-history.jsonl`` (else
    /var/lib/hafence). ``.append(FenceRecord)``, ``.records(node=None, limit=None)``,
    ``.last(node)``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use (PEP 562): a one-shot command that needs the fencer must not pay
# for fence.cfg checking, the history or the store behind them.
_WHERE = {
    "ChainDevice": "chain",
    "Level": "chain",
    "build_driver": "chain",
    "driver_class": "chain",
    "check_drivers": "check",
    "Clock": "clock",
    "LoopClock": "clock",
    "ThreadLoop": "clock",
    "VirtualLoop": "clock",
    "FenceConfig": "config",
    "FenceConfigErrors": "config",
    "load_fence_config": "config",
    "parse_fence_config": "config",
    "write_fence_config": "config",
    "FenceDriver": "driver",
    "Port": "driver",
    "PowerState": "driver",
    "DeviceEngine": "engine",
    "Fencer": "fencer",
    "FenceHistory": "history",
    "FenceRecord": "history",
    "default_history_path": "history",
    "Param": "params",
    "standard": "params",
    "ActionResult": "results",
    "AttemptResult": "results",
    "CheckReport": "results",
    "DeviceCheck": "results",
    "FenceResult": "results",
    "LevelResult": "results",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from hafence.fence.chain import ChainDevice, Level, build_driver, driver_class
    from hafence.fence.check import check_drivers
    from hafence.fence.clock import Clock, LoopClock, ThreadLoop, VirtualLoop
    from hafence.fence.config import (
        FenceConfig,
        FenceConfigErrors,
        load_fence_config,
        parse_fence_config,
        write_fence_config,
    )
    from hafence.fence.driver import FenceDriver, Port, PowerState
    from hafence.fence.engine import DeviceEngine
    from hafence.fence.fencer import Fencer
    from hafence.fence.history import FenceHistory, FenceRecord, default_history_path
    from hafence.fence.params import Param, standard
    from hafence.fence.results import (
        ActionResult,
        AttemptResult,
        CheckReport,
        DeviceCheck,
        FenceResult,
        LevelResult,
    )

__all__ = [
    "ActionResult",
    "AttemptResult",
    "ChainDevice",
    "CheckReport",
    "Clock",
    "DeviceCheck",
    "DeviceEngine",
    "FenceConfig",
    "FenceConfigErrors",
    "FenceDriver",
    "FenceHistory",
    "FenceRecord",
    "FenceResult",
    "Fencer",
    "Level",
    "LevelResult",
    "LoopClock",
    "Param",
    "Port",
    "PowerState",
    "ThreadLoop",
    "VirtualLoop",
    "build_driver",
    "check_drivers",
    "default_history_path",
    "driver_class",
    "load_fence_config",
    "parse_fence_config",
    "standard",
    "write_fence_config",
]
