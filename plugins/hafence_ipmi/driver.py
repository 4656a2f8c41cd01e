"""The ``ipmi`` fence driver: chassis power control of one BMC over IPMI 2.0 (pyghmi).

Actions send the plain IPMI chassis commands (Get Chassis Status, Chassis Control)
and return at once: ``off`` is a hard power off without pyghmi's own 1 s polling,
because the fencer confirms off by polling ``status`` at its own ``poll_interval``.
Sessions are reused across calls and driver instances (see :mod:`.session`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from hafence.errors import DeviceError, FenceError, NotSupportedError, ParamError
from hafence.fence.driver import POWER, FenceDriver, Param, Port, PowerState
from hafence.fence.params import standard

from .session import POOL, PRIVILEGE_LEVELS, SessionPool, Target, raw, run

log = logging.getLogger("hafence.ipmi")

# IPMI chassis netfn 0x00: Get Chassis Status 0x01, Chassis Control 0x02 (data byte:)
NETFN_CHASSIS = 0x00
CMD_STATUS = 0x01
CMD_CONTROL = 0x02
CONTROL = {"off": 0x00, "on": 0x01, "cycle": 0x02, "reset": 0x03, "diag": 0x04}

# pyghmi proposes cipher suite 17 (SHA-256) and falls back to 3 (SHA-1, AES-128) by
# itself; it cannot be told which. We accept the two it speaks, refuse the rest.
CIPHERS = ("3", "17")

# IPMI 2.0 field sizes: a longer value is not sent as it was typed, and a BMC answers
# "incorrect password" (or pyghmi refuses the name) - an auth failure that is really a
# configuration error, so it is refused as one before anything is sent.
MAX_BYTES = {"username": 16, "password": 20, "kg": 20}


class IpmiDriver(FenceDriver):
    name: ClassVar[str] = "ipmi"
    kind: ClassVar[str] = POWER
    description: ClassVar[str] = (
        "IPMI 2.0 (lanplus) BMC power control through pyghmi: status, hard off, on, "
        "reboot (off/on verified by the fencer, or the BMC's power cycle/reset), "
        "diagnostic interrupt; sessions are reused"
    )
    params: ClassVar[tuple[Param, ...]] = (
        standard("ip", required=True, help="BMC address"),
        # 'port' was this driver's name of the UDP port; in fence-agents it is the plug
        standard("ipport", default=623, help="BMC UDP port", deprecated=("port",)),
        standard("username", default="", help="IPMI user name"),
        standard(
            "password",
            required=True,
            help="IPMI password (or password_file=PATH / password_env=VARIABLE)",
        ),
        Param(
            "privlvl",
            str,
            default="administrator",
            choices=tuple(PRIVILEGE_LEVELS),
            help="Privilege level to request (chassis control needs operator or above)",
        ),
        Param(
            "lanplus",
            bool,
            default=True,
            help="Use IPMI 2.0 (RMCP+). pyghmi speaks only lanplus: lanplus=0 is refused",
        ),
        Param(
            "cipher",
            str,
            choices=CIPHERS,
            help=(
                "Cipher suite. pyghmi negotiates it itself (17 = SHA-256/AES first, then "
                "3 = SHA-1/AES-128) and cannot pin one; only 3 and 17 are accepted"
            ),
        ),
        Param("kg", str, secret=True, help="BMC key (K_g), if the BMC requires one"),
        Param(
            "method",
            str,
            default="onoff",
            choices=("onoff", "cycle", "reset"),
            help=(
                "Reboot method: onoff = off, confirmed off, on (the safe default); "
                "cycle = the BMC's power cycle; reset = the BMC's hard reset"
            ),
        ),
    )
    # 'diag' is an extra (the CLI may offer it); 'reboot' is added per instance by method.
    actions: ClassVar[frozenset[str]] = frozenset(
        {"status", "off", "on", "monitor", "list", "diag"}
    )

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        label: str | None = None,
        pool: SessionPool | None = None,
    ) -> None:
        super().__init__(options, label=label)
        if not self.options["lanplus"]:
            raise ParamError(
                "lanplus",
                "IPMI 1.5 (lanplus=0) is not supported: pyghmi speaks IPMI 2.0 only; "
                "use lanplus=1 or the fence_agent driver with fence_ipmilan",
            )
        for field, limit in MAX_BYTES.items():
            value = self.options[field]
            size = len((value.reveal() if hasattr(value, "reveal") else value or "").encode())
            if size > limit:
                raise ParamError(field, f"IPMI 2.0 allows at most {limit} bytes; this has {size}")
        # A native reboot only when asked for; otherwise the fencer does off-verify-on.
        if self.options["method"] != "onoff":
            self.actions = frozenset({*type(self).actions, "reboot"})
        self.target = Target(
            host=self.options["ip"],
            port=self.options["ipport"],
            user=self.options["username"],
            password=self.options["password"],
            privlvl=self.options["privlvl"],
            kg=self.options["kg"],
        )
        self.pool = pool or POOL

    @property
    def timeout(self) -> float:
        # Slightly under the fencer's own bound on the call, so our precise
        # UnreachableError wins over its generic timeout.
        return float(self.options["timeout"]) * 0.9

    async def _run(self, what: str, fn: Any) -> Any:
        try:
            return await run(self.target, fn, self.timeout, what, pool=self.pool)
        except FenceError as exc:
            exc.device = exc.device or self.label
            raise

    # -- actions ------------------------------------------------------------------------
    async def status(self) -> PowerState:
        data = await self._run("status", _get_status)
        return PowerState.ON if data[0] & 0x01 else PowerState.OFF

    async def off(self) -> None:
        await self._run("off", lambda cmd: _control(cmd, "off"))
        log.debug("ipmi %s: power off requested", self.label)

    async def on(self) -> None:
        await self._run("on", lambda cmd: _control(cmd, "on"))

    async def reboot(self) -> None:
        method = self.options["method"]
        if method == "onoff":
            raise NotSupportedError(
                "ipmi: method=onoff reboots as off, confirmed off, on (done by the fencer)",
                device=self.label,
            )

        def native(cmd: Any) -> None:
            # Cycle and reset do nothing to a chassis that is off: power it on instead.
            on = _get_status(cmd)[0] & 0x01
            _control(cmd, method if on else "on")

        await self._run("reboot", native)

    async def diag(self) -> None:
        """Pulse a diagnostic interrupt (NMI): the target's OS may dump and reboot."""
        await self._run("diag", lambda cmd: _control(cmd, "diag"))

    async def monitor(self) -> None:
        """Reachable, credentials good, chassis status readable."""
        await self.status()

    async def list(self) -> list[Port]:
        state = await self.status()
        t = self.target
        return [Port(id=t.host, name=f"{t.host}:{t.port}", alias="bmc", state=state)]

    async def close(self) -> None:
        # Sessions stay in the pool on purpose: the next driver for this BMC reuses them.
        return None

    @property
    def logins(self) -> int:
        """How many times this process logged in to this BMC as this user."""
        return self.pool.login_count(self.target)


def _get_status(cmd: Any) -> bytes:
    data = raw(cmd, NETFN_CHASSIS, CMD_STATUS)
    if not data:
        raise DeviceError("Get Chassis Status: empty answer")
    return data


def _control(cmd: Any, what: str) -> None:
    raw(cmd, NETFN_CHASSIS, CMD_CONTROL, (CONTROL[what],))
