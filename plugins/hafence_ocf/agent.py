"""One installed OCF resource agent: where it is, its meta-data, and running one action.

An agent is named ``PROVIDER:TYPE`` (``heartbeat:IPaddr2``; ``ocf:heartbeat:IPaddr2`` is
accepted too) and lives at ``$OCF_ROOT/resource.d/PROVIDER/TYPE`` (OCF_ROOT defaults to
/usr/lib/ocf, where Debian's ``resource-agents`` installs them). Parameters reach the agent
as ``OCF_RESKEY_<name>`` environment variables, as the OCF standard says: never in argv.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hafence.secrets import MASK, Secret

DEFAULT_OCF_ROOT = "/usr/lib/ocf"
METADATA_TIMEOUT = 15.0
DEFAULT_TIMEOUT = 20.0  # an action the meta-data gives no timeout for (OCF's usual minimum)

# OCF exit codes (OCF resource agent API 1.1).
OCF_SUCCESS = 0
OCF_ERR_GENERIC = 1
OCF_ERR_ARGS = 2
OCF_ERR_UNIMPLEMENTED = 3
OCF_ERR_PERM = 4
OCF_ERR_INSTALLED = 5
OCF_ERR_CONFIGURED = 6
OCF_NOT_RUNNING = 7
OCF_RUNNING_PROMOTED = 8
OCF_FAILED_PROMOTED = 9
RC_NAMES = {
    0: "success", 1: "generic error", 2: "invalid arguments", 3: "unimplemented",
    4: "insufficient privileges", 5: "not installed", 6: "not configured", 7: "not running",
    8: "running (promoted)", 9: "failed (promoted)",
}  # fmt: skip

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|msec|s|sec|m|min|h|hr)?\s*$", re.IGNORECASE)
_UNITS = {None: 1.0, "ms": 0.001, "msec": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0,
          "min": 60.0, "h": 3600.0, "hr": 3600.0}  # fmt: skip


def ocf_root() -> Path:
    return Path(os.environ.get("OCF_ROOT") or DEFAULT_OCF_ROOT)


def parse_duration(text: str) -> float:
    """An OCF/Pacemaker interval (``20s``, ``2min``, ``100ms``, ``30``) in seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"invalid duration '{text}' (e.g. 20s, 2min)")
    unit = m.group(2).lower() if m.group(2) else None
    return float(m.group(1)) * _UNITS[unit]


def split_agent(spec: str) -> tuple[str, str]:
    """``[ocf:]PROVIDER:TYPE`` -> (provider, type); ValueError when malformed."""
    parts = spec.split(":")
    if len(parts) == 3 and parts[0] == "ocf":
        parts = parts[1:]
    if len(parts) != 2 or not all(_PART.match(p) for p in parts):
        raise ValueError(f"invalid agent '{spec}' (expected PROVIDER:TYPE, e.g. heartbeat:Dummy)")
    return parts[0], parts[1]


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type: str = "string"
    required: bool = False
    default: str | None = None
    options: tuple[str, ...] = ()  # for type="select"


@dataclass(frozen=True)
class Metadata:
    name: str
    params: dict[str, ParamInfo] = field(default_factory=dict)
    timeouts: dict[str, float] = field(default_factory=dict)  # action -> seconds
    actions: frozenset[str] = frozenset()

    def timeout(self, action: str) -> float:
        return self.timeouts.get(action, DEFAULT_TIMEOUT)


def parse_metadata(xml_text: str) -> Metadata:
    root = ET.fromstring(xml_text)
    params: dict[str, ParamInfo] = {}
    for node in root.findall("./parameters/parameter"):
        content = node.find("content")
        ptype = content.get("type", "string") if content is not None else "string"
        options = tuple(o.get("value", "") for o in node.iter("option"))
        params[node.get("name", "")] = ParamInfo(
            node.get("name", ""),
            ptype,
            node.get("required") == "1",
            content.get("default") if content is not None else None,
            options,
        )
    timeouts: dict[str, float] = {}
    actions = set()
    for node in root.findall("./actions/action"):
        name = node.get("name", "")
        actions.add(name)
        if node.get("timeout") and name not in timeouts:  # first one: monitor depth 0
            with contextlib.suppress(ValueError):
                timeouts[name] = parse_duration(node.get("timeout", ""))
    return Metadata(root.get("name", ""), params, timeouts, frozenset(actions))


@dataclass(frozen=True)
class Result:
    rc: int
    output: str  # stdout + stderr, secrets masked

    @property
    def last_line(self) -> str:
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        return lines[-1] if lines else RC_NAMES.get(self.rc, f"exit code {self.rc}")


class AgentTimeout(Exception):
    pass


@dataclass(frozen=True)
class Agent:
    provider: str
    type: str

    @classmethod
    def from_spec(cls, spec: str) -> Agent:
        return cls(*split_agent(spec))

    @property
    def spec(self) -> str:
        return f"ocf:{self.provider}:{self.type}"

    @property
    def path(self) -> Path:
        return ocf_root() / "resource.d" / self.provider / self.type

    def installed(self) -> bool:
        return os.access(self.path, os.X_OK)

    def metadata(self) -> Metadata:
        """The agent's meta-data (cached until the agent file changes)."""
        st = self.path.stat()
        return _metadata(str(self.path), st.st_mtime_ns, self.type)

    def run(
        self,
        action: str,
        instance: str,
        params: Mapping[str, str | Secret],
        *,
        timeout: float,
        extra_env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run one action; its process group is killed at ``timeout`` (AgentTimeout)."""
        env = _base_env(self, instance, timeout, extra_env)
        for key, value in params.items():
            env[f"OCF_RESKEY_{key}"] = value.reveal() if isinstance(value, Secret) else value
        proc = subprocess.Popen(
            [str(self.path), action],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills its children too
            text=True,
            errors="replace",
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AgentTimeout(f"{self.spec} {action} did not finish within {timeout:g}s") from None
        return Result(proc.returncode, mask_secrets(out, params))


def mask_secrets(text: str, params: Mapping[str, str | Secret]) -> str:
    for value in params.values():
        if isinstance(value, Secret) and value.reveal():
            text = text.replace(value.reveal(), MASK)
    return text


def _base_env(
    agent: Agent, instance: str, timeout: float, extra: Mapping[str, str] | None
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "LC_ALL": "C",
        "OCF_ROOT": str(ocf_root()),
        "OCF_RA_VERSION_MAJOR": "1",
        "OCF_RA_VERSION_MINOR": "1",
        "OCF_RESOURCE_INSTANCE": instance,
        "OCF_RESOURCE_TYPE": agent.type,
        "OCF_RESOURCE_PROVIDER": agent.provider,
        "OCF_RESKEY_CRM_meta_timeout": str(int(timeout * 1000)),  # agents read it, in ms
        "HA_LOGFACILITY": "none",  # agent logs go to stderr, which we capture
    }
    env.update(extra or {})
    return env


@functools.lru_cache(maxsize=64)
def _metadata(path: str, _mtime: int, name: str) -> Metadata:
    agent_env = {"OCF_ROOT": str(ocf_root()), "PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}
    proc = subprocess.run(
        [path, "meta-data"], capture_output=True, text=True, timeout=METADATA_TIMEOUT,
        env=agent_env, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if proc.returncode != 0 or "<resource-agent" not in proc.stdout:
        raise ValueError(f"{name} meta-data failed (exit {proc.returncode})")
    return parse_metadata(proc.stdout)
