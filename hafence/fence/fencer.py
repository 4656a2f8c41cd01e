"""The fencer: fences one node through its chain, and never claims an unconfirmed off.

For each attempt the chain's levels are tried in order; the devices of a level act
concurrently and the level succeeds only when *every* one of them confirmed off (each
through the single-device engine, :mod:`hafence.fence.engine`). A failed attempt (no
level succeeded) is retried with exponential back-off. Each attempt is written to the
fence history and announced to plugins (``hafence_fence_event``). All waiting goes
through the injected clock (:mod:`hafence.fence.clock`), so the same code fences on a
daemon's real loop and in the simulator's virtual time.

Logs are one line per decision, naming the node and device, e.g.::

    fence node 'node2': level 1 device 'ipmi2' off failed: unreachable (connection refused)
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from hafence.errors import HafenceError
from hafence.fence.chain import ChainDevice, Level, build_driver
from hafence.fence.clock import SYSTEM_CLOCK, Clock
from hafence.fence.driver import FenceDriver
from hafence.fence.engine import DEVICE_ACTIONS, FENCE_ACTIONS, DeviceEngine, budget
from hafence.fence.history import FenceHistory, FenceRecord
from hafence.fence.results import (
    ActionResult,
    AttemptResult,
    CheckReport,
    DeviceCheck,
    FenceResult,
    LevelResult,
)

if TYPE_CHECKING:
    from hafence.fence.config import FenceConfig
    from hafence.plugins import PluginRegistry

__all__ = [  # the results are re-exported: callers know them from here
    "CONFIG_ERROR_KIND",
    "DEVICE_ACTIONS",
    "FENCE_ACTIONS",
    "NO_DEVICE_KIND",
    "ActionResult",
    "AttemptResult",
    "CheckReport",
    "DeviceCheck",
    "FenceResult",
    "Fencer",
    "LevelResult",
]

_log = logging.getLogger("hafence.fence")

CONFIG_ERROR_KIND = "config_error"
NO_DEVICE_KIND = "no_device"


class Fencer:
    """Fences nodes through their fence.cfg chains.

    ``retries`` extra passes over the whole chain after the first fails, waiting
    ``backoff * 2**(n-1)`` seconds (at most ``backoff_max``) before pass ``n+1``.
    ``actor`` names who fences in logs and history (default: this host's name).
    ``clock`` is where its time comes from (the running loop's, unless told otherwise),
    ``rng`` draws the random part of ``delay_max``, ``log`` gets its decisions.
    """

    def __init__(
        self,
        config: FenceConfig | None = None,
        registry: PluginRegistry | None = None,
        history: FenceHistory | None = None,
        *,
        retries: int = 2,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        actor: str | None = None,
        rng: random.Random | None = None,
        driver_factory: Callable[[ChainDevice], FenceDriver] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        log: logging.Logger = _log,
    ) -> None:
        if retries < 0 or backoff < 0 or backoff_max < 0:
            raise ValueError("retries, backoff and backoff_max must not be negative")
        self.config = config
        self._registry = registry
        self.history = history
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.actor = actor or socket.gethostname()
        self.clock = clock
        self.log = log
        self.engine = DeviceEngine(clock, rng or random.Random(), log)
        self._factory = driver_factory
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def registry(self) -> PluginRegistry:
        if self._registry is None:
            from hafence.plugins import get_registry

            self._registry = get_registry()
        return self._registry

    def backoff_delays(self) -> list[float]:
        """Seconds waited before attempts 2, 3, ...: exponential, capped."""
        return [min(self.backoff * 2**i, self.backoff_max) for i in range(self.retries)]

    def chain(self, node: str) -> list[Level]:
        if self.config is None:
            raise HafenceError("no fence config loaded")
        return self.config.chain(node)

    def build(self, spec: ChainDevice) -> FenceDriver:
        """The driver for one chain device (ConfigError names file, line, field)."""
        if self._factory is not None:
            return self._factory(spec)
        return build_driver(spec, self.registry)

    # -- fence a node ----------------------------------------------------------------
    async def fence(self, node: str, action: str = "off") -> FenceResult:
        """Fence ``node`` (``off``, ``reboot``, or ``on`` to unfence) through its chain.

        Returns ok only when every device of one level confirmed the target state.
        """
        if action not in FENCE_ACTIONS:
            raise ValueError(f"fence action must be one of {', '.join(FENCE_ACTIONS)}")
        lock = self._locks.setdefault(node, asyncio.Lock())
        async with lock:  # one fence per node at a time in this process
            return await self._fence(node, action)

    async def _fence(self, node: str, action: str) -> FenceResult:
        t0 = self.clock.now()
        result = FenceResult(node=node, action=action, ok=False, actor=self.actor)
        levels = self.chain(node)
        if not levels:
            result.error_kind = NO_DEVICE_KIND
            result.message = "no fence device configured for this node"
            self.log.error("fence node '%s': FAILED - %s", node, result.message)
            self._record(result, AttemptResult(1, False, None, started=self.clock.wall()), [])
            return result
        delays = self.backoff_delays()
        total = self.retries + 1
        for n in range(1, total + 1):
            attempt = await self._attempt(node, action, levels, n)
            result.attempts.append(attempt)
            if attempt.ok:
                lv = next(lv for lv in attempt.levels if lv.ok)
                result.ok, result.level, result.level_name = True, lv.level, lv.name
                result.error_kind, result.message = None, ""
                break
            failed = [d for lv in attempt.levels for d in lv.devices if not d.ok]
            result.error_kind = failed[-1].error_kind if failed else "failed"
            result.message = failed[-1].message if failed else ""
            if failed and all(d.error_kind == CONFIG_ERROR_KIND for d in failed):
                self.log.error("fence node '%s': configuration errors, not retrying", node)
                break
            if n < total:
                attempt.backoff = delays[n - 1]
                self.log.error(
                    "fence node '%s': attempt %d/%d failed on every level, retrying in %gs",
                    node,
                    n,
                    total,
                    attempt.backoff,
                )
                await self.clock.sleep(attempt.backoff)
        result.duration = self.clock.now() - t0
        if result.ok:
            self.log.info(
                "fence node '%s': %s confirmed by level %d (%s) after %d attempt(s), %.2fs",
                node,
                action,
                result.level,
                result.level_name,
                len(result.attempts),
                result.duration,
            )
        else:
            self.log.error(
                "fence node '%s': FAILED after %d attempt(s): %s - node is NOT fenced",
                node,
                len(result.attempts),
                result.error_kind,
            )
        return result

    async def _attempt(self, node: str, action: str, levels: list[Level], n: int) -> AttemptResult:
        attempt = AttemptResult(attempt=n, ok=False, level=None, started=self.clock.wall())
        t0 = self.clock.now()
        for level in levels:
            self.log.info(
                "fence node '%s': attempt %d level %d (%s): %s via %s",
                node,
                n,
                level.number,
                level.name,
                action,
                ", ".join(f"'{d.label}'" for d in level.devices),
            )
            lres = await self._run_level(node, action, level)
            attempt.levels.append(lres)
            if lres.ok:
                attempt.ok, attempt.level = True, level.number
                break
            self.log.error("fence node '%s': level %d (%s) failed", node, level.number, level.name)
        attempt.duration = self.clock.now() - t0
        self._record(None, attempt, levels, node=node, action=action)
        return attempt

    async def _run_level(self, node: str, action: str, level: Level) -> LevelResult:
        async def one(spec: ChainDevice) -> ActionResult:
            try:
                driver = self.build(spec)
            except Exception as exc:  # a plugin's constructor may raise anything
                msg = str(exc) if isinstance(exc, HafenceError) else f"{type(exc).__name__}: {exc}"
                self.log.error(
                    "fence node '%s': level %d device '%s' %s failed: %s (%s)",
                    node,
                    level.number,
                    spec.label,
                    action,
                    CONFIG_ERROR_KIND,
                    msg,
                )
                return ActionResult(
                    spec.label,
                    action,
                    False,
                    error_kind=CONFIG_ERROR_KIND,
                    message=msg,
                    driver=spec.driver,
                )
            try:
                return await self.engine.act(driver, action, node=node, level=level.number)
            finally:
                await self.engine.close(driver)

        results = await asyncio.gather(*(one(d) for d in level.devices))
        return LevelResult(level.number, level.name, all(r.ok for r in results), list(results))

    def _record(
        self,
        result: FenceResult | None,
        attempt: AttemptResult,
        levels: list[Level],
        *,
        node: str | None = None,
        action: str | None = None,
    ) -> None:
        devs = [d for lv in attempt.levels for d in lv.devices]
        failed = [d for d in devs if not d.ok]
        if result is not None:  # no chain at all
            node, action = result.node, result.action
            kind, msg = result.error_kind, result.message
        else:
            kind = None if attempt.ok else (failed[-1].error_kind if failed else "failed")
            msg = "" if attempt.ok else (failed[-1].message if failed else "")
        rec = FenceRecord(
            actor=self.actor,
            node=node or "",
            action=action or "off",
            ok=attempt.ok,
            devices=[d.device for d in devs],
            level=attempt.level,
            attempt=attempt.attempt,
            error_kind=kind,
            message=msg,
            duration=round(attempt.duration, 6),
            time=attempt.started,
            results=[d.to_dict() for d in devs],
        )
        self._store(rec)

    def _store(self, rec: FenceRecord) -> None:
        if self.history is not None:
            try:
                self.history.append(rec)
            except OSError as exc:  # losing history must not turn a fence into a failure
                self.log.error("fence history %s: cannot append: %s", self.history.path, exc)
        try:
            self.registry.notify_fence_event(rec.to_dict())
        except Exception as exc:  # notification is best effort
            self.log.error("fence event notification failed: %r", exc)

    # -- one device ----------------------------------------------------------------
    @property
    def rng(self) -> random.Random:
        return self.engine.rng

    async def run_device(
        self, driver: FenceDriver, action: str, *, node: str | None = None, record: bool = True
    ) -> ActionResult:
        """One action on one device, with the same delay/verify/time bounds as fencing.

        ``off``/``on`` are verified by status polling; ``reboot`` is native (then
        verified on) or off+verify+on. Power actions land in the history if
        ``record``.
        """
        if action not in DEVICE_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(DEVICE_ACTIONS)}")
        started = self.clock.wall()
        res = await self.engine.act(driver, action, node=node)
        if record and action in FENCE_ACTIONS:
            rec = FenceRecord(
                actor=self.actor,
                node=node or "",
                action=action,
                ok=res.ok,
                devices=[res.device],
                error_kind=res.error_kind,
                message=res.message,
                duration=round(res.duration, 6),
                time=started,
                results=[res.to_dict()],
            )
            self._store(rec)
        return res

    # -- dry run -----------------------------------------------------------------
    def device_budget(self, driver: FenceDriver) -> float:
        """Worst-case seconds of a verified off on this device."""
        return budget(driver)

    async def check(self, node: str) -> CheckReport:
        """Verify every device of the node's chain without powering anything off.

        Each device: driver built (config valid), ``monitor`` (reachable, credentials
        good) and ``status`` readable. Also computes the chain's worst-case budget.
        """
        levels = self.chain(node)
        report = CheckReport(node=node, ok=False, levels=len(levels), retries=self.retries)
        if not levels:
            report.message = "no fence device configured for this node"
            self.log.error("fence node '%s': check failed - %s", node, report.message)
            return report

        async def one(level: Level, spec: ChainDevice) -> DeviceCheck:
            t0 = self.clock.now()
            chk = DeviceCheck(level.number, spec.label, spec.driver, False)
            try:
                driver = self.build(spec)
            except Exception as exc:  # a plugin's constructor may raise anything
                chk.error_kind, chk.message = CONFIG_ERROR_KIND, str(exc)
                self.log.error(
                    "fence node '%s': check level %d device '%s': %s (%s)",
                    node, level.number, spec.label, chk.error_kind, chk.message,
                )  # fmt: skip
                return chk
            chk.budget_seconds = self.device_budget(driver)
            try:
                for action in ("monitor", "status"):
                    res = await self.engine.act(driver, action, node=node, level=level.number)
                    if not res.ok:
                        chk.error_kind, chk.message = res.error_kind, f"{action}: {res.message}"
                        break
                    chk.state = res.state if action == "status" else chk.state
                else:
                    chk.ok = True
            finally:
                await self.engine.close(driver)
                chk.duration = self.clock.now() - t0
            if chk.ok:
                self.log.info(
                    "fence node '%s': check level %d device '%s' ok, status %s",
                    node, level.number, spec.label, chk.state,
                )  # fmt: skip
            return chk

        checks = await asyncio.gather(*(one(lv, d) for lv in levels for d in lv.devices))
        report.devices = list(checks)
        report.ok = all(c.ok for c in checks)
        per_level: dict[int, float] = {}
        for c in checks:
            per_level[c.level] = max(per_level.get(c.level, 0.0), c.budget_seconds)
        report.attempt_budget_seconds = sum(per_level.values())
        report.budget_seconds = report.attempt_budget_seconds * (self.retries + 1) + sum(
            self.backoff_delays()
        )
        if not report.ok:
            bad = [c for c in checks if not c.ok]
            report.message = f"{len(bad)} of {len(checks)} device(s) failed the check"
        return report
