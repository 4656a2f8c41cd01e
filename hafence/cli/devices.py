"""``hafence device ACTION``: act on one fence device, like ``stonith_admin``.

The device comes from the command line (``--driver ipmi -o ip=... --password-file F``)
or from fence.cfg (``--config F --device NAME [--node NODE]``). Actions go through the
fencer's own machinery (:meth:`Fencer.run_device`): the same time bounds, delays and
off/on verification by status polling as a real fence, and power actions land in the
fence history. ``off``, ``reboot`` and ``diag`` ask for confirmation unless ``--yes``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from hafence.cli import output as out
from hafence.cli.output import CommandFailed, UsageProblem
from hafence.errors import DeviceError, FenceError, FenceTimeoutError, UnreachableError
from hafence.fence import ChainDevice, FenceDriver, FenceHistory, Fencer, build_driver
from hafence.fence.chain import driver_class
from hafence.fence.config import FenceConfig, is_secret_key, load_fence_config
from hafence.fence.driver import FLAG
from hafence.fence.fencer import ActionResult
from hafence.fence.history import default_history_path

DEFAULT_CONFIG = "/etc/hafence/fence.cfg"
CONFIG_ENV = "HAFENCE_FENCE_CFG"
DESTRUCTIVE = {"off": "power off", "reboot": "reboot", "diag": "send a diagnostic interrupt (NMI)"}


def config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        envvar=CONFIG_ENV,
        default=DEFAULT_CONFIG,
        show_default=True,
        metavar="FILE",
        help=f"fence.cfg to read (or ${CONFIG_ENV}).",
    )(f)


def history_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--history",
        "history_path",
        default=None,
        metavar="FILE",
        help="Fence history file (default $HAFENCE_STATE_DIR/fence-history.jsonl, "
        "else /var/lib/hafence/fence-history.jsonl).",
    )(f)


def open_history(path: str | None) -> FenceHistory:
    """The history, warning (not failing) when it cannot be written."""
    history = FenceHistory(path) if path else FenceHistory(default_history_path())
    parent = history.path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        out.echo(
            f"warning: fence history {history.path} is not writable; this action will not "
            "be recorded (set HAFENCE_STATE_DIR or --history)",
            err=True,
        )
    return history


def with_timeout(spec: ChainDevice, timeout: float | None) -> ChainDevice:
    """The chain device with the global ``--timeout`` as its per-request bound."""
    if timeout is None:
        return spec
    return dataclasses.replace(spec, connect_args=(*spec.connect_args, ("timeout", str(timeout))))


def timeout_factory(timeout: float | None) -> Callable[[ChainDevice], FenceDriver] | None:
    """A Fencer driver_factory applying ``--timeout``, and registering secrets to scrub."""

    def factory(spec: ChainDevice) -> FenceDriver:
        driver = build_driver(with_timeout(spec, timeout))
        out.register_options(driver.options)
        return driver

    return factory


def load_config(path: str) -> FenceConfig:
    cfg = load_fence_config(path)
    # Scrub every credential-looking value of the file from all output.
    for dev in cfg.devices.values():
        for sub in dev.subdevices.values():
            args = list(sub.args) + [a for c in sub.connections.values() for a in c.args]
            for key, value in args:
                if value and is_secret_key(key) and not key.endswith(("_file", "_env")):
                    out.register_secret(value)
    return cfg


# -- where the device comes from ------------------------------------------------------
@dataclass
class DeviceSource:
    driver: str | None
    options: tuple[str, ...]
    password_file: str | None
    password_env: str | None
    password: str | None
    config_path: str
    device: str | None
    node: str | None
    label: str | None

    def extra_args(self) -> list[tuple[str, str | None]]:
        args: list[tuple[str, str | None]] = []
        for item in self.options:
            key, eq, value = item.partition("=")
            if not key:
                raise UsageProblem(f"-o '{item}': expected KEY=VALUE")
            args.append((key, value if eq else None))
            if eq and is_secret_key(key) and not key.endswith(("_file", "_env")):
                out.register_secret(value)
                _warn_visible(f"-o {key}=...")
        if self.password_file:
            args.append(("password_file", self.password_file))
        if self.password_env:
            args.append(("password_env", self.password_env))
        if self.password is not None:
            out.register_secret(self.password)
            _warn_visible("--password")
            args.append(("password", self.password))
        return args

    def build(self, timeout: float | None) -> tuple[FenceDriver, str | None]:
        """The driver (validated; ParamError/ConfigError name the field) and the node."""
        extra = self.extra_args()
        if self.driver and self.device:
            raise UsageProblem("give either --driver (device on the command line) or --device")
        if self.driver:
            cls = driver_class(self.driver)
            opts: dict[str, Any] = {k: (FLAG if v is None else v) for k, v in extra}
            if timeout is not None:
                opts["timeout"] = timeout
            driver = cls(opts, label=self.label or self.driver)
            out.register_options(driver.options)
            return driver, self.node
        if not self.device:
            raise UsageProblem("which device? give --driver NAME -o KEY=VALUE... or --device NAME")
        cfg = load_config(self.config_path)
        spec = find_device(cfg, self.device, self.node)
        spec = dataclasses.replace(spec, connect_args=(*spec.connect_args, *extra))
        driver = build_driver(with_timeout(spec, timeout))
        out.register_options(driver.options)
        return driver, spec.node or None


def _warn_visible(what: str) -> None:
    out.echo(
        f"warning: {what} puts a secret on the command line, where 'ps' shows it; "
        "prefer --password-file FILE, --password-env VAR or -o password_env=VAR",
        err=True,
    )


def find_device(cfg: FenceConfig, name: str, node: str | None) -> ChainDevice:
    """``NAME`` or ``NAME:N`` of fence.cfg, merged with its ``connect`` line for node.

    Without --node: the only node the device is connected to, or none at all.
    """
    try:
        sub = cfg.subdevice(name)
    except KeyError:
        known = ", ".join(cfg.devices) or "none"
        raise UsageProblem(
            f"no device '{name}' in {cfg.path} (devices: {known})", kind="no_device"
        ) from None
    if node is None:
        nodes = sorted(sub.connections)
        if len(nodes) > 1:
            raise UsageProblem(
                f"device '{sub.label}' is connected to several nodes ({', '.join(nodes)}); "
                "pick one with --node"
            )
        node = nodes[0] if nodes else None
    if node is not None and node not in sub.connections:
        raise UsageProblem(
            f"device '{sub.label}' is not connected to node '{node}' in {cfg.path}",
            kind="no_device",
        )
    conn = sub.connections.get(node) if node else None
    label = sub.label if len(cfg.devices[sub.name].subdevices) > 1 else sub.name
    return ChainDevice(
        node=node or "",
        device=sub.name,
        index=sub.index,
        driver=sub.driver,
        device_args=tuple(sub.args),
        connect_args=tuple(conn.args) if conn else (),
        file=cfg.path,
        device_line=sub.line,
        connect_line=conn.line if conn else 0,
        label=label,
    )


def device_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--driver", metavar="NAME", help="Driver of a device given here."),
        click.option(
            "-o",
            "--option",
            "options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Driver option (repeatable); a secret X may be X_file=PATH or X_env=VAR.",
        ),
        click.option(
            "--password-file", type=out.FilePath(dir_okay=False), help="Read the password here."
        ),
        click.option("--password-env", metavar="VAR", help="Read the password from $VAR."),
        click.option(
            "--password",
            metavar="SECRET",
            help="The password itself (visible in ps: prefer --password-file/--password-env).",
        ),
        config_option,
        click.option("--device", metavar="NAME[:N]", help="A device of fence.cfg."),
        click.option("--node", metavar="NODE", help="The node the action is for."),
        click.option("--label", metavar="NAME", help="Name of a --driver device in output."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


# -- output -------------------------------------------------------------------------
def show_result(res: ActionResult, node: str | None) -> None:
    if out.state().json:
        out.emit_json({**res.to_dict(), "node": node})
    else:
        out.echo(
            out.table(
                ["DEVICE", "DRIVER", "ACTION", "RESULT", "STATE", "TIME"],
                [
                    [
                        res.device,
                        res.driver,
                        res.action,
                        out.verdict(res.ok, res.error_kind),
                        res.state,
                        out.seconds(res.duration),
                    ]
                ],
            )
        )
        if res.ports is not None and res.ok:
            out.echo()
            out.echo(
                out.table(
                    ["PORT", "NAME", "ALIAS", "STATE"],
                    [[p["id"], p["name"], p["alias"], p["state"]] for p in res.ports],
                )
            )
        if res.message and res.ok:
            out.echo(f"note: {res.message}")
        if not res.ok:
            out.echo(f"error: {res.error_kind}: {res.message}", err=True)
    if not res.ok:
        raise CommandFailed


# -- running ------------------------------------------------------------------------
async def run_action(source: DeviceSource, action: str, history: FenceHistory | None):
    st = out.state()
    driver, node = source.build(st.timeout)
    try:
        if action == "diag":
            return await run_diag(driver), node
        fencer = Fencer(None, history=history, actor="hafence-cli")
        return await fencer.run_device(driver, action, node=node), node
    finally:
        try:
            await asyncio.wait_for(driver.close(), float(driver.options.get("timeout") or 10))
        except Exception:  # closing must not change the verdict
            pass


async def run_diag(driver: FenceDriver) -> ActionResult:
    """A diagnostic interrupt (NMI) where the driver lists it; bounded like any call."""
    res = ActionResult(driver.label, "diag", False, driver=driver.name)
    t0 = time.monotonic()
    bound = float(driver.options.get("timeout") or 10.0)
    try:
        if "diag" not in driver.actions or not hasattr(driver, "diag"):
            raise UsageProblem(f"driver '{driver.name}' has no 'diag' action")
        await asyncio.wait_for(driver.diag(), bound)
        res.ok = True
    except TimeoutError:
        res.error_kind = FenceTimeoutError.kind
        res.message = f"diag got no answer within {bound:g}s"
    except FenceError as exc:
        res.error_kind, res.message = exc.kind, exc.message
    except OSError as exc:
        res.error_kind, res.message = UnreachableError.kind, f"diag: {exc}"
    except UsageProblem:
        raise
    except Exception as exc:  # as the fencer does: anything unexpected is a device error
        res.error_kind = DeviceError.kind
        res.message = f"diag: {type(exc).__name__}: {exc}"
    res.duration = time.monotonic() - t0
    return res


def _describe(source: DeviceSource) -> str:
    if source.device:
        return f"device '{source.device}'" + (f" for node '{source.node}'" if source.node else "")
    ips = [o.partition("=")[2] for o in source.options if o.startswith(("ip=", "ipaddr="))]
    target = ips[0] if ips else ""
    return f"the target of {source.driver} device {target}".rstrip()


def make_action(action: str, help_text: str) -> click.Command:
    @click.command(action, help=help_text)
    @device_options
    @click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
    @history_option
    @out.command_body
    def command(yes: bool, history_path: str | None, **kw: Any) -> None:
        source = DeviceSource(**kw)
        if action in DESTRUCTIVE:
            out.confirm(f"{DESTRUCTIVE[action]} {_describe(source)}?", yes)
        history = open_history(history_path) if action in ("off", "on", "reboot") else None
        res, node = asyncio.run(run_action(source, action, history))
        show_result(res, node)

    return command


@click.group()
def device() -> None:
    """Act on one fence device (status, off, on, reboot, list, monitor, diag).

    \b
    hafence device status --driver ipmi -o ip=10.0.0.5 -o username=admin \\
        --password-file /etc/hafence/bmc.pw
    hafence device off --config /etc/hafence/fence.cfg --device ipmi1 --node node1
    """


_HELP = {
    "status": "Read the target's power state.",
    "off": "Power the target off and confirm it is off (asks unless --yes).",
    "on": "Power the target on and confirm it is on.",
    "reboot": "Reboot the target: native, or off + confirm + on (asks unless --yes).",
    "list": "List the ports/outlets the device controls.",
    "monitor": "Check the device is reachable and the credentials work.",
    "diag": "Send a diagnostic interrupt (NMI), where the driver offers it (asks unless --yes).",
}
for _action, _text in _HELP.items():
    device.add_command(make_action(_action, _text))
