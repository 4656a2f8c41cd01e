"""The nodes' BMCs: one OpenIPMI ``ipmi_sim`` per node, outside the node.

Each BMC listens on its own address on the lab bridge (``layout.bmc_addr``), keeps the
node's power state in a file (its ``chassis_control`` program) and is what
``hafence-crm`` fences through (driver ``ipmi``). The supervisor reads that file: off
kills the node's namespace, on boots it (see :mod:`hafence.lab.physics`).

Faults: *dead* stops the ipmi_sim process (SIGSTOP: requests time out, as with a BMC
that hangs or lost its network); it comes back as a hung BMC does, reset by its own
watchdog: a fresh ipmi_sim on the same port with the same power state, so requests sent
while it hung are lost, not carried out late (a stopped process would find them queued
in its socket and power the node off long after the fence gave up on it). *stuck* makes
it accept power-off and keep the power on (the chassis program's stuck mode), *flaky* is
dead on and off (physics toggles it).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal

from hafence.lab.layout import Layout
from hafence.lab.timings import LabTimings
from hafence.simdevices.ipmi_sim import IpmiSim

USER = "admin"


class Bmcs:
    def __init__(self, layout: Layout, password: str, ports: dict[str, int] | None = None):
        self.layout = layout
        ports = ports or {}
        self.sims = {
            n: IpmiSim(
                user=USER,
                password=password,
                host=layout.bmc_addr(n),
                port=ports.get(n),
                workdir=layout.bmc_dir(n),
            )
            for n in layout.nodes
        }
        self.dead: set[str] = set()

    def start(self) -> dict[str, int]:
        """Start every BMC (power on); their UDP ports."""
        for node, sim in self.sims.items():
            self._write_off_hook(node, sim)
            sim.start()
        return self.ports()

    def _write_off_hook(self, node: str, sim: IpmiSim) -> None:
        """Cut power kills the machine before the BMC answers "off": the hook kills every
        process of the node's namespace and logs the death (the supervisor's physics sees
        the power file a tick later and only tidies up; a fence confirmed in between must
        never find the node's services still running)."""
        lay = self.layout
        hook = sim.power_file.with_name(sim.power_file.name + ".off-hook")
        sim.workdir.mkdir(parents=True, exist_ok=True)
        hook.write_text(
            "#!/bin/sh\n"
            f"for p in $(ip netns pids {shlex.quote(lay.netns(node))}); do kill -9 $p; done\n"
            f'printf \'{{"t": %s, "event": "died", "node": "{node}", '
            f'"why": "power cut"}}\\n\' "$(date +%s.%N)" >> {shlex.quote(str(lay.events_file))}\n'
        )
        hook.chmod(0o700)

    def ports(self) -> dict[str, int]:
        return {n: sim.port for n, sim in self.sims.items()}

    def stop(self) -> None:
        for node in list(self.dead):  # a stopped process group ignores SIGTERM
            pid = self.sims[node].pid
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        self.dead.clear()
        for sim in self.sims.values():
            sim.stop()

    # -- the hardware --------------------------------------------------------------------
    def powered(self, node: str) -> bool:
        return self.sims[node].power == "on"

    def press_power(self, node: str, on: bool) -> None:
        """The power button (not through IPMI)."""
        self.sims[node].set_power(on)

    def set_dead(self, node: str, dead: bool) -> None:
        sim = self.sims[node]
        if dead == (node in self.dead):
            return
        pid = sim.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGSTOP if dead else signal.SIGKILL)
        if not dead:
            sim.restart()  # the BMC's reset: what queued up while it hung is gone
        (self.dead.add if dead else self.dead.discard)(node)

    def set_stuck(self, node: str, stuck: bool) -> None:
        self.sims[node].set_stuck(stuck)

    def stuck(self, node: str) -> bool:
        return self.sims[node].stuck

    # -- fence.cfg -------------------------------------------------------------------------
    def fence_cfg(self, password_file: str, timings: LabTimings) -> str:
        """fence.cfg lines: level 1 of every node's chain, its BMC (declared first)."""
        t = f"{timings.fence_timeout:g}"
        out = ""
        for node, sim in self.sims.items():
            out += (
                f"device bmc-{node} ipmi ip={sim.host} ipport={sim.port} username={USER} "
                f"password_file={password_file} lanplus=1 timeout={t} power_timeout={t} "
                f"poll_interval=0.2\nconnect bmc-{node} node={node}\n"
            )
        return out
