"""Simulated power and fence devices: the real fencer, on the simulator's virtual time.

The simulated cluster fences exactly as the daemons do: each node's CRM has a
:class:`~hafence.ha.fencerun.FenceRunner` that reads the cluster's fence.cfg and runs the
real :class:`~hafence.fence.Fencer` (levels, sub-devices, retries, back-off, delays,
off-then-verify by polling) with the real parser and driver validation. Only the device
is simulated: driver ``sim_power`` (:class:`SimPowerDriver`) switches one power supply
of a simulated node, on a :class:`~hafence.fence.VirtualLoop` that the hardware advances
with its clock, so a slow device or a back-off takes virtual seconds and no real ones.

Power model: a node runs while its power is on. A ``sim_power`` device with
``supply=chassis`` (the default: a BMC) cuts the whole node; one with ``supply=NAME``
(a PDU outlet) cuts one of the node's supplies, and the node loses power only when all
of its supplies declared in fence.cfg are cut. Powering a node on (``power NODE on``)
restores its supplies.

Faults (``fault=``), as real devices have them:

=============  =========================================================================
``none``       works
``fails``      its first ``fault_count`` off requests fail (a busy or flaky BMC)
``always``     every request is refused (dead, unreachable at once)
``flaky``      every request fails with probability ``fault_rate``
``stuck``      accepts off, the power stays on (and status says so)
``lying``      accepts off, reports off, the power stays on
``unreachable`` never answers: every request runs into the fencer's ``timeout``
=============  =========================================================================

``latency`` makes every request take that many (virtual) seconds: a slow device, which
runs into ``timeout`` when it is longer.

What really happened is recorded for the safety checker (:mod:`hafence.sim.safety`),
which must not believe the devices: per device and node (:class:`DeviceState`) when an
off request really left its supply off, and every real cut (``SimFencing.on_cut``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from hafence.errors import ConfigError, DeviceError, UnreachableError
from hafence.fence import Param, PowerState, VirtualLoop, check_drivers, parse_fence_config
from hafence.fence.driver import POWER, FenceDriver
from hafence.fence.params import standard
from hafence.ha.env import FENCE_NONE
from hafence.ha.fencerun import FenceRunner, StaticSource
from hafence.plugins import DriverPlugin, PluginRegistry

if TYPE_CHECKING:
    from hafence.sim.env import SimEnv
    from hafence.sim.hardware import Hardware

CHASSIS = "chassis"
FAULTS = ("none", "fails", "always", "flaky", "stuck", "lying", "unreachable")
DRIVER = "sim_power"

# The fencer's own lines (each level and device) in the simulator: not part of the HA log
# the scenarios compare (the runner's lines are); a handler added here shows them.
FENCER_LOG = logging.getLogger("hafence.sim.fencer")
FENCER_LOG.addHandler(logging.NullHandler())
FENCER_LOG.propagate = False


@dataclass
class DeviceState:
    """What one simulated device did for one node (it survives driver instances)."""

    requests: int = 0
    off_requests: int = 0
    failed: int = 0  # requests answered with an error (or never)
    claims_off: bool = False  # a lying device's story since the node last got power
    cuts: list[float] = field(default_factory=list)  # when it really cut power
    # [from, until): since an off request left its supply really off (cut then, or off
    # already) or a status read found it really off, until the supply came back: what a
    # truthful device confirms, and the safety checker's evidence of a fence
    offs: list[list[float]] = field(default_factory=list)

    def switched_off(self, now: float) -> None:
        if not self.offs or self.offs[-1][1] != math.inf:
            self.offs.append([now, math.inf])

    def restored(self, now: float) -> None:
        if self.offs and self.offs[-1][1] == math.inf:
            self.offs[-1][1] = now

    def off_at(self, when: float) -> bool:
        """Whether its supply was off at ``when``, as this device switched or saw it."""
        return any(start <= when < until for start, until in self.offs)


class SimPowerDriver(FenceDriver):
    """A simulated power switch for one node's chassis or one of its supplies."""

    name: ClassVar[str] = DRIVER
    kind: ClassVar[str] = POWER  # it cuts a node's (simulated) supply
    description: ClassVar[str] = (
        "Simulated power switch of the simulator (hafence.sim): one node's chassis or "
        "one of its power supplies, on virtual time, with faults"
    )
    params: ClassVar[tuple[Param, ...]] = (
        standard("plug", required=True, help="The simulated node it powers"),
        Param("supply", str, default=CHASSIS, help="chassis (the whole node), or a supply's name"),
        Param("fault", str, default="none", choices=FAULTS, help="How the device misbehaves"),
        Param("fault_count", int, default=1, help="fault=fails: how many off requests fail"),
        Param("fault_rate", float, default=0.5, max=1.0, help="fault=flaky: failure chance"),
        Param("latency", float, default=0.0, help="Seconds every request takes"),
    )
    actions: ClassVar[frozenset[str]] = frozenset({"status", "off", "on", "monitor"})
    fencing: ClassVar[SimFencing | None] = None  # the cluster it belongs to (bound)

    def __init__(self, options: Mapping[str, Any], *, label: str | None = None) -> None:
        super().__init__(options, label=label)
        if self.fencing is None:
            raise DeviceError("sim_power is only usable inside the simulator", device=self.label)
        self.panel: SimFencing = self.fencing
        self.node: str = self.options["plug"]
        self.supply: str = self.options["supply"]
        self.state = self.panel.device_state(self.label, self.node)

    async def _request(self, what: str) -> None:
        """One request: its latency, then its fault (an exception) if it has one."""
        st, o = self.state, self.options
        st.requests += 1
        st.off_requests += what == "off"
        if o["latency"] > 0:
            await asyncio.sleep(o["latency"])
        fault = o["fault"]
        if fault == "unreachable":
            st.failed += 1
            await asyncio.Event().wait()  # never answers: the fencer's time bound ends it
        if fault == "always":
            st.failed += 1
            raise UnreachableError("connection refused (simulated)", device=self.label)
        failing = fault == "fails" and what == "off" and st.off_requests <= o["fault_count"]
        if failing or (fault == "flaky" and self.panel.rng.random() < o["fault_rate"]):
            st.failed += 1
            raise DeviceError(f"{what}: simulated failure", device=self.label)

    async def status(self) -> PowerState:
        await self._request("status")
        if self.panel.is_off(self.node, self.supply):
            self.state.switched_off(self.panel.now())
            return PowerState.OFF
        return PowerState.OFF if self.state.claims_off else PowerState.ON

    async def off(self) -> None:
        await self._request("off")
        fault = self.options["fault"]
        if fault == "lying":
            self.state.claims_off = True
        elif fault != "stuck":
            self.panel.cut(self.node, self.supply, self.state)
        if self.panel.is_off(self.node, self.supply):
            self.state.switched_off(self.panel.now())

    async def on(self) -> None:
        await self._request("on")
        self.state.claims_off = False
        if self.options["fault"] not in ("lying", "stuck"):
            self.panel.restore(self.node, self.supply)
            self.state.restored(self.panel.now())


class SimFencing:
    """A simulated cluster's fencing: its fence.cfg, devices, virtual loop and runners."""

    def __init__(self, hw: Hardware, seed: int = 0) -> None:
        self.hw = hw
        self.config = ""  # the cluster's fence.cfg (driver sim_power)
        self.retries = 0  # per attempt of the CRM (one attempt per round, by default)
        self.backoff = 1.0
        self.rng = random.Random(seed)
        self.loop = VirtualLoop(start=hw.cur_time)
        self.registry = PluginRegistry(load_entry_points=False)
        driver = type(DRIVER, (SimPowerDriver,), {"fencing": self})
        self.registry.register(DriverPlugin(driver), "sim-power")
        self.devices: dict[tuple[str, str], DeviceState] = {}
        self.supplies: dict[str, set[str]] = {}  # node -> its supplies named in fence.cfg
        self.cut_supplies: dict[str, set[str]] = {}  # node -> cut by a fence device
        self.on_cut: list[Callable[[str, float], None]] = []  # observers: (node, time)
        self._runners: dict[str, FenceRunner] = {}

    # -- configuration ------------------------------------------------------------------
    def set_config(self, text: str) -> None:
        """Use ``text`` as the cluster's fence.cfg (checked now, as ``hafence config check``
        does: errors name line and field)."""
        cfg = parse_fence_config(text, "fence.cfg")
        check_drivers(cfg, self.registry)
        supplies: dict[str, set[str]] = {}
        for node in cfg.nodes():
            for dev in (d for level in cfg.chain(node) for d in level.devices):
                opts = dev.options()
                plug = opts.get("plug", opts.get("port", node))
                if plug not in self.hw.status:
                    line = dev.connect_line if "plug" in dict(dev.connect_args) else dev.device_line
                    raise ConfigError(
                        f"no simulated node '{plug}'", file="fence.cfg", line=line, field="plug"
                    )
                supply = opts.get("supply") or CHASSIS
                if supply != CHASSIS:
                    supplies.setdefault(plug, set()).add(supply)
        self.config, self.supplies = text, supplies

    def add_device(self, node: str, fails: int = 0, **options: Any) -> DeviceState:
        """One more level for ``node``: a device of its own (``fails``: how many off
        requests fail first, -1 for every request); ``options`` are sim_power's."""
        if fails:
            options.setdefault("fault", "always" if fails < 0 else "fails")
            if fails > 0:
                options.setdefault("fault_count", fails)
        label = f"fence-{node}"
        n = 1
        while f"device {label} " in self.config:
            n += 1
            label = f"fence-{node}-{n}"
        args = " ".join(f"{k}={v}" for k, v in options.items())
        text = f"device {label} {DRIVER} {args}".rstrip() + f"\nconnect {label} node={node} "
        self.set_config(self.config + text + f"plug={node}\n")
        return self.device_state(label, node)

    def device_state(self, label: str, node: str) -> DeviceState:
        return self.devices.setdefault((label, node), DeviceState())

    # -- the power model ----------------------------------------------------------------
    def is_off(self, node: str, supply: str) -> bool:
        if supply == CHASSIS:
            return self.hw.status[node]["power"] == "off"
        return supply in self.cut_supplies.get(node, set())

    def now(self) -> float:
        """The time a device acts at: the loop's, or the hardware's when it has moved on
        since (it advances the loop after each node's rounds, so a device may act up to
        a round late, as if it were that much slower)."""
        self.hw.cur_time = max(self.hw.cur_time, self.loop.time())
        return self.hw.cur_time

    def cut(self, node: str, supply: str, state: DeviceState) -> None:
        """A device really switches ``supply`` of ``node`` off, now."""
        now = self.now()
        cut = self.cut_supplies.setdefault(node, set())
        cut.add(supply)
        state.cuts.append(now)
        for cb in self.on_cut:
            cb(node, now)
        if CHASSIS in cut or (supply != CHASSIS and self.supplies.get(node, set()) <= cut):
            self.hw.power_off(node, "fence")  # logged even when it was off already

    def restore(self, node: str, supply: str) -> None:
        self.cut_supplies.get(node, set()).discard(supply)

    def powered_on(self, node: str) -> None:
        """The node got power back (an admin, a reboot): its supplies are whole again and
        no device can claim it off any more."""
        self.cut_supplies.pop(node, None)
        for (_, plug), st in self.devices.items():
            if plug == node:
                st.claims_off = False
                st.restored(self.hw.cur_time)

    # -- the fence runners --------------------------------------------------------------
    def runner(self, env: SimEnv) -> FenceRunner:
        """The fence runner of ``env``'s CRM (one per node, as on real nodes)."""
        runner = self._runners.get(env.nodename)
        if runner is None:
            runner = self._runners[env.nodename] = FenceRunner(
                StaticSource(lambda: self.config),
                actor=env.nodename,
                log_fn=env.log,
                registry=self.registry,
                retries=self.retries,
                backoff=self.backoff,
                executor=self.loop,
                rng=self.rng,
                fencer_log=FENCER_LOG,
            )
        return runner

    def start(self, env: SimEnv, node: str) -> str:
        if not self.config:
            return FENCE_NONE
        state = self.runner(env).start(node)
        self.advance(env.cur_time)  # a device that answers at once has answered now
        return state

    def poll(self, env: SimEnv, node: str) -> str:
        if not self.config:
            return FENCE_NONE
        self.advance(env.cur_time)
        return self.runner(env).poll(node)

    def reset(self, env: SimEnv, node: str) -> None:
        if env.nodename in self._runners:
            self._runners[env.nodename].reset(node)

    def crashed(self, node: str) -> None:
        """``node``'s CRM is gone (power off, exit): its fences die with it."""
        runner = self._runners.pop(node, None)
        if runner is not None:
            runner.close()

    def advance(self, until: float) -> None:
        """Let the devices and fencers act up to cluster time ``until``."""
        self.loop.run_until(until)

    def close(self) -> None:
        self.loop.shutdown()
