"""Every hafence parser as a fuzz target: its seed files, how to run it, and what counts
as a wrong answer.

A target runs one input (bytes, written to a real file where the parser reads files) and
returns an :class:`Outcome`. Any exception other than a hafence error escapes: that is a
*traceback*, the first kind of failure. The others are ``problems``:

* a rejected input whose error does not name the file, or (every target here reads
  lines) names no line; resources.cfg and groups.cfg errors must also name the field,
  except an encoding or control-character error, which names line and column;
* an **accepted invalid** input: the parser returned a result that breaks a rule the
  file format declares. Per target (checked here, independently of the parser's code):

  - fence.cfg: a driver option outside its Param's declared type, range (``Param.bounds``),
    finiteness or choices, a control character in a string, an empty secret, a required
    option missing; a key twice on one line; ``action=`` other than off/reboot; the
    config not reading back from its own written form;
  - datacenter.cfg: an unknown or repeated key, a value outside its schema;
  - resources.cfg / groups.cfg: a property outside its syntax or range, or a result that
    does not survive ``format_*`` and parsing again;
  - rules.cfg: a rule without a property its type requires or with one of the other type,
    an empty or repeated resource list, a bad node list, affinity or rule ID;
  - fence history: a record field of the wrong type, or an input line that is neither a
    record, blank, nor reported as skipped;
  - hardware.toml: a device option outside its Param (as fence.cfg), a bad watchdog table,
    a top-level value that is not a table;
  - secret files: an empty secret, one with a control character, or one that is not the
    first line of the file's UTF-8 text.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hafence.errors import ConfigError, ConfigErrors, HafenceError, SecretError
from hafence.fence import FenceHistory, FenceRecord, build_driver, check_drivers
from hafence.fence.chain import ChainDevice
from hafence.fence.config import load_fence_config, parse_fence_config
from hafence.fence.driver import FenceDriver
from hafence.ha import config as hacfg
from hafence.plugins import PluginRegistry, get_registry
from hafence.secrets import Secret, secret_from_file
from tests.fuzz import mutate as mu

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "tests" / "ha" / "scenarios"
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NODE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_GUEST = re.compile(r"^[1-9][0-9]{2,8}$")
_RULE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]+$")
_TEXT_LEVEL = ("not UTF-8 text", "NUL byte", "control character", "not valid text")
PASSWORD = "Fuzz-pw-1"


@dataclass
class Outcome:
    accepted: bool
    problems: list[str] = field(default_factory=list)


class Lab:
    """A work directory with the files seeds refer to (secret files good and bad), and
    the plugin registry every driver check uses."""

    def __init__(self, workdir: Path, registry: PluginRegistry | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.registry = registry or get_registry()
        self.resource_types = set(hacfg.BUILTIN_RESOURCE_TYPES) | set(
            self.registry.resource_types()
        )
        secrets = {
            "good.pw": PASSWORD.encode() + b"\n",
            "community": b"public\n",
            "empty.pw": b"",
            "nul.pw": b"pw\x00x\n",
            "latin1.pw": b"p\xe9\n",
            "blank.pw": b"\nsecond line\n",
        }
        for name, content in secrets.items():
            path = self.dir / name
            path.write_bytes(content)
            path.chmod(0o600)
        (self.dir / "a-directory").mkdir(exist_ok=True)

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def fill(self, text: str) -> str:
        """Seed placeholders -> files of this lab."""
        return text.replace("@PW@", self.path("good.pw")).replace(
            "@COMMUNITY@", self.path("community")
        )

    def vocabulary_files(self) -> tuple[str, ...]:
        names = ("good.pw", "empty.pw", "nul.pw", "latin1.pw", "blank.pw", "a-directory")
        return tuple(self.path(n) for n in names)


# -- checks shared by the targets ---------------------------------------------------------
def error_problems(
    exc: HafenceError, file: str, *, need_field: bool = False, data: bytes = b""
) -> list[str]:
    """What is wrong with how an error reports itself (empty: nothing)."""
    text = str(exc)
    problems = []
    if file not in text:
        problems.append(f"error does not name the file: {text[:300]!r}")
    errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
    for e in errors:
        if not isinstance(e, ConfigError):
            problems.append(f"{type(e).__name__} is not a config error: {str(e)[:200]!r}")
            continue
        if e.line is None and data:
            problems.append(f"error names no line: {str(e)[:300]!r}")
        text_level = e.message.startswith(_TEXT_LEVEL)
        if need_field and not e.field and not text_level:
            problems.append(f"error names no field: {str(e)[:300]!r}")
    return problems


def option_problems(cls: type[FenceDriver], options: dict[str, Any]) -> list[str]:
    """Every way ``options`` (a built driver's) break the declared Param schema."""
    problems = []
    params = {p.name: p for p in cls.all_params()}
    for key in options:
        if key not in params and key != "agent":
            problems.append(f"{cls.name}: option '{key}' is not a parameter")
    for p in params.values():
        v = options.get(p.name)
        where = f"{cls.name}.{p.name}={v!r}"
        if v is None:
            if p.required:
                problems.append(f"{where}: required but missing")
            continue
        if p.secret:
            if not isinstance(v, Secret) or not v.reveal() or _CONTROL.search(v.reveal()):
                problems.append(f"{cls.name}.{p.name}: secret empty or with a control character")
            continue
        if p.type is bool:
            ok = isinstance(v, bool)
        elif p.type is int:
            lo, hi = p.bounds or (-math.inf, math.inf)
            ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        elif p.type is float:
            lo, hi = p.bounds or (-math.inf, math.inf)
            ok = isinstance(v, float) and math.isfinite(v) and lo <= v <= hi
        else:
            ok = isinstance(v, str) and not _CONTROL.search(v) and (v != "" or not p.required)
        if ok and p.choices:
            ok = str(v) in p.choices
        if not ok:
            problems.append(f"{where}: outside the declared type/range/choices")
    return problems


def _repeated(keys: list[str]) -> str | None:
    seen: set[str] = set()
    for k in keys:
        if k in seen:
            return k
        seen.add(k)
    return None


def _parse(
    parse: Callable[[bytes, str], Any], file: str, data: bytes, *, need_field: bool = False
) -> tuple[Any, Outcome | None]:
    """``(result, None)``, or ``(None, the rejection)`` when the parser refused ``data``."""
    try:
        return parse(data, file), None
    except HafenceError as exc:
        return None, Outcome(False, error_problems(exc, file, need_field=need_field, data=data))


# -- the targets ---------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    syntax: mu.Syntax
    seeds: Callable[[Lab], list[bytes]]
    run: Callable[[Lab, bytes], Outcome]


def _fence_seeds(lab: Lab) -> list[bytes]:
    files = sorted((REPO / "tests" / "fence" / "fence_cfgs").glob("*.cfg"))
    seeds = [p.read_bytes() for p in files]
    readme = [
        ln
        for ln in (REPO / "README.md").read_text().splitlines()
        if ln.startswith(("device ", "connect "))
    ]
    readme_cfg = "\n".join(readme).replace("/etc/hafence/bmc.pw", "@PW@")
    seeds.append(readme_cfg.replace("/etc/hafence/sw.community", "@COMMUNITY@").encode() + b"\n")
    seeds.append(
        b"# hafence drivers with every common option\n"
        b"device bmc ipmi ip=127.0.0.1 port=623 username=admin password_file=@PW@ lanplus=1 "
        b"cipher=3 timeout=5 power_timeout=10 power_wait=1 poll_interval=0.1 delay=2 "
        b"delay_max=3\n"
        b"connect bmc node=node1\n\n"
        b"device sw snmp_ifmib ip=10.0.0.2 ipport=161 community_file=@COMMUNITY@\n"
        b"connect sw node=node1 plug=Gi1/0/1\nconnect sw node=node2 plug=7\n\n"
        b"device psu:1 redfish ip=10.0.0.5 ipport=8443 username=root password_file=@PW@ "
        b"ssl=1 system=/redfish/v1/Systems/1 action=off\n"
        b"device psu:2 fence_ipmilan ip=10.0.0.6 ipport=623 username=root "
        b"password_file=@PW@ lanplus cipher=3 power_wait=2\n"
        b"connect psu:1 node=node2\nconnect psu:2 node=node2\n\n"
        b"device tty serial device=/dev/ttyS0 baudrate=9600 plug=3 pulse_ms=100 "
        b"parity=N stopbits=1 bytesize=8\nconnect tty node=node3\n"
    )
    seeds.append(
        b"# Proxmox's simple-2 with the options its agents require\n"
        b"device first_dev fence_pve ip=192.168.1.10 username=root password_file=@PW@ "
        b"vmtype=qemu action=off\n"
        b"connect first_dev node=node1 plug=100\nconnect first_dev node=node2 plug=101\n\n"
        b"device second_dev fence_ilo ip=192.168.1.11 username=admin password_file=@PW@\n"
        b"connect second_dev node=node1\n\n"
        b"device power:1 fence_apc ip=192.168.1.12 username=apc password_file=@PW@ ssh\n"
        b"device power:2 fence_apc ip=192.168.1.13 username=apc password_file=@PW@ delay=5\n"
        b"connect power:1 node=node1 plug=1 switch=1\nconnect power:2 node=node1 plug=1\n"
    )
    return [lab.fill(s.decode()).encode() for s in seeds]


def _run_fence(lab: Lab, data: bytes) -> Outcome:
    path = lab.write("fence.cfg", data)
    try:
        cfg = load_fence_config(path)
        check_drivers(cfg, lab.registry)
    except HafenceError as exc:
        return Outcome(False, error_problems(exc, path, data=data))
    problems = []
    if parse_fence_config(cfg.to_text(), path) != cfg:
        problems.append("does not read back from its written form")
    for dev in cfg.devices.values():
        for sub in dev.subdevices.values():
            lines = [sub.args, *(c.args for c in sub.connections.values())]
            for args in lines:
                twice = _repeated([k for k, _ in args])
                if twice:
                    problems.append(f"{sub.label}: key '{twice}' twice on one line")
                for k, v in args:
                    if k == "action" and v not in ("off", "reboot"):
                        problems.append(f"{sub.label}: action={v!r}")
    specs = []
    for node in cfg.nodes():
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", node):
            problems.append(f"node name {node!r}")
        specs += [spec for level in cfg.chain(node) for spec in level.devices]
    for dev in cfg.devices.values():  # connected to no node: its own arguments
        for sub in dev.subdevices.values():
            if not sub.connections:
                spec = ChainDevice("", sub.name, sub.index, sub.driver, tuple(sub.args), ())
                specs.append(spec)
    for spec in specs:
        try:
            driver = build_driver(spec, lab.registry)
        except ConfigError as exc:
            if spec.node or "required by driver" not in exc.message:
                problems.append(f"accepted, but {spec.label or spec.device} fails: {exc}")
            continue
        problems += option_problems(type(driver), driver.options)
    return Outcome(True, problems)


def _scenario_files(name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(SCENARIOS.glob(f"*/{name}"))]


def _datacenter_seeds(lab: Lab) -> list[bytes]:
    seeds = _scenario_files("datacenter.cfg")
    seeds.append(
        hacfg.format_datacenter(
            {
                "ha": {"shutdown_policy": "migrate", "max_worker": 8},
                "crs": {"ha": "static", "ha-rebalance-on-start": 1},
            }
        ).encode()
    )
    return seeds


_DC_CHECKS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "ha": {
        "shutdown_policy": lambda v: v in hacfg.SHUTDOWN_POLICIES,
        "max_worker": lambda v: type(v) is int and 1 <= v <= 64,
    },
    "crs": {
        "ha": lambda v: v in ("basic", "static", "dynamic"),
        "ha-rebalance-on-start": lambda v: v in (0, 1) and type(v) in (int, bool),
        "ha-auto-rebalance": lambda v: v in (0, 1) and type(v) in (int, bool),
        "ha-auto-rebalance-method": lambda v: v in ("bruteforce", "topsis"),
        "ha-auto-rebalance-threshold": lambda v: type(v) in (int, float) and 0 <= v <= 1,
        "ha-auto-rebalance-margin": lambda v: type(v) in (int, float) and 0 <= v <= 1,
        "ha-auto-rebalance-hold-duration": lambda v: type(v) is int and 0 <= v <= 10000,
    },
}


def _json_duplicates(text: str) -> list[str]:
    dups: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        dups.extend(k for i, k in enumerate(keys) if k in keys[:i])
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return dups


def _run_datacenter(lab: Lab, data: bytes) -> Outcome:
    file = lab.path("datacenter.cfg")
    dc, rejected = _parse(hacfg.parse_datacenter, file, data)
    if rejected:
        return rejected
    problems = []
    text = data.decode("utf-8")
    if text.strip() and _json_duplicates(text):
        problems.append(f"repeated keys accepted: {_json_duplicates(text)}")
    for section, values in dc.items():
        checks = _DC_CHECKS.get(section)
        if checks is None or not isinstance(values, dict):
            problems.append(f"unknown section {section!r} accepted")
            continue
        for key, value in values.items():
            check = checks.get(key)
            if check is None or not check(value):
                problems.append(f"{section}.{key}={value!r} accepted")
    if set(dc["ha"]) != {"shutdown_policy", "max_worker"}:
        problems.append(f"ha options {sorted(dc['ha'])}")
    if hacfg.parse_datacenter(hacfg.format_datacenter(dc), file) != dc:
        problems.append("does not read back from its written form")
    return Outcome(True, problems)


def _resources_seeds(lab: Lab) -> list[bytes]:
    seeds = []
    for p in sorted(SCENARIOS.glob("*/service_config")):
        data = json.loads(p.read_text())
        try:  # a few scenarios use resource types of their own (fa:1900)
            resources = hacfg.resources_from_service_config(data, str(p), lab.resource_types)
        except ConfigErrors:
            continue
        seeds.append(hacfg.format_resources(resources).encode())
    seeds.append(
        b"# every property\nvm: 100\n\tnode node1\n\tstate started\n\tgroup prod\n"
        b"\tmax_restart 2\n\tmax_relocate 0\n\tfailback 0\n\tcomment web server\n\n"
        b"ct: 101\n\tstate stopped\n\nvm: 102\n\tstate ignored\n\tnode node-2\n"
    )
    return seeds


def _resource_problems(lab: Lab, res: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for sid, conf in res.items():
        rtype, _, rid = sid.partition(":")
        if rtype not in lab.resource_types:
            problems.append(f"{sid}: unknown type")
        if rtype in hacfg.BUILTIN_RESOURCE_TYPES and not _GUEST.match(rid):
            problems.append(f"{sid}: bad guest ID")
        if set(conf) != set(hacfg.RESOURCE_KEYS):
            problems.append(f"{sid}: keys {sorted(conf)}")
            continue
        checks = {
            "node": conf["node"] is None or bool(_NODE.match(conf["node"])),
            "state": conf["state"] in hacfg.SERVICE_STATES,
            "group": conf["group"] is None or bool(_NAME.match(conf["group"])),
            "max_restart": type(conf["max_restart"]) is int and 0 <= conf["max_restart"] <= 10,
            "max_relocate": type(conf["max_relocate"]) is int and 0 <= conf["max_relocate"] <= 10,
            "failback": type(conf["failback"]) is bool,
            "comment": _comment_ok(conf["comment"]),
        }
        problems += [f"{sid}.{k}={conf[k]!r}" for k, ok in checks.items() if not ok]
    return problems


def _comment_ok(comment: Any) -> bool:
    if comment is None:
        return True
    return isinstance(comment, str) and len(comment) <= 4096 and not _CONTROL.search(comment)


def _run_resources(lab: Lab, data: bytes) -> Outcome:
    file = lab.path("resources.cfg")
    parse = functools.partial(hacfg.parse_resources, types=lab.resource_types)
    res, rejected = _parse(parse, file, data, need_field=True)
    if rejected:
        return rejected
    problems = _resource_problems(lab, res)
    if not problems:
        again = hacfg.parse_resources(hacfg.format_resources(res), file, lab.resource_types)
        if again != res:
            problems.append("does not read back from its written form")
    return Outcome(True, problems)


def _groups_seeds(lab: Lab) -> list[bytes]:
    seeds = _scenario_files("groups")
    seeds.append(
        b"group: prod\n\tnodes node1:2,node2:1,node3\n\trestricted 1\n\tnofailback 0\n"
        b"\tcomment production\n\ngroup: all\n\tnodes node1\n"
    )
    return seeds


def _run_groups(lab: Lab, data: bytes) -> Outcome:
    file = lab.path("groups.cfg")
    groups, rejected = _parse(hacfg.parse_groups, file, data, need_field=True)
    if rejected:
        return rejected
    problems = []
    for name, conf in groups.items():
        if not _NAME.match(name):
            problems.append(f"group name {name!r}")
        problems += [f"{name}.nodes: {p}" for p in _nodes_problems(conf.get("nodes"))]
        for key in ("restricted", "nofailback"):
            if type(conf.get(key)) is not bool:
                problems.append(f"{name}.{key}={conf.get(key)!r}")
        if not _comment_ok(conf.get("comment")):
            problems.append(f"{name}.comment")
    if not problems and hacfg.parse_groups(hacfg.format_groups(groups), file) != groups:
        problems.append("does not read back from its written form")
    return Outcome(True, problems)


def _nodes_problems(nodes: Any) -> list[str]:
    if not isinstance(nodes, dict) or not nodes:
        return [f"{nodes!r}: not a non-empty node list"]
    return [
        f"{n}:{p!r}"
        for n, p in nodes.items()
        if not _NODE.match(n) or type(p) is not int or not 0 <= p <= 1000
    ]


def _rules_seeds(lab: Lab) -> list[bytes]:
    seeds = _scenario_files("rules_config")
    seeds.append(
        b"node-affinity: web-on-1\n\tresources vm:100,ct:101\n\tnodes node1:2,node2\n"
        b"\tstrict 1\n\tcomment keep web near its data\n\n"
        b"resource-affinity: apart\n\tresources vm:100,vm:102\n\taffinity negative\n"
        b"\tdisable 0\n"
    )
    return seeds


_RULE_PROPS = {
    "node-affinity": ({"resources", "nodes"}, {"strict", "disable", "comment"}),
    "resource-affinity": ({"resources", "affinity"}, {"disable", "comment"}),
}


def _run_rules(lab: Lab, data: bytes) -> Outcome:
    file = lab.path("rules.cfg")
    rules, rejected = _parse(hacfg.parse_rules, file, data, need_field=True)
    if rejected:
        return rejected
    problems = []
    for rid, rule in rules.items():
        kind = rule.get("type")
        if kind not in _RULE_PROPS or not _RULE_ID.match(rid):
            problems.append(f"rule {rid!r} of type {kind!r}")
            continue
        required, optional = _RULE_PROPS[kind]
        props = set(rule) - {"type"}
        if not required <= props or props - required - optional:
            problems.append(f"{rid}: properties {sorted(props)} for {kind}")
        sids = rule.get("resources")
        if not isinstance(sids, list) or not sids or len(set(sids)) != len(sids):
            problems.append(f"{rid}.resources={sids!r}")
        else:
            for sid in sids:
                rtype, sep, rest = sid.partition(":")
                builtin = rtype in hacfg.BUILTIN_RESOURCE_TYPES
                if not sep or not _NAME.match(rtype) or (builtin and not _GUEST.match(rest)):
                    problems.append(f"{rid}: service ID {sid!r}")
        if "nodes" in rule:
            problems += [f"{rid}.nodes: {p}" for p in _nodes_problems(rule["nodes"])]
        if "affinity" in rule and rule["affinity"] not in ("positive", "negative"):
            problems.append(f"{rid}.affinity={rule['affinity']!r}")
        for key in ("strict", "disable"):
            if key in rule and type(rule[key]) is not bool:
                problems.append(f"{rid}.{key}={rule[key]!r}")
        if not _comment_ok(rule.get("comment")):
            problems.append(f"{rid}.comment")
    return Outcome(True, problems)


def _history_seeds(lab: Lab) -> list[bytes]:
    path = lab.dir / "seed-history.jsonl"
    path.unlink(missing_ok=True)
    history = FenceHistory(path)
    for i, (node, ok) in enumerate([("node1", True), ("node2", False), ("node1", False)]):
        history.append(
            FenceRecord(
                actor="nodeA",
                node=node,
                action="off",
                ok=ok,
                devices=["bmc", "psu:1"],
                level=1 if ok else None,
                attempt=i + 1,
                error_kind=None if ok else "unreachable",
                message="" if ok else "no answer within 5s",
                duration=1.25 * (i + 1),
                time=1_760_000_000.0 + i,
                results=[{"device": "bmc", "ok": ok, "state": "off" if ok else "unknown"}],
            )
        )
    return [path.read_bytes()]


_RECORD_TYPES: dict[str, Callable[[Any], bool]] = {
    "actor": lambda v: isinstance(v, str),
    "node": lambda v: isinstance(v, str),
    "action": lambda v: isinstance(v, str),
    "ok": lambda v: type(v) is bool,
    "devices": lambda v: isinstance(v, list) and all(isinstance(d, str) for d in v),
    "level": lambda v: v is None or (type(v) is int and v >= 1),
    "attempt": lambda v: type(v) is int and v >= 1,
    "error_kind": lambda v: v is None or isinstance(v, str),
    "message": lambda v: isinstance(v, str),
    "duration": lambda v: type(v) in (int, float) and 0 <= v < 1e12,
    "time": lambda v: type(v) in (int, float) and 0 <= v < 1e12,
    "results": lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
}


def _run_history(lab: Lab, data: bytes) -> Outcome:
    path = lab.write("fence-history.jsonl", data)
    found = FenceHistory(path).scan()
    problems = []
    for skipped in found.skipped:
        if skipped.file != path or skipped.line is None:
            problems.append(f"skipped line not named: {skipped}")
    for rec in found.records:
        bad = [k for k, ok in _RECORD_TYPES.items() if not ok(getattr(rec, k))]
        if bad:
            problems.append(f"record with bad fields {bad}")
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the file ends with a line feed: no partial last line
    whole = len(lines) if data.endswith(b"\n") else len(lines) - 1
    blank = sum(1 for ln in lines[:whole] if not ln.strip())
    if len(found.records) + len(found.skipped) + blank != len(lines):
        problems.append(
            f"{len(lines)} lines but {len(found.records)} records, {len(found.skipped)} "
            f"skipped, {blank} blank"
        )
    return Outcome(not found.skipped, problems)


def _hardware_seeds(lab: Lab) -> list[bytes]:
    text = (REPO / "hwtests" / "hardware.example.toml").read_text()
    text = text.replace('"/etc/hafence/secrets/node3-bmc"', '"@PW@"')
    text = text.replace('password_env = "HAFENCE_SWITCH1_AUTH"', 'password_file = "@PW@"')
    text = text.replace(
        'snmp_priv_passwd_env = "HAFENCE_SWITCH1_PRIV"', 'snmp_priv_passwd_file = "@PW@"'
    )
    extra = (
        '\n[fence.psu]\ndriver = "fence_ipmilan"\nallow_power_off = true\n'
        'ip = "192.0.2.20"\nipport = 623\nusername = "admin"\npassword_file = "@PW@"\n'
        'lanplus = true\ncipher = "3"\ntimeout = 2.5\npower_wait = 1\n'
    )
    return [lab.fill(text).encode(), lab.fill(text + extra).encode()]


def _run_hardware(lab: Lab, data: bytes) -> Outcome:
    from hwtests.conftest import WATCHDOG_KEYS, load_hw_config

    path = Path(lab.write("hardware.toml", data))
    try:
        cfg = load_hw_config(path, lab.registry)
    except HafenceError as exc:
        return Outcome(False, error_problems(exc, str(path), data=data))
    assert cfg is not None
    problems = []
    for top, value in cfg.data.items():
        if not isinstance(value, dict):
            problems.append(f"top-level {top!r} is not a table")
    for name, table in cfg.data.get("watchdog", {}).items():
        ok = isinstance(table, dict) and set(table) <= set(WATCHDOG_KEYS)
        ok = ok and isinstance(table.get("device"), str)
        ok = ok and re.fullmatch(r"/dev/watchdog[0-9]{0,3}", table["device"]) is not None
        ok = ok and type(table.get("allow_reset", False)) is bool
        if not ok:
            problems.append(f"watchdog.{name} accepted: {table!r}")
    for dev in cfg.devices:
        if type(dev.allow_power_off) is not bool:
            problems.append(f"{dev.name}.allow_power_off")
        driver = dev.build(lab.registry)
        problems += option_problems(type(driver), driver.options)
    return Outcome(True, problems)


def _secret_seeds(lab: Lab) -> list[bytes]:
    return [b"s3cret-pw\n", b"Sup3r S3cret!\r\n", b"first\nsecond\n", b"no-newline"]


def _run_secret(lab: Lab, data: bytes) -> Outcome:
    path = lab.write("fuzzed.pw", data)
    try:
        secret = secret_from_file(path)
    except SecretError as exc:
        return Outcome(False, [] if path in str(exc) else [f"error names no file: {exc}"])
    value = secret.reveal()
    problems = []
    first = data.decode("utf-8").split("\n", 1)[0].removesuffix("\r")
    if not value or _CONTROL.search(value) or value != first:
        problems.append(f"secret {value!r} accepted from {data[:60]!r}")
    return Outcome(True, problems)


def targets(lab: Lab) -> dict[str, Target]:
    """Every parser target, with vocabularies that include this lab's files."""
    files = lab.vocabulary_files()
    fence_keys = (
        "timeout", "power_timeout", "power_wait", "poll_interval", "delay", "delay_max",
        "port", "ipport", "password", "password_file", "password_env", "password_script",
        "community_file", "username", "lanplus", "cipher", "privlvl", "action", "node",
        "plug", "ssl", "ipmi", "redfish", "fence_ipmilan", "snmp_ifmib", "serial",
        "baudrate", "outlets", "pulse_ms", "device", "connect", "node1", "bmc", "psu:3",
    )  # fmt: skip
    section_keys = (
        "node", "state", "group", "max_restart", "max_relocate", "failback", "comment",
        "nodes", "restricted", "nofailback", "resources", "affinity", "strict", "disable",
        "vm", "ct", "group:", "node-affinity:", "resource-affinity:", "started", "enabled",
    )  # fmt: skip
    json_keys = (
        "ha", "crs", "shutdown_policy", "max_worker", "ha-rebalance-on-start",
        "ha-auto-rebalance", "ha-auto-rebalance-method", "ha-auto-rebalance-threshold",
        "actor", "node", "action", "ok", "devices", "level", "attempt", "duration", "time",
        "results", "error_kind", "message", "conditional", "static", "failover",
    )  # fmt: skip
    toml_keys = (
        "driver", "allow_power_off", "description", "ip", "port", "ipport", "username",
        "password", "password_file", "password_env", "timeout", "power_timeout", "privlvl",
        "lanplus", "cipher", "device", "allow_reset", "snmp_version", "fence", "watchdog",
    )  # fmt: skip
    fence = mu.Syntax(re.compile(mu.FENCE), " {k}={v}", "connect bmc node=node1 {k}={v}",
                      vocabulary=fence_keys + files)  # fmt: skip
    section = mu.Syntax(re.compile(mu.SECTION), "\n\t{k} {v}", "\t{k} {v}",
                        vocabulary=section_keys)  # fmt: skip
    js = mu.Syntax(re.compile(mu.JSON), ', "{k}": {v}', '"{k}": {v},', json_values=True,
                   vocabulary=json_keys)  # fmt: skip
    toml = mu.Syntax(re.compile(mu.TOML), "\n{k} = {v}", "{k} = {v}", json_values=True,
                     vocabulary=toml_keys + files)  # fmt: skip
    secret = mu.Syntax(re.compile(r"(?P<k>)(?P<v>[^\n]+)"), "{v}", "{v}")
    return {
        "fence.cfg": Target("fence.cfg", fence, _fence_seeds, _run_fence),
        "datacenter.cfg": Target("datacenter.cfg", js, _datacenter_seeds, _run_datacenter),
        "resources.cfg": Target("resources.cfg", section, _resources_seeds, _run_resources),
        "groups.cfg": Target("groups.cfg", section, _groups_seeds, _run_groups),
        "rules.cfg": Target("rules.cfg", section, _rules_seeds, _run_rules),
        "fence history": Target("fence history", js, _history_seeds, _run_history),
        "hardware.toml": Target("hardware.toml", toml, _hardware_seeds, _run_hardware),
        "password_file": Target("password_file", secret, _secret_seeds, _run_secret),
    }
