"""The fencer on virtual time: every wait comes from the injected clock, so its timing
rules (back-off, power_wait, polling, time bounds, delays) are checked to the second on a
VirtualLoop, without a real sleep; the fence runner drives the same fencer on it."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from hafence.fence import Fencer, VirtualLoop, parse_fence_config
from hafence.ha.env import FENCE_IDLE, FENCE_OK, FENCE_PENDING
from hafence.ha.fencerun import FenceRunner, StaticSource
from tests.fence.conftest import Lab

EPOCH = 1_700_000_000.0


@pytest.fixture
def loop() -> Any:
    vloop = VirtualLoop(epoch=EPOCH)
    yield vloop
    vloop.shutdown()


def _fencer(lab: Lab, loop: VirtualLoop, options: str = "", **kw: Any) -> Fencer:
    cfg = parse_fence_config(f"device d model device=d {options}\nconnect d node=n1\n")
    return Fencer(cfg, lab.registry, actor="t", clock=loop.clock, **kw)


def _run(loop: VirtualLoop, coro: Any, until: float = 1000.0) -> Any:
    task = loop.submit(coro)
    loop.run_until(until)
    assert task.done(), "the coroutine should have finished by then"
    return task.result()


def test_the_virtual_loop_runs_what_is_due_in_time_order_and_never_sleeps(loop) -> None:
    seen: list[tuple[str, float]] = []

    async def after(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        seen.append((name, loop.time()))

    for name, seconds in (("c", 30.0), ("a", 5.0), ("b", 5.5)):
        loop.submit(after(name, seconds))
    t0 = time.monotonic()
    loop.run_until(10)
    assert seen == [("a", 5.0), ("b", 5.5)] and loop.time() == 10.0
    loop.run_until(3)  # the clock never goes back
    assert loop.time() == 10.0
    loop.run_until(100)
    assert seen[-1] == ("c", 30.0) and loop.time() == 100.0
    assert time.monotonic() - t0 < 5  # 100 virtual seconds, no real ones (generous bound)
    assert loop.clock.wall() == EPOCH + 100


def test_retries_wait_the_exponential_back_off_capped(lab: Lab, loop) -> None:
    dev = lab.add("d", fail_first=2)
    fencer = _fencer(lab, loop, retries=2, backoff=3.0, backoff_max=4.0)
    res = _run(loop, fencer.fence("n1"))
    offs = [t for call, t in zip(dev.calls, dev.at, strict=True) if call == "off"]
    assert res.ok and offs == [0.0, 3.0, 7.0]  # back-off 3, then min(6, 4)
    assert [a.backoff for a in res.attempts] == [3.0, 4.0, 0.0]
    assert res.duration == 7.0 and res.attempts[2].started == EPOCH + 7.0


def test_power_wait_then_polling_every_interval_until_off(lab: Lab, loop) -> None:
    dev = lab.add("d", lag=3)  # status says on for three more polls
    fencer = _fencer(lab, loop, "power_wait=5 poll_interval=2")
    res = _run(loop, fencer.fence("n1"))
    polls = [t for call, t in zip(dev.calls, dev.at, strict=True) if call == "status"]
    assert res.ok and polls == [5.0, 7.0, 9.0, 11.0] and res.duration == 11.0


def test_a_device_that_never_answers_fails_at_its_timeout(lab: Lab, loop) -> None:
    lab.add("d", behaviour="hang")
    res = _run(loop, _fencer(lab, loop, "timeout=4", retries=0).fence("n1"))
    assert not res.ok and res.error_kind == "timeout" and res.duration == 4.0


def test_a_stuck_device_is_polled_for_power_timeout_then_still_on(lab: Lab, loop) -> None:
    dev = lab.add("d", behaviour="stuck")
    fencer = _fencer(lab, loop, "power_timeout=6 poll_interval=2.5", retries=0)
    res = _run(loop, fencer.fence("n1"))
    polls = [t for call, t in zip(dev.calls, dev.at, strict=True) if call == "status"]
    assert not res.ok and res.error_kind == "still_on"
    assert polls == [0.0, 2.5, 5.0, 6.0]  # the last poll at the deadline


def test_delay_and_its_random_part_come_before_the_off(lab: Lab, loop) -> None:
    dev = lab.add("d")
    fencer = _fencer(lab, loop, "delay=3 delay_max=10", rng=random.Random(7))
    expected = 3 + random.Random(7).uniform(0, 10)
    _run(loop, fencer.fence("n1"))
    assert dev.calls[0] == "off" and dev.at[0] == pytest.approx(expected)


def test_the_fence_runner_drives_the_fencer_on_a_virtual_loop(lab: Lab, loop) -> None:
    dev = lab.add("d", fail_first=1)
    lines: list[tuple[str, str]] = []
    runner = FenceRunner(
        StaticSource("device d model device=d\nconnect d node=n1\n"),
        actor="n2",
        log_fn=lambda level, msg: lines.append((level, msg)),
        registry=lab.registry,
        retries=1,
        backoff=5.0,
        executor=loop,
    )
    assert runner.poll("n1") == FENCE_IDLE
    assert runner.start("n1") == FENCE_PENDING
    loop.run_until(4.9)
    assert runner.poll("n1") == FENCE_PENDING and dev.power == "on"  # backing off
    loop.run_until(5)
    assert runner.poll("n1") == FENCE_OK and dev.power == "off"
    assert lines == [  # the duration is virtual: attempt, 5 s back-off, attempt
        ("notice", "fencing: start hardware fence of node 'n1' (levels: d)"),
        ("notice", "fencing: node 'n1' confirmed off by level 1 (d) in 5.0s (fabric)"),
    ]
    dev.power, dev.fail_first = "on", 1
    runner.reset("n1")
    assert runner.start("n1") == FENCE_PENDING
    runner.reset("n1")  # an admin's fence-ack: the running attempt is cancelled
    loop.run_until(20)
    assert runner.poll("n1") == FENCE_IDLE and dev.power == "on"
