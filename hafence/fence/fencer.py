"""The fencer: fences one node through its chain, and never claims an unconfirmed off.

For each attempt the chain's levels are tried in order; the devices of a level act
concurrently and the level succeeds only when *every* one of them confirmed off by
polling ``status``. A failed attempt (no level succeeded) is retried with exponential
back-off. Every driver call is bounded by the device's ``timeout``; the off-then-verify
loop by ``power_wait`` + ``power_timeout``. Each attempt is written to the fence history
and announced to plugins (``hafence_fence_event``).

Logs are one line per decision, naming the node and device, e.g.::

    fence node 'node2': level 1 device 'ipmi2' off failed: unreachable (connection refused)
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hafence.errors import (
    AuthError,
    DeviceError,
    FenceError,
    FenceTimeoutError,
    HafenceError,
    StillOnError,
    UnreachableError,
)
from hafence.fence.chain import ChainDevice, Level, build_driver
from hafence.fence.driver import POWER, FenceDriver, PowerState
from hafence.fence.history import FenceHistory, FenceRecord
from hafence.secrets import MASK, Secret

if TYPE_CHECKING:
    from hafence.fence.config import FenceConfig
    from hafence.plugins import PluginRegistry

log = logging.getLogger("hafence.fence")

FENCE_ACTIONS = ("off", "on", "reboot")
DEVICE_ACTIONS = ("status", "off", "on", "reboot", "list", "monitor")
CONFIG_ERROR_KIND = "config_error"
NO_DEVICE_KIND = "no_device"


# -- results --------------------------------------------------------------------------
@dataclass
class ActionResult:
    """One action on one device. ``ok`` for off means a *confirmed* off."""

    device: str
    action: str
    ok: bool
    state: str = PowerState.UNKNOWN.value  # last power state seen
    error_kind: str | None = None
    message: str = ""
    duration: float = 0.0
    driver: str = ""
    ports: list[dict[str, str]] | None = None  # for 'list'
    kind: str = ""  # the driver's kind: power or fabric (hafence.fence.driver)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LevelResult:
    level: int  # 1-based
    name: str
    ok: bool
    devices: list[ActionResult] = field(default_factory=list)


@dataclass
class AttemptResult:
    attempt: int  # 1-based
    ok: bool
    level: int | None  # the level that succeeded
    levels: list[LevelResult] = field(default_factory=list)
    started: float = 0.0  # epoch seconds
    duration: float = 0.0
    backoff: float = 0.0  # seconds waited after this attempt before the next one


@dataclass
class FenceResult:
    """The outcome of fencing one node. ``ok`` only when a whole level confirmed."""

    node: str
    action: str
    ok: bool
    level: int | None = None  # 1-based level that succeeded
    level_name: str | None = None
    attempts: list[AttemptResult] = field(default_factory=list)
    duration: float = 0.0
    actor: str = ""
    error_kind: str | None = None
    message: str = ""

    @property
    def devices(self) -> list[str]:
        """Devices of the level that succeeded."""
        if not self.ok or not self.attempts:
            return []
        last = self.attempts[-1]
        return [d.device for lv in last.levels if lv.ok for d in lv.devices]

    @property
    def power_off(self) -> bool:
        """A confirmed off by a level whose devices all cut power: the node has stopped
        (a ``fabric`` device only cut it off). See docs/fencing.md."""
        if not self.ok or self.action != "off" or not self.attempts:
            return False
        devs = [d for lv in self.attempts[-1].levels if lv.ok for d in lv.devices]
        return bool(devs) and all(d.kind == POWER for d in devs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass
class DeviceCheck:
    """Dry-run verdict for one device: built, reachable, credentials good, status read."""

    level: int
    device: str
    driver: str
    ok: bool
    state: str = PowerState.UNKNOWN.value
    error_kind: str | None = None
    message: str = ""
    duration: float = 0.0
    budget_seconds: float = 0.0  # worst case of a verified off on this device


@dataclass
class CheckReport:
    """``fence NODE --dry-run``: every device checked, nothing powered off."""

    node: str
    ok: bool
    devices: list[DeviceCheck] = field(default_factory=list)
    levels: int = 0
    attempt_budget_seconds: float = 0.0  # one pass over the chain, every level failing
    budget_seconds: float = 0.0  # all attempts plus back-off: the worst case of fence()
    retries: int = 0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the fencer ---------------------------------------------------------------------
class Fencer:
    """Fences nodes through their fence.cfg chains.

    ``retries`` extra passes over the whole chain after the first fails, waiting
    ``backoff * 2**(n-1)`` seconds (at most ``backoff_max``) before pass ``n+1``.
    ``actor`` names who fences in logs and history (default: this host's name).
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
        self.rng = rng or random.Random()
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
        t0 = time.monotonic()
        result = FenceResult(node=node, action=action, ok=False, actor=self.actor)
        levels = self.chain(node)
        if not levels:
            result.error_kind = NO_DEVICE_KIND
            result.message = "no fence device configured for this node"
            log.error("fence node '%s': FAILED - %s", node, result.message)
            self._record(result, AttemptResult(1, False, None, started=time.time()), [])
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
                log.error("fence node '%s': configuration errors, not retrying", node)
                break
            if n < total:
                attempt.backoff = delays[n - 1]
                log.error(
                    "fence node '%s': attempt %d/%d failed on every level, retrying in %gs",
                    node,
                    n,
                    total,
                    attempt.backoff,
                )
                await asyncio.sleep(attempt.backoff)
        result.duration = time.monotonic() - t0
        if result.ok:
            log.info(
                "fence node '%s': %s confirmed by level %d (%s) after %d attempt(s), %.2fs",
                node,
                action,
                result.level,
                result.level_name,
                len(result.attempts),
                result.duration,
            )
        else:
            log.error(
                "fence node '%s': FAILED after %d attempt(s): %s - node is NOT fenced",
                node,
                len(result.attempts),
                result.error_kind,
            )
        return result

    async def _attempt(self, node: str, action: str, levels: list[Level], n: int) -> AttemptResult:
        attempt = AttemptResult(attempt=n, ok=False, level=None, started=time.time())
        t0 = time.monotonic()
        for level in levels:
            log.info(
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
            log.error("fence node '%s': level %d (%s) failed", node, level.number, level.name)
        attempt.duration = time.monotonic() - t0
        self._record(None, attempt, levels, node=node, action=action)
        return attempt

    async def _run_level(self, node: str, action: str, level: Level) -> LevelResult:
        async def one(spec: ChainDevice) -> ActionResult:
            try:
                driver = self.build(spec)
            except Exception as exc:  # a plugin's constructor may raise anything
                msg = str(exc) if isinstance(exc, HafenceError) else f"{type(exc).__name__}: {exc}"
                log.error(
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
                res = await self._act(driver, action, node=node, level=level.number)
            finally:
                await _close(driver)
            return res

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
                log.error("fence history %s: cannot append: %s", self.history.path, exc)
        try:
            self.registry.notify_fence_event(rec.to_dict())
        except Exception as exc:  # notification is best effort
            log.error("fence event notification failed: %r", exc)

    # -- one device ----------------------------------------------------------------
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
        started = time.time()
        res = await self._act(driver, action, node=node)
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

    async def _act(
        self, driver: FenceDriver, action: str, *, node: str | None, level: int | None = None
    ) -> ActionResult:
        t0 = time.monotonic()
        res = ActionResult(driver.label, action, False, driver=driver.name, kind=driver.kind)
        where = _where(node, level, driver.label)
        try:
            if action == "off":
                await self._delay(driver, where)
                res.state = (await self._power(driver, "off", PowerState.OFF)).value
            elif action == "on":
                res.state = (await self._power(driver, "on", PowerState.ON)).value
            elif action == "reboot":
                await self._delay(driver, where)
                res.state, res.message = await self._reboot(driver, where)
            elif action == "status":
                res.state = _state(await self._call(driver, "status")).value
            elif action == "monitor":
                await self._call(driver, "monitor")
            elif action == "list":
                ports = await self._call(driver, "list")
                res.ports = [
                    {"id": p.id, "name": p.name, "alias": p.alias, "state": str(p.state)}
                    for p in ports
                ]
            res.ok = True
        except asyncio.CancelledError:
            raise
        except FenceError as exc:
            res.error_kind, res.message = exc.kind, exc.message
        except Exception as exc:  # anything unexpected is a device error, never success
            res.error_kind = DeviceError.kind
            res.message = f"{type(exc).__name__}: {exc}"
        res.duration = time.monotonic() - t0
        res.message = _scrub(res.message, driver)
        if res.ok:
            if action in FENCE_ACTIONS:
                log.info("%s %s confirmed %s in %.2fs", where, action, res.state, res.duration)
        else:
            log.error("%s %s failed: %s (%s)", where, action, res.error_kind, res.message)
        return res

    async def _call(self, driver: FenceDriver, method: str) -> Any:
        """One bounded driver call; low-level errors mapped to typed fence errors."""
        timeout = _bound(driver, method)
        try:
            return await asyncio.wait_for(getattr(driver, method)(), timeout or None)
        except TimeoutError:
            raise FenceTimeoutError(
                f"{method} got no answer within {timeout:g}s", device=driver.label
            ) from None
        except FenceError:
            raise
        except ConnectionError as exc:
            raise UnreachableError(f"{method}: {exc}", device=driver.label) from None
        except OSError as exc:
            raise UnreachableError(f"{method}: {exc}", device=driver.label) from None

    async def _delay(self, driver: FenceDriver, where: str) -> None:
        base, spread = _opt(driver, "delay", 0.0), _opt(driver, "delay_max", 0.0)
        wait = base + (self.rng.uniform(0, spread) if spread > 0 else 0.0)
        if wait > 0:
            log.info("%s delaying by %.2fs (delay=%g delay_max=%g)", where, wait, base, spread)
            await asyncio.sleep(wait)

    async def _power(self, driver: FenceDriver, method: str, target: PowerState) -> PowerState:
        await self._call(driver, method)
        return await self._wait_for(driver, target)

    async def _wait_for(self, driver: FenceDriver, target: PowerState) -> PowerState:
        """Poll status until ``target`` within power_timeout (after power_wait)."""
        power_wait = _opt(driver, "power_wait", 0.0)
        power_timeout = _opt(driver, "power_timeout", 20.0)
        interval = max(_opt(driver, "poll_interval", 0.2), 0.01)
        if power_wait > 0:
            await asyncio.sleep(power_wait)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + power_timeout
        state = PowerState.UNKNOWN
        last_error: FenceError | None = None
        while True:
            try:
                state = _state(await self._call(driver, "status"))
                last_error = None
            except AuthError:
                raise
            except FenceError as exc:  # keep polling: a busy BMC may answer next time
                state, last_error = PowerState.UNKNOWN, exc
            if state == target:
                return state
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(interval, remaining))
        if last_error is not None:
            raise type(last_error)(
                f"could not confirm {target}: {last_error.message}", device=driver.label
            )
        if target == PowerState.OFF:
            raise StillOnError(
                f"status still {state} {power_timeout:g}s after off", device=driver.label
            )
        raise FenceTimeoutError(
            f"status still {state} {power_timeout:g}s after on", device=driver.label
        )

    async def _reboot(self, driver: FenceDriver, where: str) -> tuple[str, str]:
        if "reboot" in driver.actions:
            await self._call(driver, "reboot")
            return (await self._wait_for(driver, PowerState.ON)).value, "native reboot"
        await self._power(driver, "off", PowerState.OFF)
        try:
            state = await self._power(driver, "on", PowerState.ON)
        except FenceError as exc:
            # The target is confirmed off, which is what fencing needs; say so loudly.
            log.error("%s reboot: off confirmed but power on failed: %s", where, exc.kind)
            return PowerState.OFF.value, f"off confirmed; power on failed: {exc.kind}"
        return state.value, "off, verified, on"

    # -- dry run -----------------------------------------------------------------
    def device_budget(self, driver: FenceDriver) -> float:
        """Worst-case seconds of a verified off on this device."""
        o = lambda k, d: _opt(driver, k, d)  # noqa: E731
        return (
            o("delay", 0.0)
            + o("delay_max", 0.0)
            + _bound(driver, "off")  # the off request
            + o("power_wait", 0.0)
            + o("power_timeout", 20.0)
            + _bound(driver, "status")  # a status poll still in flight at the deadline
        )

    async def check(self, node: str) -> CheckReport:
        """Verify every device of the node's chain without powering anything off.

        Each device: driver built (config valid), ``monitor`` (reachable, credentials
        good) and ``status`` readable. Also computes the chain's worst-case budget.
        """
        levels = self.chain(node)
        report = CheckReport(node=node, ok=False, levels=len(levels), retries=self.retries)
        if not levels:
            report.message = "no fence device configured for this node"
            log.error("fence node '%s': check failed - %s", node, report.message)
            return report

        async def one(level: Level, spec: ChainDevice) -> DeviceCheck:
            t0 = time.monotonic()
            chk = DeviceCheck(level.number, spec.label, spec.driver, False)
            try:
                driver = self.build(spec)
            except Exception as exc:  # a plugin's constructor may raise anything
                chk.error_kind, chk.message = CONFIG_ERROR_KIND, str(exc)
                log.error(
                    "fence node '%s': check level %d device '%s': %s (%s)",
                    node, level.number, spec.label, chk.error_kind, chk.message,
                )  # fmt: skip
                return chk
            chk.budget_seconds = self.device_budget(driver)
            try:
                for action in ("monitor", "status"):
                    res = await self._act(driver, action, node=node, level=level.number)
                    if not res.ok:
                        chk.error_kind, chk.message = res.error_kind, f"{action}: {res.message}"
                        break
                    chk.state = res.state if action == "status" else chk.state
                else:
                    chk.ok = True
            finally:
                await _close(driver)
                chk.duration = time.monotonic() - t0
            if chk.ok:
                log.info(
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


# -- helpers ------------------------------------------------------------------------
def _where(node: str | None, level: int | None, label: str) -> str:
    parts = []
    if node:
        parts.append(f"fence node '{node}':")
    if level is not None:
        parts.append(f"level {level}")
    parts.append(f"device '{label}'")
    return " ".join(parts)


def _bound(driver: FenceDriver, method: str) -> float:
    """Time bound of one driver call: ``timeout``, plus the power wait and timeout for
    drivers that verify power changes themselves (e.g. ClusterLabs agents)."""
    timeout = _opt(driver, "timeout", 10.0)
    if method in FENCE_ACTIONS and getattr(driver, "self_verifying", False):
        bound = getattr(driver, "bound", None)
        if callable(bound):
            return float(bound(method))
        timeout += _opt(driver, "power_wait", 0.0) + _opt(driver, "power_timeout", 20.0)
    return timeout


def _opt(driver: FenceDriver, key: str, default: float) -> float:
    value = driver.options.get(key)
    return float(default if value is None else value)


def _state(value: Any) -> PowerState:
    if isinstance(value, PowerState):
        return value
    try:
        return PowerState(str(value).lower())
    except ValueError:
        raise DeviceError(f"status returned {value!r}, not on/off") from None


def _scrub(message: str, driver: FenceDriver) -> str:
    """Remove any secret value of the driver from a message (belt and braces)."""
    for value in driver.options.values():
        if isinstance(value, Secret):
            clear = value.reveal()
            if clear and clear in message:
                message = message.replace(clear, MASK)
    return message


async def _close(driver: FenceDriver) -> None:
    try:
        await asyncio.wait_for(driver.close(), _opt(driver, "timeout", 10.0) or None)
    except Exception as exc:  # closing must never change a fence verdict
        log.warning("device '%s': close failed: %r", driver.label, exc)
