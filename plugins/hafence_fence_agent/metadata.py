"""Turn a ClusterLabs agent's ``-o metadata`` XML into a hafence Param schema."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hafence.fence.driver import COMMON_PARAMS, Param

AGENT_NAME = re.compile(r"^fence_[A-Za-z0-9_]+$")
# Where Debian/RHEL install agents; /usr/sbin is often missing from a user's PATH.
AGENT_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
METADATA_TIMEOUT = 15.0

# Agent options the bridge or the fencer own: the action is chosen per call, the
# fencer does delays and off-verification, and help/version would not fence at all.
OWNED = frozenset({"action", "help", "version"}) | {p.name for p in COMMON_PARAMS}
_SECRET = re.compile(r"(pass(wd|word)?|community|hexadecimal_kg|secret|token)$", re.IGNORECASE)
_TYPES = {"boolean": bool, "integer": int, "second": float}
# An agent that starts other programs may hand them its secrets on their command line.
_RUNS_PROGRAMS = re.compile(rb"run_commands?\(|subprocess|os\.popen|os\.system|fencing_snmp")
# Agents read (fence-agents 4.12) that do run a program but give it the password through
# the environment (AMT_PASSWORD, OS_PASSWORD), never on its command line.
ENV_PASSWORD_AGENTS = frozenset({"fence_amt", "fence_ironic"})
MAX_AGENT_SOURCE = 4 << 20


@dataclass(frozen=True)
class AgentInfo:
    name: str
    path: str
    description: str
    params: tuple[Param, ...]
    actions: frozenset[str]
    accepts: frozenset[str] = frozenset()  # every option name the agent reads
    runs_programs: bool = False  # starts other programs (secrets may reach their argv)

    @property
    def runs_ipmitool(self) -> bool:
        """fence_ipmilan and its aliases: the password would go to ipmitool's -P."""
        return "ipmitool_path" in self.accepts


def find_agent(name: str) -> str | None:
    """The executable of a fence agent, or None. Names must look like ``fence_x``."""
    if not AGENT_NAME.match(name):
        return None
    search = os.pathsep.join([os.environ.get("PATH", ""), *AGENT_DIRS])
    return shutil.which(name, path=search)


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def runs_programs(name: str, path: str) -> bool:
    """Whether the agent's source starts other programs (unreadable: assume it does)."""
    if name in ENV_PASSWORD_AGENTS:
        return False
    try:
        with open(path, "rb") as fh:
            return bool(_RUNS_PROGRAMS.search(fh.read(MAX_AGENT_SOURCE)))
    except OSError:
        return True


def parse_metadata(name: str, path: str, xml_text: str) -> AgentInfo:
    root = ET.fromstring(xml_text)
    params: list[Param] = []
    aliases: dict[str, list[str]] = {}
    deprecated: set[str] = set()
    nodes = root.findall("./parameters/parameter")
    for node in nodes:
        pname = node.get("name", "")
        if node.get("deprecated") == "1":
            deprecated.add(pname)
        if node.get("obsoletes"):
            aliases.setdefault(pname, []).append(node.get("obsoletes", ""))
    secret_names = {n.get("name", "") for n in nodes if is_secret(n.get("name", ""))}
    for node in nodes:
        pname = node.get("name", "")
        if not pname or pname in deprecated or pname in OWNED:
            continue
        if pname.endswith("_script") and pname.removesuffix("_script") in secret_names:
            continue  # X_script is run by hafence itself (bounded), see hafence.secrets
        content = node.find("content")
        ctype = content.get("type", "string") if content is not None else "string"
        choices: tuple[str, ...] = ()
        if content is not None and ctype == "select":
            choices = tuple(o.get("value", "") for o in content.findall("option"))
        desc = node.findtext("shortdesc", default="").strip()
        secret = is_secret(pname)
        params.append(
            Param(
                pname,
                str if secret else _TYPES.get(ctype, str),
                required=node.get("required") == "1",
                secret=secret,
                help=desc,
                choices=choices,
                aliases=tuple(a for a in aliases.get(pname, []) if a not in OWNED),
            )
        )
    actions = frozenset(a.get("name", "") for a in root.findall("./actions/action"))
    accepts = frozenset(n.get("name", "") for n in nodes)
    return AgentInfo(
        name,
        path,
        root.get("shortdesc", ""),
        tuple(params),
        actions,
        accepts,
        runs_programs(name, path),
    )


def read_metadata(name: str, path: str) -> AgentInfo:
    """Run ``AGENT -o metadata`` (bounded) and parse it."""
    proc = subprocess.run(
        [path, "-o", "metadata"],
        capture_output=True,
        text=True,
        timeout=METADATA_TIMEOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    if proc.returncode != 0 or "<resource-agent" not in proc.stdout:
        raise ValueError(f"{name} -o metadata failed (exit {proc.returncode})")
    return parse_metadata(name, path, proc.stdout)
