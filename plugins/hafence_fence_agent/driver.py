"""The ``fence_agent`` bridge: drive any installed ClusterLabs ``fence_*`` agent.

Options go to the agent as ``name=value`` lines on stdin (never in argv, where
passwords would show in ``ps``). Exit codes: 0 success; for ``status`` 0 = on,
2 = off; anything else is a failure, classified from the agent's own messages.
Each run is time-bounded and the agent's whole process group is killed on timeout
or cancellation.

Some agents hand the password on to a program they run, on *its* command line:
fence_ipmilan (and its aliases fence_idrac, fence_ilo3...) runs ``ipmitool -P PASSWORD``.
For agents that run ipmitool the bridge gives the agent no password at all; the password
travels in ``IPMI_PASSWORD`` and the agent's ``ipmitool_path`` is ``ipmitool_env.sh``,
which turns the agent's empty ``-P ''`` into ipmitool's ``-E`` (read it from the
environment). For any other agent that runs programs, :meth:`config_warnings` says that
its secrets may reach a command line (``hafence config check`` prints it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from hafence.errors import (
    AuthError,
    DeviceError,
    FenceTimeoutError,
    NotSupportedError,
    ParamError,
    StillOnError,
    UnknownDriverError,
    UnreachableError,
)
from hafence.fence.driver import COMMON_PARAMS, FABRIC, POWER, FenceDriver, Param, Port, PowerState
from hafence.secrets import MASK, Secret
from hafence_fence_agent.metadata import AgentInfo, find_agent, read_metadata

_COMMON = frozenset(p.name for p in COMMON_PARAMS)
# Checked in this order. ipmitool's own words (it runs with -v, see _stdin): a wrong
# password is "RAKP 2 HMAC is invalid" (IPMI 2.0) or "Activate Session command failed"
# (1.5), a wrong user "unauthorized name"; a BMC that does not answer fails its first
# request, "Get Auth Capabilities". Its closing "Unable to establish IPMI v2 / RMCP+
# session" is said in both cases, so it decides nothing.
_AUTH = re.compile(
    r"HMAC is invalid|unauthori[sz]ed name|Activate Session command failed"
    r"|authentication fail|login failed|invalid (user|password|credentials)"
    r"|incorrect password|unauthori[sz]ed|\b401\b|permission denied|access denied",
    re.IGNORECASE,
)
_UNREACHABLE = re.compile(
    r"connection (timed out|refused)|no route to host|unable to connect|network is unreachable"
    r"|name or service not known|timed out|host unreachable|Get Auth Capabilities"
    r"|Get Channel Authentication Capabilities",
    re.IGNORECASE,
)
IPMITOOL_WRAPPER = Path(__file__).with_name("ipmitool_env.sh")
DEFAULT_IPMITOOL = "/usr/bin/ipmitool"
# Agents whose confirmed off means the target lost its power (BMCs, PDUs, blade chassis,
# hypervisors and clouds stopping a VM); every other agent (switch ports, SAN zoning,
# SCSI reservations, sbd, kdump, ping heuristics) is FABRIC: the node may run on.
POWER_AGENTS = frozenset(
    "fence_" + a
    for a in """alom amt apc apc_snmp aws azure_arm bladecenter cdu cisco_ucs cyberpower_ssh
    docker drac drac5 eaton_snmp ecloud emerson eps gce hpblade ibm_powervs ibm_vpc ibmblade
    ibmz idrac ilo ilo2 ilo3 ilo3_ssh ilo4 ilo4_ssh ilo5 ilo5_ssh ilo_moonshot ilo_mp ilo_ssh
    imm intelmodular ipdu ipmilan ipmilanplus ironic kubevirt ldom lindypdu lpar netio
    openstack ovh powerman pve raritan raritan_px3 rcd_serial redfish rhevm rsa rsb skalar
    tripplite_snmp vbox virsh vmware vmware_rest vmware_soap vmware_vcloud wti xenapi
    zvmip""".split()
)
_STILL_ON = re.compile(r"timed out waiting to power off", re.IGNORECASE)
_NO_LIST = re.compile(r"list option is not working", re.IGNORECASE)


class FenceAgentDriver(FenceDriver):
    """Runs a ClusterLabs fence agent. As ``fence_agent`` it needs ``agent=fence_x``;
    :meth:`for_agent` gives a class named after the agent with its own schema."""

    name: ClassVar[str] = "fence_agent"
    description: ClassVar[str] = "Bridge to an installed ClusterLabs fence_* agent (stdin options)"
    params: ClassVar[tuple[Param, ...]] = (
        Param("agent", str, required=True, help="Agent to run, e.g. fence_ipmilan"),
    )
    actions: ClassVar[frozenset[str]] = frozenset({"status", "off", "on", "monitor", "list"})
    info: ClassVar[AgentInfo | None] = None

    @classmethod
    def for_agent(cls, agent: str) -> type[FenceAgentDriver]:
        """A driver class for one agent, schema from its metadata (cached per agent).

        Raises :class:`UnknownDriverError` if the agent is not installed.
        """
        return _agent_class(agent)

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        if cls.info is not None:
            out = super().validate(options)
            for key, value in out.items():
                text = value.reveal() if isinstance(value, Secret) else value
                if isinstance(text, str) and ("\n" in text or "\r" in text):
                    # one option per stdin line: a line break would smuggle in another
                    raise ParamError(key, "must not contain a line break")
            return out
        # Generic 'fence_agent': pick the agent's schema, then validate against it.
        opts = dict(options)
        agent = opts.pop("agent", None)
        if not agent or not isinstance(agent, str):
            raise ParamError("agent", f"required by driver '{cls.name}' (agent=fence_x)")
        try:
            sub = cls.for_agent(str(agent))
        except UnknownDriverError as exc:
            raise ParamError("agent", str(exc)) from None
        out = sub.validate(opts)
        out["agent"] = str(agent)
        return out

    def __init__(self, options: Mapping[str, Any], *, label: str | None = None) -> None:
        super().__init__(options, label=label)
        info = type(self).info or _agent_class(self.options["agent"]).info
        assert info is not None
        self.agent: AgentInfo = info
        self.kind = _kind(info.name)  # generic 'fence_agent': known from agent= only
        if label is None:
            self.label = info.name

    # -- running the agent ----------------------------------------------------------
    # The agent verifies off/on itself (fencing.py polls status), so the fencer gives
    # those calls power_wait + power_timeout on top of the request timeout.
    self_verifying: ClassVar[bool] = True

    def _timing(self) -> dict[str, int]:
        """The fencer's power_wait/power_timeout, in the whole seconds fencing.py reads."""
        out = {}
        pw = float(self.options.get("power_wait") or 0.0)
        pt = float(self.options.get("power_timeout") or 20.0)
        if "power_wait" in self.agent.accepts:
            out["power_wait"] = math.ceil(pw)
        if "power_timeout" in self.agent.accepts:
            out["power_timeout"] = max(1, math.ceil(pt))
        return out

    def bound(self, action: str) -> float:
        """How long one agent run may take before it is killed."""
        timeout = float(self.options.get("timeout") or 10.0)
        if action in ("on", "off", "reboot"):
            t = self._timing()
            timeout += t.get("power_wait", 0) + t.get("power_timeout", 0) + 1
        return timeout

    @property
    def _env_password(self) -> Secret | None:
        """The password that goes to ipmitool through IPMI_PASSWORD (not via the agent).

        Not with ``use_sudo``: sudo clears the environment, so the agent then needs the
        password itself (and :meth:`config_warnings` says where it ends up).
        """
        password = self.options.get("password")
        if not self.agent.runs_ipmitool or self.options.get("use_sudo"):
            return None
        return password if isinstance(password, Secret) else None

    def _stdin(self, action: str) -> bytes:
        lines = [f"action={action}"]
        if action in ("on", "off", "reboot"):
            lines += [f"{k}={v}" for k, v in self._timing().items()]
        # Verbose output carries the cause that tells a wrong password from a dead device
        # (for ipmitool only with its own -v, verbose_level 2); passwords are scrubbed.
        names = {p.name for p in self.params}
        chosen = any(self.options.get(k) is not None for k in ("verbose", "verbose_level"))
        if not chosen and "verbose" in names:
            lines.append("verbose=1")
            if self.agent.runs_ipmitool and "verbose_level" in names:
                lines.append("verbose_level=2")
        if self._env_password is not None:
            lines.append(f"ipmitool_path={_ipmitool_wrapper()}")
        for key, value in self.options.items():
            if key in _COMMON or key == "agent" or value is None or value is False:
                continue
            if self._env_password is not None and key in ("password", "ipmitool_path"):
                continue  # in the environment instead; ipmitool_path is the wrapper's
            if value is True:
                value = "1"
            elif isinstance(value, Secret):
                value = value.reveal()
            lines.append(f"{key}={value}")
        return ("\n".join(lines) + "\n").encode("utf-8")

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "LC_ALL": "C"}
        for name in ("IPMI_PASSWORD", "IPMITOOL_PASSWORD", "HAFENCE_IPMITOOL"):
            env.pop(name, None)  # only ever the one this device was given
        password = self._env_password
        if password is not None:
            env["IPMI_PASSWORD"] = password.reveal()
            env["HAFENCE_IPMITOOL"] = str(self.options.get("ipmitool_path") or DEFAULT_IPMITOOL)
        return env

    def config_warnings(self) -> list[tuple[str, str]]:
        """``(option, message)`` for each secret this agent may put on a command line,
        where ``ps`` and /proc/*/cmdline show it to every local user; and deprecated names."""
        out = super().config_warnings()
        given = [p.name for p in self.params if p.secret and self.options.get(p.name) is not None]
        if self.agent.runs_ipmitool:
            exposed = [n for n in given if n != "password" or self._env_password is None]
            why = "runs ipmitool with it on the command line (only the password is kept off"
            why += ", and not with use_sudo)" if self.options.get("use_sudo") else ")"
        elif self.agent.runs_programs:
            exposed = given
            why = "runs other programs and may put it on their command lines"
        else:
            return out
        return out + [
            (name, f"{self.agent.name} {why}, where ps shows it to every local user")
            for name in exposed
        ]

    def _scrub(self, text: str) -> str:
        for value in self.options.values():
            if isinstance(value, Secret) and value.reveal():
                text = text.replace(value.reveal(), MASK)
        return text

    async def _run(self, action: str) -> tuple[int, str, str]:
        timeout = self.bound(action)
        proc = await asyncio.create_subprocess_exec(
            self.agent.path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so ipmitool children die too
            env=self._env(),
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(self._stdin(action)), timeout)
        except TimeoutError:
            await _kill(proc)
            raise FenceTimeoutError(
                f"{self.agent.name} {action} gave no answer within {timeout:g}s",
                device=self.label,
            ) from None
        except BaseException:  # cancelled by the fencer's own bound: never leave it running
            await _kill(proc)
            raise
        rc = proc.returncode if proc.returncode is not None else -1
        return (
            rc,
            self._scrub(out.decode("utf-8", "replace")),
            self._scrub(err.decode("utf-8", "replace")),
        )

    def _failure(self, action: str, rc: int, out: str, err: str) -> Exception:
        text = "\n".join((err, out))
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln or "Failed" in ln or "Error" in ln]
        detail = (errors or lines or [f"exit code {rc}"])[-1]
        msg = f"{self.agent.name} {action}: {_strip_log(detail)}"
        if action == "off" and _STILL_ON.search(text):
            return StillOnError(msg, device=self.label)
        for pattern, cls in ((_AUTH, AuthError), (_UNREACHABLE, UnreachableError)):
            cause = next((ln for ln in lines if pattern.search(ln)), None)
            if cause is not None:
                if cause != detail:
                    msg += f" ({_strip_log(cause)})"
                return cls(msg, device=self.label)
        return DeviceError(msg, device=self.label)

    async def _simple(self, action: str) -> str:
        rc, out, err = await self._run(action)
        if rc != 0:
            raise self._failure(action, rc, out, err)
        return out

    # -- actions ------------------------------------------------------------------
    async def status(self) -> PowerState:
        rc, out, err = await self._run("status")
        if rc == 0:
            return PowerState.ON
        if rc == 2:
            return PowerState.OFF
        raise self._failure("status", rc, out, err)

    async def off(self) -> None:
        await self._simple("off")

    async def on(self) -> None:
        await self._simple("on")

    async def monitor(self) -> None:
        action = "monitor" if "monitor" in self.agent.actions else "status"
        rc, out, err = await self._run(action)
        if rc not in (0, 2) or (action == "monitor" and rc != 0):
            raise self._failure(action, rc, out, err)

    async def list(self) -> list[Port]:
        if "list" not in self.agent.actions:
            raise NotSupportedError(f"{self.agent.name}: cannot list ports", device=self.label)
        out = await self._simple("list")
        if _NO_LIST.search(out):
            raise NotSupportedError(f"{self.agent.name}: cannot list ports", device=self.label)
        ports = []
        for line in out.splitlines():
            if not line.strip():
                continue
            port, _, alias = line.partition(",")
            ports.append(Port(port.strip(), alias=alias.strip()))
        return ports


def _strip_log(line: str) -> str:
    """Drop fencing.py's "2026-01-01 10:00:00,123 ERROR: " prefix."""
    return re.sub(r"^\S+ \S+ (ERROR|DEBUG|INFO|WARNING): (\d+ +)?", "", line).strip()


def _kind(agent: str) -> str:
    return POWER if agent in POWER_AGENTS else FABRIC


@functools.cache
def _agent_class(agent: str) -> type[FenceAgentDriver]:
    path = find_agent(agent)
    if path is None:
        raise UnknownDriverError("fence", agent, ["fence_agent", "installed fence_* agents"])
    try:
        info = read_metadata(agent, path)
    except Exception as exc:
        raise UnknownDriverError("fence", f"{agent} ({exc})", []) from None
    return type(
        f"FenceAgent_{agent}",
        (FenceAgentDriver,),
        {
            "name": agent,
            "description": info.description or f"ClusterLabs {agent} through the bridge",
            "params": info.params,
            "info": info,
            "kind": _kind(agent),
            "actions": frozenset({"status", "off", "on", "monitor"}) | (info.actions & {"list"}),
            "__module__": __name__,
        },
    )


@functools.cache
def _ipmitool_wrapper() -> str:
    """ipmitool_env.sh, executable (fence_ipmilan insists); an install that lost the
    executable bit gets a private copy that has it."""
    if os.access(IPMITOOL_WRAPPER, os.X_OK):
        return str(IPMITOOL_WRAPPER)
    copy = Path(tempfile.mkdtemp(prefix="hafence-ipmitool-")) / IPMITOOL_WRAPPER.name
    shutil.copyfile(IPMITOOL_WRAPPER, copy)
    copy.chmod(stat.S_IRWXU)
    return str(copy)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
