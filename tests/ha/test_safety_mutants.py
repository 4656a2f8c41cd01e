"""The safety checker catches what it claims to: deliberately broken variants of the product.

Each mutant monkeypatches one piece of the product (the HA core, the fencer, the fence
runner, the simulated hardware's fence devices) the way a real bug would break it, and
runs the random clusters of ``hafence.sim.safety`` over a fixed set of seeds: the checker,
which judges only the simulated hardware, must flag it. The catch rate per mutant is the
checker's measure::

    python tests/ha/test_safety_mutants.py --seeds 300     # prints the table
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hafence.fence import PowerState
from hafence.fence.engine import DeviceEngine
from hafence.fence.fencer import Fencer
from hafence.fence.results import LevelResult
from hafence.ha.env import FENCE_FAILED, FENCE_NONE
from hafence.ha.fencerun import FenceRunner
from hafence.ha.lrm import LRM
from hafence.ha.nodestatus import NodeStatus
from hafence.sim import env as sim_env
from hafence.sim.env import SimEnv
from hafence.sim.hardware import WATCHDOG_TIMEOUT
from hafence.sim.power import SimPowerDriver
from hafence.sim.safety import check_seed

# The fixed seeds every mutant runs over in the suite (test_safety.py shows the product
# itself passes them); the test stops at the first seed that catches it.
SEEDS = range(200)

Patch = Callable[[pytest.MonkeyPatch], None]


def lock_equals_watchdog(mp: pytest.MonkeyPatch) -> None:
    """The agent lock lives exactly as long as the watchdog timeout: no margin."""
    mp.setattr(sim_env, "LOCK_TIMEOUT", WATCHDOG_TIMEOUT)


def lying_devices(mp: pytest.MonkeyPatch) -> None:
    """Every fence device accepts off and reports off, without cutting the power."""

    async def off(self: SimPowerDriver) -> None:
        await self._request("off")
        self.state.claims_off = True

    mp.setattr(SimPowerDriver, "off", off)


def no_fence_delay(mp: pytest.MonkeyPatch) -> None:
    """The master fences a node the moment it drops out, not after the fence delay."""
    real = NodeStatus.offline_delayed

    def at_once(self: NodeStatus, node: str, delay: float | None = None) -> bool:
        return real(self, node, 0 if delay is None else delay)

    mp.setattr(NodeStatus, "offline_delayed", at_once)


def unverified_off(mp: pytest.MonkeyPatch) -> None:
    """The fencer takes an accepted off for a confirmed one (no status polling)."""

    async def trusting(self: DeviceEngine, driver: Any, target: PowerState) -> PowerState:
        return target

    mp.setattr(DeviceEngine, "_wait_for", trusting)


def one_device_is_enough(mp: pytest.MonkeyPatch) -> None:
    """A level succeeds when any one of its devices confirmed, not all of them."""
    real = Fencer._run_level

    async def lenient(self: Fencer, node: str, action: str, level: Any) -> LevelResult:
        res = await real(self, node, action, level)
        res.ok = any(d.ok for d in res.devices)
        return res

    mp.setattr(Fencer, "_run_level", lenient)


def failure_reads_as_none(mp: pytest.MonkeyPatch) -> None:
    """The master ignores a failed hardware fence (reads it as "no hardware fencing") and
    recovers on the agent lock alone."""
    real = FenceRunner.poll

    def ignoring(self: FenceRunner, node: str) -> str:
        state = real(self, node)
        return FENCE_NONE if state == FENCE_FAILED else state

    mp.setattr(FenceRunner, "poll", ignoring)


def fencer_claims_success(mp: pytest.MonkeyPatch) -> None:
    """The fencer reports every fence as confirmed, whatever the devices said."""
    real = Fencer._fence

    async def optimistic(self: Fencer, node: str, action: str) -> Any:
        res = await real(self, node, action)
        res.ok = True
        return res

    mp.setattr(Fencer, "_fence", optimistic)


def lrm_ignores_lost_lock(mp: pytest.MonkeyPatch) -> None:
    """An LRM keeps running (and feeding its watchdog) after it lost its agent lock."""

    def keeps_it(self: LRM) -> bool:
        self.env.get_ha_agent_lock()
        self.watchdog.feed()
        return True

    mp.setattr(LRM, "_get_agent_lock", keeps_it)


def no_agent_lock_needed(mp: pytest.MonkeyPatch) -> None:
    """The master recovers a fenced node's services without holding its agent lock."""
    real = SimEnv.get_ha_agent_lock

    def granted(self: SimEnv, node: str | None = None) -> bool:
        return True if node not in (None, self.nodename) else real(self, node)

    mp.setattr(SimEnv, "get_ha_agent_lock", granted)


def acknowledge_at_once(mp: pytest.MonkeyPatch) -> None:
    """The master acknowledges a fence at once: no hardware fence, no agent lock."""

    def unsafe(self: NodeStatus, node: str) -> bool:
        if self.get(node) != "fence":
            self._set(node, "fence")
        self._set(node, "unknown")
        return True

    mp.setattr(NodeStatus, "fence_node", unsafe)


def unguarded_services(mp: pytest.MonkeyPatch) -> None:
    """The LRM runs services without arming the node's watchdog: nothing resets a node
    cut off from the cluster."""
    mp.setattr(SimEnv, "watchdog_open", lambda self: None)
    mp.setattr(SimEnv, "watchdog_update", lambda self, handle: None)


MUTANTS: dict[str, Patch] = {
    f.__name__: f
    for f in (
        lock_equals_watchdog,
        lying_devices,
        no_fence_delay,
        unverified_off,
        one_device_is_enough,
        failure_reads_as_none,
        fencer_claims_success,
        lrm_ignores_lost_lock,
        no_agent_lock_needed,
        acknowledge_at_once,
        unguarded_services,
    )
}


@contextlib.contextmanager
def mutated(name: str) -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    try:
        MUTANTS[name](mp)
        yield
    finally:
        mp.undo()


def caught_seeds(name: str, seeds: range, first: bool = False) -> list[int]:
    """The seeds whose run the checker flags with mutant ``name`` applied."""
    caught = []
    with mutated(name):
        for seed in seeds:
            if check_seed(seed).violations:
                caught.append(seed)
                if first:
                    break
    return caught


@pytest.mark.parametrize("name", list(MUTANTS))
def test_the_checker_catches_the_mutant(name: str) -> None:
    caught = caught_seeds(name, SEEDS, first=True)
    assert caught, f"mutant {name} ({MUTANTS[name].__doc__}) went unnoticed over {SEEDS}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=300)
    args = parser.parse_args()
    seeds = range(args.seeds)
    print(f"{'mutant':<24} caught  of {len(seeds)} seeds   first seeds")
    for name in MUTANTS:
        caught = caught_seeds(name, seeds)
        rate = 100 * len(caught) / len(seeds)
        print(f"{name:<24} {len(caught):6d}  ({rate:5.1f}%)        {caught[:5]}")


if __name__ == "__main__":
    main()
