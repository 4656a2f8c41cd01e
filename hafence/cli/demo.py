"""``hafence demo``: a fence drill against a simulated BMC, then an HA failover.

Runs on a fresh machine after ``scripts/install.sh``: starts OpenIPMI's ``ipmi_sim`` on
127.0.0.1 (a free port), writes a fence.cfg for node ``node1`` (password in a 0600
file, not in the config), then runs the very commands an operator would:
``config check``, ``fence node1 --dry-run``, a real verified ``fence node1``, the
fence history, and ``device on``. Everything lives in a temp dir removed at the end,
and the BMC is always stopped.
"""

from __future__ import annotations

import os
import secrets
import shlex
import tempfile
from pathlib import Path
from typing import Any

import click

from hafence.cli import output as out
from hafence.cli.output import UsageProblem

NODE = "node1"
DEVICE = "bmc1"


def _step(ctx: click.Context, argv: list[str], command: click.Command, **params: Any) -> None:
    """Show the command line, then run the command in this process."""
    out.echo()
    out.echo(f"$ hafence {shlex.join(argv)}")
    try:
        ctx.invoke(command, **params)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise UsageProblem(f"demo step failed: hafence {shlex.join(argv)}") from None


def write_demo_config(workdir: Path, bmc: Any) -> Path:
    """fence.cfg for node1 behind the simulated BMC; the password sits in a 0600 file."""
    pw_file = workdir / "bmc1.password"
    fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(bmc.password + "\n")
    cfg = workdir / "fence.cfg"
    text = (
        "# demo: one IPMI BMC (OpenIPMI ipmi_sim on loopback) fences node1\n"
        f"device {DEVICE} ipmi ip={bmc.host} ipport={bmc.port} username={bmc.user} "
        f"password_file={pw_file} lanplus=1 timeout=5 power_timeout=10 poll_interval=0.1\n"
        f"connect {DEVICE} node={NODE}\n"
    )
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return cfg


def run_failover_demo(workdir: Path) -> bool:
    """A simulated HA failover: node1 drops off the network, is fenced, vm:100 moves.

    Runs the real CRM/LRM code on the simulator (three nodes, a fence device for node1)
    and prints the HA log; also saves it as ``failover.log`` in ``workdir``. Returns False
    if the outcome is not the safe one.
    """
    from hafence.sim.hardware import Hardware
    from hafence.sim.safety import SafetyChecker

    nodes = ("node1", "node2", "node3")
    hw = Hardware(
        status={n: {"power": "off", "network": "off", "shutdown": None} for n in nodes},
        service_config={
            "vm:100": {"node": "node1", "state": "started"},
            "vm:101": {"node": "node2", "state": "started"},
        },
        cmdlist=[[f"power {n} on" for n in nodes], ["network node1 off"]],
    )
    hw.add_fence_device("node1")
    checker = SafetyChecker(hw)
    out.echo()
    out.echo("HA failover on the simulator (virtual time; node1 loses its network at t=120):")
    text = hw.run()
    for line in text.splitlines():
        if any(k in line for k in ("node1", "vm:100", "fence", "FENCE", "SUCCEED")):
            out.echo(f"  {line}")
    (workdir / "failover.log").write_text(text)
    moved = hw.service_config["vm:100"]["node"] != "node1"
    ok = moved and not checker.violations
    out.echo(
        "vm:100 recovered on " + hw.service_config["vm:100"]["node"] + " after node1 was fenced"
        if ok
        else f"failover demo went wrong: {checker.violations or 'vm:100 not recovered'}"
    )
    return ok


@click.command("demo")
@out.command_body
def demo() -> None:
    """Fence drill on a simulated BMC (ipmi_sim on loopback); cleans up after itself."""
    from hafence.cli.devices import device
    from hafence.cli.fence import config_check, fence_cmd, history_cmd
    from hafence.simdevices.ipmi_sim import IpmiSim, IpmiSimError, available

    if out.state().json:
        raise UsageProblem("hafence demo prints a walkthrough; it has no JSON output")
    if not available():
        raise UsageProblem(
            "ipmi_sim not found: install the Debian package 'openipmi' (scripts/install.sh)"
        )
    ctx = click.get_current_context()
    with tempfile.TemporaryDirectory(prefix="hafence-demo-") as tmp:
        workdir = Path(tmp)
        history = str(workdir / "fence-history.jsonl")
        bmc = IpmiSim(password="demo-" + secrets.token_urlsafe(9), workdir=workdir / "bmc")
        out.register_secret(bmc.password)
        try:
            bmc.start()
        except IpmiSimError as exc:
            raise UsageProblem(f"cannot start the simulated BMC: {exc}") from None
        try:
            out.echo(f"hafence demo: simulated BMC (OpenIPMI ipmi_sim) on {bmc.host}:{bmc.port},")
            out.echo(f"power of its target: {bmc.power}; working in {workdir}")
            cfg = str(write_demo_config(workdir, bmc))
            steps: list[tuple[list[str], click.Command, dict[str, Any]]] = [
                (["config", "check", cfg], config_check, {"file": cfg}),
                (
                    ["fence", NODE, "--dry-run", "--config", cfg],
                    fence_cmd,
                    {"node": NODE, "config_path": cfg, "dry_run": True},
                ),
                (
                    ["fence", NODE, "--yes", "--config", cfg, "--history", history],
                    fence_cmd,
                    {"node": NODE, "config_path": cfg, "yes": True, "history_path": history},
                ),
            ]
            for argv, command, params in steps:
                _step(ctx, argv, command, **params)
            out.echo(f"(the simulator itself reports the target's power: {bmc.power})")
            _step(
                ctx,
                ["history", NODE, "--history", history],
                history_cmd,
                node=NODE,
                history_path=history,
            )
            on_cmd = device.get_command(ctx, "on")
            assert on_cmd is not None
            _step(
                ctx,
                ["device", "on", "--config", cfg, "--device", DEVICE, "--history", history],
                on_cmd,
                config_path=cfg,
                device=DEVICE,
                history_path=history,
            )
            out.echo(f"(the simulator itself reports the target's power: {bmc.power})")
            ok = run_failover_demo(workdir)
        finally:
            bmc.stop()
    out.echo()
    out.echo("demo done: simulated BMC stopped, temp files removed")
    if not ok:
        raise SystemExit(out.EXIT_FAILED)
