"""Time as the fencer sees it, and the event loops fences run on.

The fencer never reads ``time`` itself: every sleep, deadline, back-off, ``power_wait``
and status poll goes through a :class:`Clock`, and the clock follows the event loop the
fence runs on. Two loops exist:

- :class:`ThreadLoop`: a real asyncio loop in a daemon thread (the daemons' fence
  runner), on the monotonic clock;
- :class:`VirtualLoop`: a deterministic asyncio loop on virtual time (the simulator, and
  tests of timing rules), which never sleeps: waiting *is* advancing its clock, and its
  owner says how far (:meth:`VirtualLoop.run_until`).

Both run coroutines submitted with ``submit(coro)`` and expose the ``clock`` those
coroutines should use, so the fence runner (``hafence.ha.fencerun``) is the same code on
either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Clock(Protocol):
    """Seconds for the fencer: ``now`` for durations and deadlines, ``wall`` for records."""

    def now(self) -> float:
        """Monotonic seconds (the running loop's clock)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch, for history records."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[Any]:
        """A deadline ``seconds`` from now (None: none); TimeoutError when it passes."""
        ...


class LoopClock:
    """The running event loop's clock (virtual on a :class:`VirtualLoop`), plus a wall
    clock for records."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return self._wall()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[Any]:
        return asyncio.timeout(seconds)


SYSTEM_CLOCK = LoopClock()


class Pollable(Protocol[T_co]):
    """A running fence as the runner polls it (an asyncio or a concurrent future)."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def cancel(self) -> bool: ...

    def result(self) -> T_co: ...

    # the daemons wake their loop when a fence ends (docs/fencing.md)
    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...


class Executor(Protocol):
    """Where a fence runs: ``submit`` a coroutine, poll the returned future."""

    clock: Clock

    def submit(self, coro: Coroutine[Any, Any, T]) -> Pollable[T]: ...


class ThreadLoop:
    """An asyncio loop in a daemon thread, started on first use."""

    clock: Clock = SYSTEM_CLOCK

    def __init__(self, name: str = "hafence-fencer") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name=self.name, daemon=True
                )
                self._thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()


class _Idle:
    """The selector of a loop without I/O: waiting for the next timer advances time."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        self._loop._idle(timeout)
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    """An asyncio loop on virtual time, for one thread, without I/O.

    Nothing runs until the owner calls :meth:`run_until`: every callback due by then runs
    in order of its virtual time, and the clock stops at that time. Sleeps, time-outs and
    ``loop.time()`` all follow the virtual clock, so the same fencer code that waits
    seconds on a real loop runs here in no time, and the same way every run.
    ``epoch`` is what ``clock.wall()`` reads at virtual time 0.
    """

    def __init__(self, start: float = 0.0, epoch: float = 0.0) -> None:
        super().__init__()
        self._now = float(start)
        self._limit = float(start)
        self._selector = _Idle(self)
        self.clock: Clock = LoopClock(wall=lambda: epoch + self._now)

    def time(self) -> float:
        return self._now

    def _idle(self, timeout: float | None) -> None:
        if timeout == 0:
            return
        target = math.inf if timeout is None else self._now + timeout
        if target > self._limit:  # nothing more due by the limit: stop there
            self._now = max(self._now, self._limit)
            self.stop()
        else:
            self._now = target

    def _process_events(self, event_list: list[Any]) -> None:
        pass  # no I/O

    def _write_to_self(self) -> None:
        pass  # one thread: nobody needs waking

    def submit(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Schedule ``coro``; it runs at the next :meth:`run_until`."""
        return self.create_task(coro)

    def run_until(self, when: float) -> None:
        """Run everything due up to virtual time ``when``; the clock ends there (it never
        goes back: an earlier ``when`` runs only what is due now)."""
        self._limit = max(self._now, float(when))
        due = self._scheduled and self._scheduled[0]._when <= self._limit
        if not self._ready and not due:  # nothing to run: only the clock moves
            self._now = self._limit
            return
        self.run_forever()

    def __del__(self) -> None:
        pass  # nothing to release (no selector, no sockets): an unclosed one is no leak

    def shutdown(self) -> None:
        """Cancel what still runs, let it unwind at the current time, close the loop."""
        tasks = asyncio.all_tasks(self)
        for task in tasks:
            task.cancel()
        if tasks:
            self.run_until(self._now)
        self.close()
