"""``ocf.cfg``: which OCF agent, with which parameters, each ``ocf:NAME`` service runs.

Section-config format, like resources.cfg::

    ocf: webip
    \tagent heartbeat:IPaddr2
    \tip 192.0.2.50
    \tcidr_netmask 24

    ocf: db
    \tagent heartbeat:pgsql
    \treplication_passwd_file /etc/hafence/pg-repl.pw
    \ttimeout_start 120s

``agent`` (``PROVIDER:TYPE``) is required; ``timeout_start``, ``timeout_stop``,
``timeout_monitor`` override the agent's own timeouts from its meta-data; ``comment`` is
free text; every other property is a parameter of the agent (``OCF_RESKEY_<name>``).
A parameter ``X`` can come from a file (``X_file PATH``, first line) or the environment
of the LRM (``X_env VARIABLE``); those values, and any whose name looks like a password,
are secrets: never logged, masked in every message. The file holding them should be
mode 0600. Errors name the file, the line and the field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from hafence.errors import ConfigError, ConfigErrors
from hafence.fence.config import is_secret_key
from hafence.secrets import Secret, secret_from_env, secret_from_file
from hafence.sectionconfig import Section, read_sections
from hafence_ocf.agent import Agent, Metadata, parse_duration, split_agent

DEFAULT_PATH = "/etc/hafence/ocf.cfg"
ENV_PATH = "HAFENCE_OCF_CFG"
TIMEOUT_KEYS = {"timeout_start": "start", "timeout_stop": "stop", "timeout_monitor": "monitor"}
RESERVED = {"agent", "comment", *TIMEOUT_KEYS}

_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BOOL = {"1", "0", "true", "false", "yes", "no", "on", "off", "y", "n"}


def config_path() -> Path:
    return Path(os.environ.get(ENV_PATH) or DEFAULT_PATH)


@dataclass
class Definition:
    """One ``ocf: NAME`` section."""

    name: str
    file: str
    line: int
    agent: str = ""
    params: dict[str, str] = field(default_factory=dict)  # raw, as written (X_file: a path)
    lines: dict[str, int] = field(default_factory=dict)  # property -> line
    timeouts: dict[str, float] = field(default_factory=dict)
    comment: str | None = None

    def error(self, message: str, fld: str | None = None) -> ConfigError:
        return ConfigError(message, file=self.file, line=self.lines.get(fld or "", self.line),
                           field=fld)  # fmt: skip

    def values(self) -> dict[str, str | Secret]:
        """Parameter values with ``X_file``/``X_env`` resolved (ConfigError names the field)."""
        out: dict[str, str | Secret] = {}
        for key, raw in self.params.items():
            base, _, src = key.rpartition("_")
            if src in ("file", "env") and base:
                try:
                    out[base] = secret_from_file(raw) if src == "file" else secret_from_env(raw)
                except (OSError, KeyError) as exc:
                    msg = f"cannot read secret: {getattr(exc, 'strerror', None) or exc}"
                    raise self.error(msg.replace("'", ""), key) from None
            else:
                out[key] = Secret(raw) if is_secret_key(key) else raw
        return out

    def param_name(self, key: str) -> str:
        base, _, src = key.rpartition("_")
        return base if src in ("file", "env") and base else key

    def validate(self, meta: Metadata) -> None:
        """Check the parameters against the agent's meta-data: every error at once."""
        errors: list[ConfigError] = []
        given = {self.param_name(k): k for k in self.params}
        for name, key in given.items():
            info = meta.params.get(name)
            if info is None:
                known = ", ".join(sorted(meta.params)) or "none"
                errors.append(self.error(
                    f"agent {self.agent} has no parameter '{name}' (it has: {known})", key
                ))  # fmt: skip
                continue
            if key != name:  # a secret: its type is not checked (and never shown)
                continue
            value = self.params[key]
            problem = _type_problem(info.type, info.options, value)
            if problem:
                errors.append(self.error(f"{problem}, got '{value}'", key))
        for name, info in meta.params.items():
            if info.required and name not in given:
                errors.append(self.error(f"required by agent {self.agent}", name))
        if errors:
            raise ConfigErrors(self.file, errors)


def _type_problem(ptype: str, options: tuple[str, ...], value: str) -> str | None:
    if ptype == "integer":
        try:
            int(value, 0)
        except ValueError:
            return "expected an integer"
    elif ptype == "boolean" and value.lower() not in _BOOL:
        return "expected a boolean (true/false, yes/no, 1/0)"
    elif ptype == "select" and options and value not in options:
        return f"must be one of {', '.join(options)}"
    return None


def parse_ocf_config(text: str, file: str) -> dict[str, Definition]:
    """Parse ocf.cfg text; raise ConfigErrors listing every problem with file/line/field."""
    errors: list[ConfigError] = []
    defs: dict[str, Definition] = {}
    for sec in read_sections(text, file, ("ocf",), errors):
        d = defs[sec.id] = Definition(sec.id, file, sec.line, lines=dict(sec.lines))

        def err(message: str, key: str, sec: Section = sec) -> None:
            errors.append(ConfigError(message, file=file, line=sec.line_of(key), field=key))

        for key, value in sec.props.items():
            try:
                if key == "agent":
                    split_agent(value)
                    d.agent = value
                elif key in TIMEOUT_KEYS:
                    d.timeouts[TIMEOUT_KEYS[key]] = parse_duration(value)
                elif key == "comment":
                    d.comment = value
                elif not _PARAM.match(key):
                    err(f"invalid parameter name '{key}'", key)
                else:
                    d.params[key] = value
            except ValueError as exc:
                err(str(exc), key)
        if "agent" not in sec.lines:
            err(f"section 'ocf: {d.name}' lacks required property", "agent")
        names = [d.param_name(k) for k in d.params]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            err("given more than once (as X and X_file/X_env)", dup)
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        raise ConfigErrors(file, errors)
    return defs


def load_definition(name: str, path: Path | None = None) -> Definition:
    """The definition of ``ocf:NAME`` from ocf.cfg (ConfigError/ConfigErrors if bad)."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {getattr(exc, 'strerror', None) or exc}",
                          file=str(path)) from None  # fmt: skip
    defs = parse_ocf_config(text, str(path))
    if name not in defs:
        known = ", ".join(sorted(defs)) or "none"
        raise ConfigError(f"no section 'ocf: {name}' (defined: {known})", file=str(path))
    return defs[name]


def agent_of(defn: Definition) -> Agent:
    return Agent.from_spec(defn.agent)
