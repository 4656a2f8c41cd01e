"""HA configuration: ``resources.cfg``, ``groups.cfg`` and the datacenter ``ha`` options.

``resources.cfg`` and ``groups.cfg`` use Proxmox's section-config format::

    vm: 100
    \tstate started
    \tgroup prefer_node1
    \tmax_restart 2

    group: prefer_node1
    \tnodes node1:2,node2
    \trestricted 1

A header is ``TYPE: ID`` at column 0; properties follow, indented with tabs or spaces, one
``key value`` per line; a blank line ends a section; lines starting with ``#`` are comments.

Resource properties (the parsed shape is the one the CRM uses, see ``hafence.ha.state``)::

    {sid: {"node": str|None, "state": "started|stopped|disabled|ignored", "group": str|None,
           "max_restart": int, "max_relocate": int, "failback": bool, "comment": str|None}}

``failback`` (default on) is Proxmox 9's per-resource switch, used by the scenarios.

``node`` is hafence's addition: Proxmox learns a guest's node from the cluster filesystem,
hafence keeps it in the config. ``enabled`` is accepted as an alias of ``started``.

Groups::

    {name: {"nodes": {node: priority}, "restricted": bool, "nofailback": bool,
            "comment": str|None}}

Datacenter options live in ``datacenter.cfg`` as JSON, the same form as the reference
scenarios: ``{"ha": {"shutdown_policy": "conditional", "max_worker": 4}, "crs": {"ha":
"static"}}``. Unknown and repeated keys are errors, as are numbers that are not plain
finite JSON numbers.

Every parser takes text or bytes and reports all problems at once as ``ConfigErrors``
whose entries name the file, the line and the property; bytes that are not UTF-8 or a
control character anywhere in a file (even in a comment) are such an error too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from hafence.cfgtext import bad_character, config_lines, decode_config, decode_utf8
from hafence.errors import ConfigError, ConfigErrors

BUILTIN_RESOURCE_TYPES = ("vm", "ct")
SERVICE_STATES = ("started", "stopped", "disabled", "ignored")
STATE_ALIASES = {"enabled": "started"}
SHUTDOWN_POLICIES = ("freeze", "failover", "migrate", "conditional")
DEFAULT_MAX_RESTART = 1
DEFAULT_MAX_RELOCATE = 1
DEFAULT_HA_OPTIONS: dict[str, Any] = {"shutdown_policy": "conditional", "max_worker": 4}

RESOURCE_KEYS = ("node", "state", "group", "max_restart", "max_relocate", "failback", "comment")
GROUP_KEYS = ("nodes", "restricted", "nofailback", "comment")

_HEADER = re.compile(r"^(?P<type>[A-Za-z][A-Za-z0-9_-]*):\s*(?P<id>\S+)\s*$")
_PROP = re.compile(r"^[ \t]+(?P<key>\S+)(?:[ \t]+(?P<value>.*?))?[ \t]*$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_NODE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_GUEST_ID = re.compile(r"^[1-9][0-9]{2,8}$")
_OTHER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$")
_COUNT = re.compile(r"^[0-9]{1,3}$")
_PRIORITY = re.compile(r"^[0-9]{1,4}$")
MAX_COMMENT = 4096
_TRUE = {"1", "yes", "on", "true"}
_FALSE = {"0", "no", "off", "false"}


def decode_blob(data: bytes, file: str) -> str:
    """Stored bytes as UTF-8 text; ConfigErrors names the file and the line of a bad byte
    (the HA parsers then check the text itself)."""
    try:
        return decode_utf8(data, file)
    except ConfigError as exc:
        raise ConfigErrors(file, [exc]) from None


def known_resource_types() -> set[str]:
    """``vm`` and ``ct`` plus every type a loaded plugin provides."""
    types = set(BUILTIN_RESOURCE_TYPES)
    try:
        from hafence.plugins import get_registry

        types.update(get_registry().resource_types())
    except Exception:  # a broken plugin must not make the config unreadable
        pass
    return types


def parse_sid(text: str, types: Iterable[str] | None = None) -> str:
    """Normalise a service ID: ``100`` -> ``vm:100``; ``TYPE:ID`` checked. ValueError if bad."""
    text = text.strip()
    if ":" not in text:
        if _GUEST_ID.match(text):
            return f"vm:{text}"
        raise ValueError(f"invalid service ID '{text}' (expected TYPE:ID, e.g. vm:100)")
    rtype, _, rid = text.partition(":")
    if types is None and rtype in BUILTIN_RESOURCE_TYPES:
        known: set[str] = set(BUILTIN_RESOURCE_TYPES)  # no need to load the plugins
    else:
        known = set(types) if types is not None else known_resource_types()
    if rtype not in known:
        avail = ", ".join(sorted(known))
        raise ValueError(f"unknown resource type '{rtype}' in '{text}' (known: {avail})")
    if rtype in BUILTIN_RESOURCE_TYPES:
        if not _GUEST_ID.match(rid):
            raise ValueError(f"invalid {rtype} ID '{rid}' (an integer from 100 to 999999999)")
    elif not _OTHER_ID.match(rid):
        raise ValueError(f"invalid {rtype} ID '{rid}'")
    return f"{rtype}:{rid}"


def parse_state(value: str) -> str:
    state = STATE_ALIASES.get(value, value)
    if state not in SERVICE_STATES:
        raise ValueError(f"invalid state '{value}' (one of {', '.join(SERVICE_STATES)}, enabled)")
    return state


def parse_bool(value: str) -> bool:
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"invalid boolean '{value}' (0 or 1)")


def parse_count(value: str) -> int:
    if not _COUNT.match(value):
        raise ValueError(f"invalid integer '{_short(value)}' (0..10)")
    n = int(value)
    if not 0 <= n <= 10:
        raise ValueError(f"{n} out of range (0..10)")
    return n


def _short(value: str) -> str:
    """A rejected value, cut short for an error message."""
    return value if len(value) <= 40 else value[:37] + "..."


def parse_node_name(value: str) -> str:
    if not _NODE.match(value):
        raise ValueError(f"invalid node name '{_short(value)}'")
    return value


def parse_group_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"invalid group name '{_short(value)}'")
    return value


def parse_comment(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError("comment must be a single line")
    bad = bad_character(value)
    if bad is not None:
        raise ValueError(f"comment must not contain {bad}")
    if len(value) > MAX_COMMENT:
        raise ValueError(f"comment longer than {MAX_COMMENT} characters")
    return value


def parse_nodes(value: str) -> dict[str, int]:
    """``node1:2,node2`` -> ``{"node1": 2, "node2": 0}``."""
    nodes: dict[str, int] = {}
    for item in (p.strip() for p in value.split(",")):
        if not item:
            continue
        name, sep, prio = item.partition(":")
        parse_node_name(name)
        if name in nodes:
            raise ValueError(f"node '{name}' listed twice")
        if sep and not _PRIORITY.match(prio):
            raise ValueError(f"invalid priority '{_short(prio)}' for node '{name}' (0..1000)")
        p = int(prio) if sep else 0
        if not 0 <= p <= 1000:
            raise ValueError(f"priority {p} of node '{name}' out of range (0..1000)")
        nodes[name] = p
    if not nodes:
        raise ValueError("no nodes given")
    return nodes


def format_nodes(nodes: dict[str, int]) -> str:
    return ",".join(f"{n}:{p}" if p else n for n, p in nodes.items())


def default_resource() -> dict[str, Any]:
    return {
        "node": None,
        "state": "started",
        "group": None,
        "max_restart": DEFAULT_MAX_RESTART,
        "max_relocate": DEFAULT_MAX_RELOCATE,
        "failback": True,
        "comment": None,
    }


def default_group() -> dict[str, Any]:
    return {"nodes": {}, "restricted": False, "nofailback": False, "comment": None}


_RESOURCE_PARSERS = {
    "node": parse_node_name,
    "state": parse_state,
    "group": parse_group_name,
    "max_restart": parse_count,
    "max_relocate": parse_count,
    "failback": parse_bool,
    "comment": parse_comment,
}
_GROUP_PARSERS = {
    "nodes": parse_nodes,
    "restricted": parse_bool,
    "nofailback": parse_bool,
    "comment": parse_comment,
}


def _parse_sections(
    text: str | bytes,
    file: str,
    accept_header: Any,
    parsers: dict[str, Any],
    default: Any,
    required: tuple[str, ...] = (),
    kinds: dict[str, tuple[dict[str, Any], tuple[str, ...]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Section-config text -> ``{id: properties}``. ``accept_header(type, id)`` gives the
    key (ValueError rejects the section); ``kinds`` maps a section type to its own
    ``(parsers, required)`` where types differ (rules), else ``parsers``/``required``."""
    try:
        text = decode_config(text, file)
    except ConfigError as exc:
        raise ConfigErrors(file, [exc]) from None
    errors: list[ConfigError] = []
    out: dict[str, dict[str, Any]] = {}
    cur: dict[str, Any] | None = None
    cur_seen: set[str] = set()
    cur_key = ""
    cur_line = 0
    cur_parsers, cur_required = parsers, required
    skipping = False  # inside a section whose header was rejected

    def err(line: int, msg: str, fld: str | None = None) -> None:
        errors.append(ConfigError(msg, file=file, line=line, field=fld))

    def close() -> None:
        if cur is not None:
            for r in cur_required:
                if r not in cur_seen:
                    err(cur_line, f"section '{cur_key}' lacks required property", r)

    for lineno, raw in enumerate(config_lines(text), 1):
        if not raw.strip(" \t"):
            close()
            cur, skipping = None, False
            continue
        if raw.lstrip().startswith("#"):
            continue
        if raw[0] not in " \t":
            close()
            cur, skipping = None, False
            m = _HEADER.match(raw)
            if not m:
                header = _short(raw.strip())
                err(lineno, f"invalid section header '{header}' (expected 'TYPE: ID')", "section")
                skipping = True
                continue
            try:
                key = accept_header(m.group("type"), m.group("id"))
            except ValueError as exc:
                err(lineno, str(exc), "section")
                skipping = True
                continue
            if key in out:
                err(lineno, f"duplicate section '{key}'", "section")
                skipping = True
                continue
            cur, cur_key, cur_line, cur_seen = default(), key, lineno, set()
            if kinds is not None:
                cur_parsers, cur_required = kinds[m.group("type")]
            out[key] = cur
            continue
        if skipping:
            continue
        m = _PROP.match(raw)
        if m is None:  # indented, but not 'key value' (e.g. a no-break space first)
            line = _short(raw.strip())
            err(lineno, f"invalid property line '{line}' (expected 'KEY VALUE')", "property")
            continue
        pkey, value = m.group("key"), m.group("value") or ""
        if cur is None:
            err(lineno, "property outside of a section", pkey)
            continue
        if pkey not in cur_parsers:
            err(lineno, f"unknown property in section '{cur_key}'", pkey)
            continue
        if pkey in cur_seen:
            err(lineno, f"duplicate property in section '{cur_key}'", pkey)
            continue
        cur_seen.add(pkey)
        if value == "":
            err(lineno, "missing value", pkey)
            continue
        try:
            cur[pkey] = cur_parsers[pkey](value)
        except ValueError as exc:
            err(lineno, str(exc), pkey)
    close()
    if errors:
        raise ConfigErrors(file, errors)
    return out


def parse_resources(
    text: str | bytes, file: str = "resources.cfg", types: Iterable[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Parse ``resources.cfg`` text into ``{sid: {...}}`` with defaults filled in."""
    known = set(types) if types is not None else None  # None: plugins loaded only if needed

    def header(rtype: str, rid: str) -> str:
        if rtype == "group":
            raise ValueError("a group section does not belong in resources.cfg")
        return parse_sid(f"{rtype}:{rid}", known)

    return _parse_sections(text, file, header, _RESOURCE_PARSERS, default_resource)


def parse_groups(text: str | bytes, file: str = "groups.cfg") -> dict[str, dict[str, Any]]:
    """Parse ``groups.cfg`` text into ``{name: {...}}``; ``nodes`` is required."""

    def header(stype: str, name: str) -> str:
        if stype != "group":
            raise ValueError(f"unexpected section type '{stype}' (expected 'group')")
        return parse_group_name(name)

    return _parse_sections(text, file, header, _GROUP_PARSERS, default_group, ("nodes",))


def _format_resources(resources: dict[str, dict[str, Any]]) -> str:
    blocks = []
    for sid, conf in resources.items():
        rtype, _, rid = sid.partition(":")
        lines = [f"{rtype}: {rid}"]
        if conf.get("node"):
            lines.append(f"\tnode {conf['node']}")
        state = conf.get("state") or "started"
        lines.append(f"\tstate {STATE_ALIASES.get(state, state)}")
        if conf.get("group"):
            lines.append(f"\tgroup {conf['group']}")
        for key, dflt in (
            ("max_restart", DEFAULT_MAX_RESTART),
            ("max_relocate", DEFAULT_MAX_RELOCATE),
        ):
            if conf.get(key, dflt) != dflt:
                lines.append(f"\t{key} {conf[key]}")
        if not conf.get("failback", True):
            lines.append("\tfailback 0")
        if conf.get("comment"):
            lines.append(f"\tcomment {conf['comment']}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _format_groups(groups: dict[str, dict[str, Any]]) -> str:
    blocks = []
    for name, conf in groups.items():
        lines = [f"group: {name}", f"\tnodes {format_nodes(conf['nodes'])}"]
        if conf.get("restricted"):
            lines.append("\trestricted 1")
        if conf.get("nofailback"):
            lines.append("\tnofailback 1")
        if conf.get("comment"):
            lines.append(f"\tcomment {conf['comment']}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def format_resources(resources: dict[str, dict[str, Any]]) -> str:
    """Section-config text; defaults and unset properties are left out, as Proxmox does.

    The text is parsed back and must give the same config: a value that would not survive
    (a comment with a line break, a bad node name) raises ValueError instead of being
    written and corrupting the file.
    """
    text = _format_resources(resources)
    want = {}
    for sid, conf in resources.items():
        full = {**default_resource(), **conf}
        full["state"] = STATE_ALIASES.get(full["state"], full["state"])
        want[sid] = full
    types = set(BUILTIN_RESOURCE_TYPES) | {sid.partition(":")[0] for sid in resources}
    _check_round_trip(text, want, lambda t: parse_resources(t, "<new resources.cfg>", types))
    return text


def format_groups(groups: dict[str, dict[str, Any]]) -> str:
    """Section-config text for groups; validated by parsing it back (see format_resources)."""
    text = _format_groups(groups)
    want = {name: {**default_group(), **conf} for name, conf in groups.items()}
    _check_round_trip(text, want, lambda t: parse_groups(t, "<new groups.cfg>"))
    return text


def _check_round_trip(text: str, want: dict[str, Any], parse: Any) -> None:
    try:
        got = parse(text)
    except ConfigErrors as exc:
        raise ValueError(f"refusing to write an invalid config: {exc}") from None
    if got != want:
        bad = sorted(k for k in want if got.get(k) != want[k]) or sorted(set(got) - set(want))
        raise ValueError(f"refusing to write a config that does not read back: {', '.join(bad)}")


def resources_from_service_config(
    data: dict[str, Any], file: str = "service_config", types: Iterable[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The reference scenarios' ``service_config`` JSON -> the resources.cfg shape.

    Those files omit defaults, write ``enabled`` and sometimes numbers as strings ("3");
    the result is exactly what ``parse_resources`` gives for the same services.
    """
    known = set(types) if types is not None else None
    errors: list[ConfigError] = []
    out: dict[str, dict[str, Any]] = {}
    for raw_sid, sc in data.items():
        try:
            sid = parse_sid(raw_sid, known)
        except ValueError as exc:
            errors.append(ConfigError(str(exc), file=file, field=raw_sid))
            continue
        conf = default_resource()
        for key, value in (sc or {}).items():
            if key not in _RESOURCE_PARSERS:
                errors.append(ConfigError("unknown property", file=file, field=f"{sid}.{key}"))
                continue
            try:
                conf[key] = _RESOURCE_PARSERS[key](str(value))
            except ValueError as exc:
                errors.append(ConfigError(str(exc), file=file, field=f"{sid}.{key}"))
        out[sid] = conf
    if errors:
        raise ConfigErrors(file, errors)
    return out


def check_references(
    resources: dict[str, dict[str, Any]],
    groups: dict[str, dict[str, Any]],
    file: str = "resources.cfg",
) -> None:
    """Every resource's group must exist (cross-file check; the CRM skips bad services)."""
    errors = [
        ConfigError(f"service '{sid}' uses unknown group '{c['group']}'", file=file, field="group")
        for sid, c in resources.items()
        if c.get("group") and c["group"] not in groups
    ]
    if errors:
        raise ConfigErrors(file, errors)


class _BadJson(ValueError):
    """A JSON value hafence refuses although the json module would take it."""


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > 18:  # int() of thousands of digits is slow, then fails
        raise _BadJson(f"number {_short(text)} is too big")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadJson(f"number {_short(text)} is not finite")
    return value


def _json_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not a JSON number")


def _load_json(text: str, file: str) -> Any:
    """``json.loads`` that refuses NaN, Infinity and huge numbers and survives any
    nesting; a ConfigErrors names the line."""

    def fail(message: str, line: int) -> ConfigErrors:
        return ConfigErrors(file, [ConfigError(message, file=file, line=line)])

    try:
        return json.loads(
            text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant
        )
    except json.JSONDecodeError as exc:
        raise fail(f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except _BadJson as exc:
        raise fail(f"invalid JSON: {exc}", 1) from None
    except RecursionError:
        raise fail("invalid JSON: nested too deeply", 1) from None


JsonPath = tuple[str | int, ...]


def _key_lines(text: str) -> dict[JsonPath, list[int]]:
    """For valid JSON text: the lines where each object key occurs, by its path
    (``("crs", "ha")``; array elements by index). A path seen twice is a repeated key."""
    out: dict[JsonPath, list[int]] = {}
    stack: list[list[Any]] = []  # [is_object, key or index, expecting a key]
    line, i = 1, 0
    while i < len(text):
        c = text[i]
        if c == "\n":
            line += 1
        elif c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if stack and stack[-1][0] and stack[-1][2]:
                stack[-1][1], stack[-1][2] = json.loads(text[i : j + 1]), False
                out.setdefault(tuple(f[1] for f in stack), []).append(line)
            i = j
        elif c in "{[":
            stack.append([c == "{", 0, c == "{"])
        elif c in "}]":
            stack.pop()
        elif c == "," and stack:
            if stack[-1][0]:
                stack[-1][2] = True
            else:
                stack[-1][1] += 1
        i += 1
    return out


def _choice(*values: str) -> Any:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in values:
            return None
        return f"invalid value {_show_json(value)} (one of {', '.join(values)})"

    return check


def _integer(lo: int, hi: int) -> Any:
    def check(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
            return None
        return f"invalid value {_show_json(value)} (an integer from {lo} to {hi})"

    return check


def _number(lo: float, hi: float) -> Any:
    def check(value: Any) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and lo <= value <= hi:
            return None
        return f"invalid value {_show_json(value)} (a number from {lo:g} to {hi:g})"

    return check


def _flag(value: Any) -> str | None:
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return None
    return f"invalid value {_show_json(value)} (0, 1, true or false)"


def _show_json(value: Any) -> str:
    return _short(json.dumps(value))


# The datacenter options hafence reads ("ha") and those its scheduler knows ("crs",
# Proxmox's names); anything else is reported rather than silently ignored.
DATACENTER_SCHEMA: dict[str, dict[str, Any]] = {
    "ha": {"shutdown_policy": _choice(*SHUTDOWN_POLICIES), "max_worker": _integer(1, 64)},
    "crs": {
        "ha": _choice("basic", "static", "dynamic"),
        "ha-rebalance-on-start": _flag,
        "ha-auto-rebalance": _flag,
        "ha-auto-rebalance-method": _choice("bruteforce", "topsis"),
        "ha-auto-rebalance-threshold": _number(0, 1),
        "ha-auto-rebalance-margin": _number(0, 1),
        "ha-auto-rebalance-hold-duration": _integer(0, 10000),
    },
}


def parse_datacenter(text: str | bytes, file: str = "datacenter.cfg") -> dict[str, Any]:
    """Parse the JSON datacenter options; ``result["ha"]`` always has every HA option.

    Unknown or repeated keys, values of the wrong type or out of range: ConfigErrors,
    each naming file, line and ``section.key``.
    """
    try:
        text = decode_config(text, file)
    except ConfigError as exc:
        raise ConfigErrors(file, [exc]) from None
    data = _load_json(text, file) if text.strip() else {}
    if not isinstance(data, dict):
        raise ConfigErrors(
            file, [ConfigError("top level must be a JSON object", file=file, line=1)]
        )
    lines = _key_lines(text)

    def line_of(*path: str) -> int:
        return lines.get(path, [1])[0]

    errors: list[ConfigError] = []
    for path, where in lines.items():
        fld = ".".join(str(p) for p in path)
        errors += [ConfigError("given twice", file=file, line=n, field=fld) for n in where[1:]]
    for section, value in data.items():
        schema = DATACENTER_SCHEMA.get(section)
        if schema is None:
            known = ", ".join(DATACENTER_SCHEMA)
            msg = f"unknown datacenter option (known: {known})"
            errors.append(ConfigError(msg, file=file, line=line_of(section), field=section))
            continue
        if not isinstance(value, dict):
            msg = "must be an object"
            errors.append(ConfigError(msg, file=file, line=line_of(section), field=section))
            continue
        for key, item in value.items():
            check = schema.get(key)
            problem = f"unknown {section} option" if check is None else check(item)
            if problem is not None:
                line = line_of(section, key)
                errors.append(ConfigError(problem, file=file, line=line, field=f"{section}.{key}"))
    if errors:
        raise ConfigErrors(file, sorted(errors, key=lambda e: e.line or 0))
    result = dict(data)
    result["ha"] = {**DEFAULT_HA_OPTIONS, **data.get("ha", {})}
    return result


def format_datacenter(options: dict[str, Any]) -> str:
    return json.dumps(options, indent=4, sort_keys=True) + "\n"


# -- rules.cfg (Proxmox 9 HA rules) -------------------------------------------------------
RULE_TYPES = ("node-affinity", "resource-affinity")
_RULE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]+$")  # Proxmox's pve-configid


def _parse_sid_list(value: str) -> list[str]:
    sids: list[str] = []
    for sid in (v.strip() for v in value.split(",")):
        if not sid:
            continue
        rtype, sep, rid = sid.partition(":")
        if rtype in BUILTIN_RESOURCE_TYPES:
            sid = parse_sid(sid, BUILTIN_RESOURCE_TYPES)
        elif not sep or not _NAME.match(rtype) or not _OTHER_ID.match(rid):
            # other types come from plugins; resources.cfg decides whether they exist
            raise ValueError(f"invalid service ID '{_short(sid)}' (expected TYPE:ID)")
        if sid in sids:
            raise ValueError(f"service '{sid}' listed twice")
        sids.append(sid)
    if not sids:
        raise ValueError("no resources given")
    return sids


parse_sid_list = _parse_sid_list  # a rule's 'resources': TYPE:ID,...
RULE_ID = _RULE_ID


def _parse_affinity(value: str) -> str:
    if value not in ("positive", "negative"):
        raise ValueError(f"invalid affinity '{_short(value)}' (expected positive or negative)")
    return value


# Each rule type's properties and which of them it requires (Proxmox's rule plugins:
# a node-affinity rule needs nodes, a resource-affinity rule its affinity).
_RULE_KINDS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "node-affinity": (
        {
            "resources": _parse_sid_list,
            "nodes": parse_nodes,
            "strict": parse_bool,
            "disable": parse_bool,
            "comment": parse_comment,
        },
        ("resources", "nodes"),
    ),
    "resource-affinity": (
        {
            "resources": _parse_sid_list,
            "affinity": _parse_affinity,
            "disable": parse_bool,
            "comment": parse_comment,
        },
        ("resources", "affinity"),
    ),
}


def parse_rules(text: str | bytes, file: str = "rules.cfg") -> dict[str, dict[str, Any]]:
    """Parse ``rules.cfg`` (``node-affinity: NAME`` / ``resource-affinity: NAME`` sections)
    into ``{name: {"type", "nodes", "resources", "strict", ...}}``.

    Every rule needs ``resources``; a node-affinity rule ``nodes``, a resource-affinity rule
    ``affinity``; a property of the other type is an error, like an unknown one.
    """
    types: dict[str, str] = {}

    def header(rtype: str, name: str) -> str:
        if rtype not in RULE_TYPES:
            raise ValueError(
                f"unknown rule type '{_short(rtype)}' (expected one of {', '.join(RULE_TYPES)})"
            )
        if not _RULE_ID.match(name):
            raise ValueError(f"invalid rule ID '{_short(name)}' (letters, digits, '-', '_')")
        types.setdefault(name, rtype)
        return name

    rules = _parse_sections(text, file, header, {}, dict, kinds=_RULE_KINDS)
    for name, rule in rules.items():
        rule["type"] = types[name]
    return rules
