"""The ``fence_agent`` bridge: drive any installed ClusterLabs ``fence_*`` agent.

Options go to the agent as ``name=value`` lines on stdin (never in argv, where
passwords would show in ``ps``). Exit codes: 0 success; for ``status`` 0 = on,
2 = off; anything else is a failure, classified from the agent's own messages.
Each run is time-bounded and the agent's whole process group is killed on timeout
or cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import re
import signal
from collections.abc import Mapping
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
from hafence.fence.driver import COMMON_PARAMS, FenceDriver, Param, Port, PowerState
from hafence.secrets import MASK, Secret
from hafence_fence_agent.metadata import AgentInfo, find_agent, read_metadata

_COMMON = frozenset(p.name for p in COMMON_PARAMS)
_AUTH = re.compile(
    r"RMCP\+ session|RAKP|authenticat|login failed|invalid (user|password|credentials)"
    r"|incorrect password|unauthori[sz]ed|\b401\b|permission denied|access denied",
    re.IGNORECASE,
)
_UNREACHABLE = re.compile(
    r"connection (timed out|refused)|no route to host|unable to connect|network is unreachable"
    r"|name or service not known|timed out|host unreachable",
    re.IGNORECASE,
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
        if not agent:
            raise ParamError("agent", f"required by driver '{cls.name}'")
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

    def _stdin(self, action: str) -> bytes:
        lines = [f"action={action}"]
        if action in ("on", "off", "reboot"):
            lines += [f"{k}={v}" for k, v in self._timing().items()]
        # Verbose output carries the cause (e.g. ipmitool's RMCP+ session error) that
        # tells a wrong password from a dead device; fencing.py masks passwords in it.
        if self.options.get("verbose") is None and any(p.name == "verbose" for p in self.params):
            lines.append("verbose=1")
        for key, value in self.options.items():
            if key in _COMMON or key == "agent" or value is None or value is False:
                continue
            if value is True:
                value = "1"
            elif isinstance(value, Secret):
                value = value.reveal()
            lines.append(f"{key}={value}")
        return ("\n".join(lines) + "\n").encode("utf-8")

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
            env={**os.environ, "PYTHONWARNINGS": "ignore", "LC_ALL": "C"},
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
        for pattern, cls in ((_UNREACHABLE, UnreachableError), (_AUTH, AuthError)):
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
            "actions": frozenset({"status", "off", "on", "monitor"}) | (info.actions & {"list"}),
            "__module__": __name__,
        },
    )


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
