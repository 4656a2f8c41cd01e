"""``fence_hafence``: any hafence fence driver as a ClusterLabs fence agent.

Pacemaker (and anything else that speaks the fence-agents protocol) runs it like any
``fence_*`` agent:

* with no arguments it reads ``name=value`` lines on stdin (``#`` comments, blank lines
  and surrounding double quotes ignored), which is how Pacemaker calls agents, so no
  secret is ever on a command line;
* with arguments it reads fence-agents' options: ``-o/--action``, ``-n/--plug``,
  ``-a/--ip``, ``-u/--ipport``, ``-l/--username``, ``-p/--password``,
  ``-S/--password-script``, ``-v/--verbose``, ``-D/--debug-file``, ``--driver=NAME``,
  and ``--any-driver-param=VALUE`` for every parameter of the chosen hafence driver.

``driver=`` picks the hafence driver (``ipmi``, ``redfish``, ``snmp_ifmib``...). Drivers take
their standard parameters from hafence's catalogue (``hafence.fence.params``), named as
fence-agents names them, so the options map one to one: ``ipport`` is the network port,
fence-agents' ``port`` is always the target (= ``plug``). A driver's deprecated names are
not offered; a vendor driver parameter named like one of the agent's own words is shown
under its first alias that is not. A secret parameter ``X`` may also come as
``X_file=PATH``, ``X_env=VARIABLE`` or ``X_script=COMMAND`` (its first output line, as
fence-agents' ``--password-script``).

Actions run through hafence's fencer (its time bounds, delays and off/on verification by
status polling). Exit codes are fence-agents': 0 success; ``status`` 0 = on, 2 = off;
1 = any failure.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from hafence import __version__
from hafence.errors import HafenceError, ParamError, UnknownDriverError
from hafence.fence.driver import COMMON_PARAMS, FenceDriver, Param
from hafence.fence.fencer import Fencer
from hafence.fence.metadata import driver_metadata_xml
from hafence.secrets import Secret

AGENT = "fence_hafence"
EC_OK, EC_GENERIC_ERROR, EC_STATUS_OFF = 0, 1, 2
ACTIONS = (
    "on", "off", "reboot", "status", "list", "list-status", "monitor", "metadata",
    "validate-all",
)  # fmt: skip
# fence-agents' spellings of the actions (enable/disable are old names of on/off).
ACTION_ALIASES = {"enable": "on", "disable": "off"}
BRIDGE = "fence_agent"  # a ClusterLabs agent behind fence_hafence would loop back out
SCRIPT_TIMEOUT = 30.0

log = logging.getLogger("hafence.fence_agent")

# Short options of fence-agents -> long name, and whether they take a value.
SHORT = {
    "o": ("action", True), "n": ("plug", True), "a": ("ip", True), "u": ("ipport", True),
    "l": ("username", True), "p": ("password", True), "S": ("password_script", True),
    "v": ("verbose", False), "D": ("debug_file", True), "q": ("quiet", False),
    "h": ("help", False), "V": ("version", False),
}  # fmt: skip
FLAGS = {"verbose", "quiet", "help", "version"}
# Names the agent owns; fence-agents' old names map onto them.
RENAMES = {"option": "action", "port": "plug"}
AGENT_KEYS = {"action", "plug", "driver", "nodename", "verbose", "debug_file", "quiet"}
# Generic fence-agents options with no meaning here: accepted (Pacemaker may pass them)
# and ignored, so an existing stonith resource can switch to fence_hafence unchanged.
IGNORED = {"separator", "plug_separator", "retry_on", "shell_timeout", "login_timeout",
           "verbose_level", "help", "version"}  # fmt: skip
RESERVED = {"port", "plug", "action", "driver", "nodename", "option"}


class AgentError(Exception):
    """Bad input for the agent: printed as ``Failed: ...``, exit 1."""


# -- reading options ------------------------------------------------------------------
def _norm(name: str) -> str:
    name = name.strip().replace("-", "_")
    return RENAMES.get(name, name)


def parse_stdin(lines: Iterable[str]) -> dict[str, str]:
    """fence-agents' stdin format: ``name=value`` per line."""
    out: dict[str, str] = {}
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        out[_norm(name)] = value
    return out


def parse_argv(argv: Sequence[str]) -> dict[str, str]:
    """fence-agents' command line: short options and ``--name[=value]`` long options."""
    out: dict[str, str] = {}
    args = list(argv)
    while args:
        word = args.pop(0)
        if word.startswith("--") and len(word) > 2:
            name, eq, value = word[2:].partition("=")
            name = _norm(name)
            if not eq:
                # A long option without '=' takes the next word unless it is a flag.
                if name in FLAGS or not args or args[0].startswith("-"):
                    value = "1"
                else:
                    value = args.pop(0)
            out[name] = value
        elif word.startswith("-") and len(word) > 1:
            letter, rest = word[1], word[2:]
            if letter not in SHORT:
                raise AgentError(f"unknown option '-{letter}'")
            name, takes = SHORT[letter]
            if takes:
                if not rest:
                    if not args:
                        raise AgentError(f"option '-{letter}' needs a value")
                    rest = args.pop(0)
                out[name] = rest
            else:
                out[name] = "1"
                if rest:  # clustered flags: -vq
                    args.insert(0, "-" + rest)
        else:
            raise AgentError(f"unexpected argument '{word}'")
    return out


# -- mapping onto a hafence driver -----------------------------------------------------
def exposed_name(p: Param) -> str | None:
    """The name a driver parameter has in fence-agents terms (None: the agent's own).

    ``plug`` is the agent's target; a driver parameter named like one of the agent's
    reserved words (a vendor's ``port``) is shown under its first alias that is not.
    """
    if "plug" in (p.name, *p.aliases):
        return None
    if p.name not in RESERVED:
        return p.name
    return next((a for a in p.aliases if a not in RESERVED), None)


def _plug_param(cls: type[FenceDriver]) -> str | None:
    return next((p.name for p in cls.all_params() if "plug" in (p.name, *p.aliases)), None)


def run_script(name: str, command: str) -> Secret:
    """A secret from ``X_script=COMMAND``: the first line it prints (fence-agents do this
    through the shell too). Its output never reaches a log or an error message."""
    try:
        proc = subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ParamError(name, f"gave no answer within {SCRIPT_TIMEOUT:g}s") from None
    if proc.returncode != 0:
        raise ParamError(name, f"exited with status {proc.returncode}")
    lines = proc.stdout.splitlines()
    return Secret(lines[0] if lines else "")


def driver_options(cls: type[FenceDriver], opts: Mapping[str, str]) -> dict[str, Any]:
    """Agent options -> the driver's options (validated later by the driver itself)."""
    secrets = {p.name for p in cls.all_params() if p.secret}
    by_name = {n: p.name for p in cls.all_params() for n in (p.name, *p.aliases)}
    out: dict[str, Any] = {}
    for key, value in opts.items():
        if key in AGENT_KEYS or key in IGNORED:
            continue
        base, _, src = key.rpartition("_")
        if src == "script" and by_name.get(base) in secrets:
            out[by_name[base]] = run_script(key, value)
        elif key in RESERVED:
            raise ParamError(key, f"is not a parameter of fence_hafence's driver '{cls.name}'")
        else:
            out[key] = value
    plug = opts.get("plug")
    if plug:
        target = _plug_param(cls)
        if target is not None:
            out[target] = plug
        else:  # one device, one target (a BMC): fence-agents ignore the plug too
            log.debug("driver '%s' has no plug; ignoring plug=%s", cls.name, plug)
    return out


def driver_classes() -> dict[str, type[FenceDriver]]:
    from hafence.plugins import get_registry

    return {n: c for n, c in get_registry().fence_drivers().items() if n != BRIDGE}


def build(opts: Mapping[str, str]) -> FenceDriver:
    name = opts.get("driver")
    if not name:
        raise ParamError("driver", "required: which hafence driver to run (e.g. driver=ipmi)")
    drivers = driver_classes()
    if name not in drivers:
        raise UnknownDriverError("fence", name, list(drivers))
    cls = drivers[name]
    try:
        return cls(driver_options(cls, opts), label=f"{AGENT}:{name}")
    except ParamError as exc:  # name the field as the agent's user wrote it (ipport, plug)
        p = next((p for p in cls.all_params() if p.name == exc.field), None)
        shown = (exposed_name(p) or "plug") if p is not None else exc.field
        if shown == exc.field:
            raise
        raise ParamError(shown, exc.message) from None


# -- metadata ---------------------------------------------------------------------------
def _agent_params(drivers: Mapping[str, type[FenceDriver]], driver: str | None) -> tuple:
    return (
        Param("action", str, default="reboot", choices=ACTIONS[:7], help="Fencing action"),
        Param(
            "driver",
            str,
            required=True,
            choices=tuple(sorted(drivers)),
            default=driver,
            help="hafence fence driver that talks to the device",
        ),
        Param("plug", str, aliases=("port",), help="Target on the device (outlet, port...)"),
        Param(
            "password_script",
            str,
            help="Script that prints the password (or password_file=PATH, password_env=VAR)",
        ),
        Param("verbose", bool, help="Verbose output (never shows a secret)"),
        Param("debug_file", str, help="Write debugging output to this file"),
    )


def _exposed(p: Param, name: str, **changes: Any) -> Param:
    aliases = tuple(a for a in p.aliases if a not in RESERVED and a != name)
    fields = {
        "type": p.type, "required": p.required, "default": p.default, "secret": p.secret,
        "help": p.help, "choices": p.choices, "aliases": aliases,
    }  # fmt: skip
    fields.update(changes)
    return Param(name, **fields)


def agent_params(driver: str | None = None) -> tuple[Param, ...]:
    """The agent's parameters: its own, then one driver's (or all drivers', merged)."""
    drivers = driver_classes()
    if driver is not None and driver not in drivers:
        raise UnknownDriverError("fence", driver, list(drivers))
    common = {p.name for p in COMMON_PARAMS}
    merged: dict[str, Param] = {}
    users: dict[str, list[str]] = {}
    chosen = {driver: drivers[driver]} if driver else drivers
    for dname, cls in sorted(chosen.items()):
        for p in cls.params:
            name = exposed_name(p)
            if name is None or name in common:
                continue
            users.setdefault(name, []).append(dname)
            if name not in merged:
                merged[name] = _exposed(p, name)
            elif merged[name].choices != p.choices or merged[name].type is not p.type:
                merged[name] = _exposed(merged[name], name, type=str, choices=(), default=None)
    out = list(_agent_params(drivers, driver))
    for name, p in merged.items():
        if driver is None:  # shared by several drivers: required by some at most
            help_text = f"{p.help} [{', '.join(users[name])}]"
            p = _exposed(p, name, required=False, help=help_text)
        out.append(p)
    return tuple(out)


def metadata_xml(driver: str | None = None) -> str:
    """fence-agents ``-o metadata`` XML (valid against fence-agents' metadata.rng)."""
    shape: Any = type(
        "FenceHafenceAgent",
        (FenceDriver,),
        {
            "name": AGENT,
            "description": "Fence agent running hafence's fence drivers"
            + (f" (driver {driver})" if driver else ""),
            "params": agent_params(driver),
            "actions": frozenset(a for a in ACTIONS if a != "metadata"),
        },
    )
    return driver_metadata_xml(shape)


# -- running ------------------------------------------------------------------------------
async def run_action(driver: FenceDriver, action: str, node: str | None, out: IO[str]) -> int:
    fencer = Fencer(actor=f"{AGENT}@{socket.gethostname()}", history=None)
    if action == "validate-all":
        return EC_OK  # built and validated already
    act = "list" if action == "list-status" else action
    res = await fencer.run_device(driver, act, node=node, record=False)
    if not res.ok:
        if act == "list" and res.error_kind == "not_supported":
            print("N/A", file=out)  # fence-agents: a device without ports
            return EC_OK
        log.error("Failed: %s %s: %s (%s)", driver.label, act, res.error_kind, res.message)
        return EC_GENERIC_ERROR
    if act == "status":
        print(f"Status: {res.state.upper()}", file=out)
        return EC_STATUS_OFF if res.state == "off" else EC_OK
    if act == "list":
        for port in res.ports or []:
            row = [port["id"], port["alias"] or port["name"]]
            if action == "list-status":
                row.append(port["state"].upper())
            print(",".join(row), file=out)
    elif act in ("on", "off"):
        print(f"Success: Powered {act.upper()}", file=out)
    elif act == "reboot":
        print("Success: Rebooted", file=out)
    return EC_OK


def _setup_logging(opts: Mapping[str, str]) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if opts.get("debug_file"):
        handlers.append(logging.FileHandler(opts["debug_file"]))
    verbose = opts.get("verbose", "0").lower() in ("1", "yes", "on", "true")
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=handlers,
                        force=True)  # fmt: skip
    if not verbose:  # one "Failed: ..." line, not the fencer's line before it too
        logging.getLogger("hafence.fence").setLevel(logging.CRITICAL)


def usage() -> str:
    return (
        f"Usage: {AGENT} [options]  (or name=value lines on stdin)\n"
        "  -o, --action=ACTION      on, off, reboot, status, list, list-status, monitor,\n"
        "                           metadata, validate-all (default reboot)\n"
        "  --driver=NAME            hafence driver (hafence drivers list)\n"
        "  -n, --plug=ID            target on the device\n"
        "  -a, --ip=ADDR  -u, --ipport=PORT  -l, --username=NAME\n"
        "  -p, --password=SECRET    (visible in ps: prefer stdin, --password-file=PATH,\n"
        "                           --password-env=VAR or -S/--password-script=CMD)\n"
        "  --NAME=VALUE             any parameter of the driver (-o metadata --driver=NAME)\n"
        "  -v, --verbose  -D, --debug-file=PATH  -V, --version  -h, --help\n"
    )


def main(argv: Sequence[str] | None = None, stdin: IO[str] | None = None,
         out: IO[str] | None = None) -> int:  # fmt: skip
    """Run the agent; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    out = out or sys.stdout
    try:
        opts = parse_argv(argv) if argv else parse_stdin((stdin or sys.stdin).readlines())
    except AgentError as exc:
        print(f"{AGENT}: {exc}\n{usage()}", file=sys.stderr)
        return EC_GENERIC_ERROR
    _setup_logging(opts)
    if opts.get("help"):
        print(usage(), file=out)
        return EC_OK
    if opts.get("version"):
        print(__version__, file=out)
        return EC_OK
    action = ACTION_ALIASES.get(opts.get("action", "reboot"), opts.get("action", "reboot"))
    try:
        if action not in ACTIONS:
            raise ParamError("action", f"must be one of {', '.join(ACTIONS)}, got {action!r}")
        if action == "metadata":
            print(metadata_xml(opts.get("driver") or None), file=out, end="")
            return EC_OK
        driver = build(opts)
    except (HafenceError, OSError) as exc:
        log.error("Failed: %s", exc)
        return EC_GENERIC_ERROR
    return asyncio.run(run_action(driver, action, opts.get("nodename"), out))


def cli() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
