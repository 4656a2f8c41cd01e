"""The master's hardware fencing: one fence.cfg for the whole cluster, one fencer.

:class:`FenceRunner` runs ``hafence.fence.Fencer`` on an executor so the CRM step never
blocks; the step starts and polls. The executor is where the fence's time comes from: a
real asyncio loop in a background thread on a daemon (``hafence.fence.ThreadLoop``), the
simulator's virtual-time loop (``hafence.fence.VirtualLoop``) in ``hafence.sim``, either in
tests. fence.cfg is read again for every attempt, so fixing or removing a node's entry
takes effect without a restart.

Where fence.cfg comes from (``hafence-crm --fence-config``):

- ``store``: the cluster's copy in the store (``ha-manager fence-config import FILE``),
  the same for every CRM by construction;
- a file: each node's own copy. Every CRM publishes a digest of what it uses (also when
  it has none) in the store, and a fence fails while a live CRM uses another one:
  whether a node is fenced by hardware must never depend on which node is master;
- nothing (no ``--fence-config``): watchdog fencing only, with the same agreement check.

A broken, missing or disputed fence.cfg makes a fence FAILED (never NONE): services stay
in ``fence`` instead of being recovered on the agent lock alone while the operator
believes hardware fencing is on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from hafence.errors import HafenceError
from hafence.fence import (
    FenceHistory,
    Fencer,
    ThreadLoop,
    build_driver,
    check_drivers,
    parse_fence_config,
)
from hafence.fence.clock import Executor, Pollable
from hafence.fence.driver import POWER
from hafence.ha.env import FENCE_FAILED, FENCE_IDLE, FENCE_NONE, FENCE_OK, FENCE_PENDING
from hafence.store import Store

STORE = "store"  # --fence-config store: the cluster's fence.cfg kept in the store
FENCE_CFG = "fence.cfg"  # its name in the store
DIGESTS = "fence_cfg_digests"  # {node: sha256 of the fence.cfg its CRM uses}


class Source(Protocol):
    """Where a fence runner reads fence.cfg from."""

    @property
    def configured(self) -> bool: ...

    def describe(self) -> str: ...

    def read(self) -> bytes: ...

    def check_agreement(self, raw: bytes) -> None: ...


class StaticSource:
    """A fence.cfg held in memory (the simulator, tests): every CRM uses the same one.
    ``text`` may be a callable, read at every attempt as a file would be."""

    def __init__(self, text: str | Callable[[], str], name: str = FENCE_CFG) -> None:
        self._text = text
        self.name = name

    @property
    def configured(self) -> bool:
        return True

    def describe(self) -> str:
        return self.name

    def read(self) -> bytes:
        return (self._text() if callable(self._text) else self._text).encode()

    def check_agreement(self, raw: bytes) -> None:
        pass  # one copy by construction


class FenceSource:
    """Where one CRM's fence.cfg comes from: ``spec`` is None, ``store`` or a path."""

    def __init__(
        self,
        spec: str | os.PathLike[str] | None,
        store: Store,
        node: str,
        alive: Callable[[str], bool],
    ) -> None:
        self.store, self.node, self.alive = store, node, alive
        self.in_store = spec is not None and os.fspath(spec) == STORE
        self.path = None if spec is None or self.in_store else Path(spec)
        self._published: str | None = None

    @property
    def configured(self) -> bool:
        return self.in_store or self.path is not None

    def describe(self) -> str:
        if self.in_store:
            return self.store.location(FENCE_CFG)
        return str(self.path) if self.path is not None else "(none)"

    def read(self) -> bytes:
        """The fence.cfg text this CRM uses (empty: no hardware fencing); OSError when
        the file is missing."""
        if self.in_store:
            return self.store.read_text(FENCE_CFG).encode()
        return self.path.read_bytes() if self.path is not None else b""

    def publish(self) -> None:
        """Tell the other CRMs which fence.cfg this one uses (only when it changed)."""
        try:
            digest = _digest(self.read())
        except OSError:
            digest = "unreadable"
        if digest == self._published:
            return
        with self.store.locked():
            digests = self._digests()
            digests[self.node] = digest
            self.store.write_text(DIGESTS, json.dumps(digests, sort_keys=True))
        self._published = digest

    def check_agreement(self, raw: bytes) -> None:
        """HafenceError when a live CRM uses another fence.cfg than ``raw``."""
        self.publish()
        mine = _digest(raw)
        others = sorted(
            n for n, d in self._digests().items() if n != self.node and d != mine and self.alive(n)
        )
        if others:
            raise HafenceError(
                f"fence.cfg differs between nodes: {', '.join(others)} use(s) another one than "
                f"this node ({self.describe()}); hardware fencing must not depend on which node "
                "is master: keep one copy in the store ('ha-manager fence-config import FILE', "
                "then 'hafence-crm --fence-config store')"
            )

    def _digests(self) -> dict[str, str]:
        try:
            data = json.loads(self.store.read_text(DIGESTS) or "{}")
        except ValueError:  # damaged: every CRM publishes again when its copy changes
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw.strip()).hexdigest() if raw.strip() else "none"


class _Progress:
    """What ``ha-manager status`` shows of one node's fence: the chain, the attempt, how
    the last one went. Fed by the Fencer as its history (one record per attempt)."""

    def __init__(self, chain: list[Any], history: Any, kinds: dict[str, str]) -> None:
        self.history = history
        self.path = getattr(history, "path", None)
        self.info: dict[str, Any] = {
            "state": "fencing",
            "since": round(time.time(), 3),
            "attempt": 1,
            "levels": [
                {"name": lv.name, "devices": [{"name": d.label, "kind": kinds.get(d.label, "")}
                                              for d in lv.devices]}
                for lv in chain
            ],
        }  # fmt: skip

    def append(self, rec: Any) -> None:  # the Fencer's history interface
        if not rec.ok:
            self.info.update(attempt=rec.attempt + 1, error=rec.error_kind or "failed")
        if self.history is not None:
            self.history.append(rec)


class FenceRunner:
    """Hardware fencing on an executor; the CRM step only starts and polls.

    A node without a chain in fence.cfg is FENCE_NONE (watchdog fencing only). Without
    an ``executor`` the runner starts its own :class:`~hafence.fence.ThreadLoop` (and
    stops it in :meth:`close`); ``rng`` draws the devices' random ``delay_max`` part and
    ``fencer_log`` receives the fencer's own lines (each level and device); the runner
    logs the start and the outcome of every fence in the HA log (``log_fn``). A fence
    starts only once ``ready(node)`` (the master wrote that the node is fenced); one
    that ends calls ``on_done`` (from the fence's loop): the daemon loop wakes and the
    master acts on the result at once. :meth:`confirmed` says what a confirmed off was
    (a power level?), :meth:`progress` how a fence goes.
    """

    def __init__(
        self,
        source: Source,
        *,
        actor: str,
        history_path: str | os.PathLike[str] | None = None,
        log_fn: Callable[[str, str], None],
        registry: Any = None,
        retries: int = 1,
        backoff: float = 1.0,
        executor: Executor | None = None,
        rng: random.Random | None = None,
        fencer_log: logging.Logger | None = None,
        on_done: Callable[[], None] | None = None,
        ready: Callable[[str], bool] = lambda _node: True,
    ) -> None:
        self.source = source
        self.on_done = on_done
        self.ready = ready  # whether a node may be powered off now (else: pending)
        self._confirmed: dict[str, dict[str, Any]] = {}  # node -> how its off was confirmed
        self._progress: dict[str, _Progress] = {}
        self.actor = actor
        self.history_path = history_path
        self._log = log_fn
        self.registry = registry
        self.retries = retries
        self.backoff = backoff
        self._own_executor = executor is None
        self.executor: Executor = executor if executor is not None else ThreadLoop()
        self.rng = rng
        self.fencer_log = fencer_log
        self._futures: dict[str, Pollable[Any]] = {}
        self._results: dict[str, str] = {}

    def _load(self) -> Any:
        """The fence config to use now, None for none; raises when it cannot be used."""
        raw = self.source.read()
        self.source.check_agreement(raw)
        if not self.source.configured:
            return None
        cfg = parse_fence_config(raw.decode(), self.source.describe())
        check_drivers(cfg, self.registry)  # bad options fail here, naming file/line/field
        return cfg

    def has_chain(self, node: str) -> bool | None:
        """True/False from fence.cfg; None when fence.cfg cannot be used."""
        try:
            cfg = self._load()
        except Exception:
            return None
        return cfg is not None and bool(cfg.chain(node))

    def power_chain(self, node: str) -> bool:
        """Whether ``node``'s chain has a level of power devices only (whose confirmed
        off recovers at once); False when fence.cfg cannot be used."""
        try:
            cfg = self._load()
            chain = cfg.chain(node) if cfg is not None else []
            kinds = self._kinds(chain)
        except Exception:
            return False
        return any(all(kinds[d.label] == POWER for d in lv.devices) for lv in chain)

    def _kinds(self, chain: list[Any]) -> dict[str, str]:
        """Each device's kind (power/fabric), from its driver (built, never contacted)."""
        return {d.label: build_driver(d, self.registry).kind for lv in chain for d in lv.devices}

    def confirmed(self, node: str) -> dict[str, Any] | None:
        """How the last fence of ``node`` confirmed the off: ``{"power": bool, "devices":
        [...], "level": name, "at": epoch}``; None while none did."""
        return self._confirmed.get(node)

    def progress(self, node: str) -> dict[str, Any] | None:
        """The running or last fence of ``node`` for ``ha-manager status``, or None."""
        prog = self._progress.get(node)
        return dict(prog.info) if prog is not None else None

    def start(self, node: str) -> str:
        fut = self._futures.get(node)
        if fut is not None and not fut.done():
            return FENCE_PENDING
        if fut is not None:
            self.poll(node)  # record the finished attempt before starting a new one
        try:
            cfg = self._load()
            chain = cfg.chain(node) if cfg is not None else []
        except Exception as exc:
            self._log("err", f"fencing: cannot use fence config {self.source.describe()}: {exc}")
            self._results[node] = FENCE_FAILED
            self._futures.pop(node, None)
            return FENCE_FAILED
        self._results.pop(node, None)  # a new attempt, or no hardware fencing any more
        if not chain:
            return FENCE_NONE
        if not self.ready(node):
            return FENCE_PENDING  # asked again next round
        levels = ", ".join(lv.name for lv in chain)
        self._log("notice", f"fencing: start hardware fence of node '{node}' (levels: {levels})")
        self._confirmed.pop(node, None)
        try:
            kinds = self._kinds(chain)
        except Exception:  # the fence fails on it and says why
            kinds = {}
        history = FenceHistory(self.history_path) if self.history_path is not None else None
        self._progress[node] = prog = _Progress(chain, history, kinds)
        fut = self.executor.submit(self._fence(cfg, node, prog))
        self._futures[node] = fut
        if self.on_done is not None:  # once done: a poll then sees the result
            fut.add_done_callback(lambda _f: self.on_done() if self.on_done else None)
        return FENCE_PENDING

    async def _fence(self, cfg: Any, node: str, history: _Progress) -> Any:
        fencer = Fencer(
            cfg,
            self.registry,
            history,  # a FenceHistory that also tracks the progress
            retries=self.retries,
            backoff=self.backoff,
            actor=self.actor,
            rng=self.rng,
            clock=self.executor.clock,
            log=self.fencer_log or logging.getLogger("hafence.fence"),
        )
        return await fencer.fence(node, "off")

    def poll(self, node: str) -> str:
        fut = self._futures.get(node)
        if fut is None:
            if node in self._results:
                return self._results[node]
            chain = self.has_chain(node)
            return FENCE_NONE if chain is False else FENCE_IDLE
        if not fut.done():
            return FENCE_PENDING
        del self._futures[node]
        try:
            if fut.cancelled():
                raise HafenceError("cancelled")
            res = fut.result()
        except Exception as exc:  # a fencer bug must read as a failed fence, never success
            self._log("err", f"fencing: fence of node '{node}' crashed: {exc!r}")
            self._results[node] = FENCE_FAILED
            return FENCE_FAILED
        prog = self._progress.get(node)
        if res.ok:
            devs = ", ".join(res.devices)
            kind = "power" if res.power_off else "fabric"
            self._log(
                "notice",
                f"fencing: node '{node}' confirmed off by level {res.level} ({devs}) "
                f"in {res.duration:.1f}s ({kind})",
            )
            self._confirmed[node] = {"power": res.power_off, "devices": list(res.devices),
                                     "level": res.level_name, "at": time.time()}  # fmt: skip
            if prog is not None:
                prog.info.update(state="confirmed", power=res.power_off, devices=res.devices)
            self._results[node] = FENCE_OK
        else:
            if prog is not None:
                prog.info.update(state="failed", error=res.error_kind or "failed")
            self._log(
                "err",
                f"fencing: fence of node '{node}' failed ({res.error_kind}): {res.message}",
            )
            self._results[node] = FENCE_FAILED
        return self._results[node]

    def reset(self, node: str) -> None:
        self._results.pop(node, None)
        self._confirmed.pop(node, None)
        self._progress.pop(node, None)
        fut = self._futures.pop(node, None)
        if fut is not None:
            fut.cancel()

    def close(self) -> None:
        """Cancel running fences (and stop the runner's own loop)."""
        for fut in self._futures.values():
            fut.cancel()
        self._futures.clear()
        if self._own_executor and isinstance(self.executor, ThreadLoop):
            self.executor.close()
