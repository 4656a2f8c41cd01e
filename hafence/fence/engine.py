"""The single-device engine: one action on one driver, bounded, delayed and verified.

Every driver call is bounded by the device's ``timeout``; ``off`` waits ``delay`` (plus a
random part up to ``delay_max``) first, and ``off``/``on`` are confirmed by polling
``status`` every ``poll_interval`` for ``power_timeout`` seconds (after ``power_wait``).
``reboot`` is the driver's own (then confirmed on) or off, confirmed off, on. All time
comes from the injected :class:`~hafence.fence.clock.Clock`. The engine never raises for
a device fault: it returns an :class:`ActionResult` whose ``error_kind`` names it, and
``ok`` for off means a *confirmed* off. The chain (:mod:`hafence.fence.fencer`) builds on
it; so do ``hafence device`` and ``fence_hafence``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from hafence.errors import (
    AuthError,
    DeviceError,
    FenceError,
    FenceTimeoutError,
    StillOnError,
    UnreachableError,
)
from hafence.fence.clock import SYSTEM_CLOCK, Clock
from hafence.fence.driver import FenceDriver, PowerState
from hafence.fence.results import ActionResult
from hafence.secrets import MASK, Secret

FENCE_ACTIONS = ("off", "on", "reboot")
DEVICE_ACTIONS = ("status", "off", "on", "reboot", "list", "monitor")

_log = logging.getLogger("hafence.fence")


class DeviceEngine:
    """Runs actions on drivers with the fencer's rules, on ``clock``'s time."""

    def __init__(
        self,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        log: logging.Logger = _log,
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.log = log

    async def act(
        self, driver: FenceDriver, action: str, *, node: str | None = None, level: int | None = None
    ) -> ActionResult:
        """``action`` (one of :data:`DEVICE_ACTIONS`) on ``driver``; ``node``/``level``
        only name it in logs."""
        if action not in DEVICE_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(DEVICE_ACTIONS)}")
        t0 = self.clock.now()
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
                res.state = _state(await self.call(driver, "status")).value
            elif action == "monitor":
                await self.call(driver, "monitor")
            elif action == "list":
                ports = await self.call(driver, "list")
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
        res.duration = self.clock.now() - t0
        res.message = _scrub(res.message, driver)
        if res.ok:
            if action in FENCE_ACTIONS:
                self.log.info("%s %s confirmed %s in %.2fs", where, action, res.state, res.duration)
        else:
            self.log.error("%s %s failed: %s (%s)", where, action, res.error_kind, res.message)
        return res

    async def call(self, driver: FenceDriver, method: str) -> Any:
        """One bounded driver call; low-level errors mapped to typed fence errors."""
        timeout = driver.bound(method)
        try:
            async with self.clock.timeout(timeout or None):
                return await getattr(driver, method)()
        except TimeoutError:
            raise FenceTimeoutError(
                f"{method} got no answer within {timeout:g}s", device=driver.label
            ) from None
        except FenceError:
            raise
        except (ConnectionError, OSError) as exc:
            raise UnreachableError(f"{method}: {exc}", device=driver.label) from None

    async def _delay(self, driver: FenceDriver, where: str) -> None:
        base, spread = opt(driver, "delay", 0.0), opt(driver, "delay_max", 0.0)
        wait = base + (self.rng.uniform(0, spread) if spread > 0 else 0.0)
        if wait > 0:
            self.log.info("%s delaying by %.2fs (delay=%g delay_max=%g)", where, wait, base, spread)
            await self.clock.sleep(wait)

    async def _power(self, driver: FenceDriver, method: str, target: PowerState) -> PowerState:
        await self.call(driver, method)
        return await self._wait_for(driver, target)

    async def _wait_for(self, driver: FenceDriver, target: PowerState) -> PowerState:
        """Poll status until ``target`` within power_timeout (after power_wait)."""
        power_wait = opt(driver, "power_wait", 0.0)
        power_timeout = opt(driver, "power_timeout", 20.0)
        interval = max(opt(driver, "poll_interval", 0.2), 0.01)
        if power_wait > 0:
            await self.clock.sleep(power_wait)
        deadline = self.clock.now() + power_timeout
        state = PowerState.UNKNOWN
        last_error: FenceError | None = None
        while True:
            try:
                state = _state(await self.call(driver, "status"))
                last_error = None
            except AuthError:
                raise
            except FenceError as exc:  # keep polling: a busy BMC may answer next time
                state, last_error = PowerState.UNKNOWN, exc
            if state == target:
                return state
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                break
            await self.clock.sleep(min(interval, remaining))
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
            await self.call(driver, "reboot")
            return (await self._wait_for(driver, PowerState.ON)).value, "native reboot"
        await self._power(driver, "off", PowerState.OFF)
        try:
            state = await self._power(driver, "on", PowerState.ON)
        except FenceError as exc:
            # The target is confirmed off, which is what fencing needs; say so loudly.
            self.log.error("%s reboot: off confirmed but power on failed: %s", where, exc.kind)
            return PowerState.OFF.value, f"off confirmed; power on failed: {exc.kind}"
        return state.value, "off, verified, on"

    async def close(self, driver: FenceDriver) -> None:
        """Release the driver; a failing close never changes a verdict."""
        try:
            async with self.clock.timeout(opt(driver, "timeout", 10.0) or None):
                await driver.close()
        except Exception as exc:
            self.log.warning("device '%s': close failed: %r", driver.label, exc)


def budget(driver: FenceDriver) -> float:
    """Worst-case seconds of a verified off on this device."""
    return (
        opt(driver, "delay", 0.0)
        + opt(driver, "delay_max", 0.0)
        + driver.bound("off")  # the off request
        + opt(driver, "power_wait", 0.0)
        + opt(driver, "power_timeout", 20.0)
        + driver.bound("status")  # a status poll still in flight at the deadline
    )


def opt(driver: FenceDriver, key: str, default: float) -> float:
    value = driver.options.get(key)
    return float(default if value is None else value)


def _where(node: str | None, level: int | None, label: str) -> str:
    parts = []
    if node:
        parts.append(f"fence node '{node}':")
    if level is not None:
        parts.append(f"level {level}")
    parts.append(f"device '{label}'")
    return " ".join(parts)


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
