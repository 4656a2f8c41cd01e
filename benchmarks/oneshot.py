#!/usr/bin/env python3
"""One-shot status: ``hafence device status`` vs ClusterLabs ``fence_ipmilan -o status``.

Starts one OpenIPMI ``ipmi_sim`` on loopback and runs, alternately, each command as a
user would from a shell, several times:

* ``hafence device status --config fence.cfg --device bmc1``: a new process that
  imports hafence, reads fence.cfg (an ``ipmi`` device, its password in a file),
  resolves the ``ipmi`` driver (importing only that plugin), logs in and reads the
  power state;
* ``fence_ipmilan`` with ``action=status`` (lanplus, cipher 3): options on stdin, as
  fence_ipmilan reads them when run without arguments, so no password is on argv.

Wall-clock time per run, from process start to exit, min/median/max, and the CPU time
(user + system, a command's own children such as ipmitool included). Both run with
compiled bytecode as an installed package has it (a first, uncounted run of each
writes it where it is missing). ``--imports N`` also shows the N costliest imports of
the hafence command (``python -X importtime``). ``--hafence PATH`` measures another
installation's console script (default: the one beside this interpreter, else on
PATH); the output says whether it is an editable install (``pip install -e``, what
scripts/install.sh does) or an installed copy, and the load average around the runs.
``--floors`` adds reference rows: each tool's interpreter starting and printing a line,
and hafence's IPMI exchange alone (the driver's session code in a bare process: no
CLI, no fence.cfg, no asyncio), the least any hafence one-shot command can cost there.

    python benchmarks/oneshot.py [--rounds N] [--imports N] [--hafence PATH] [--floors] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from hafence.simdevices.ipmi_sim import IpmiSim

PASSWORD = "oneshot-Pw-1"

# The IPMI exchange alone, as hafence's driver does it (hafence_ipmi.session: login,
# Get Chassis Status), with no CLI, no fence.cfg and no asyncio; it leaves as the
# console script does (atexit handlers, then os._exit). What no hafence one-shot
# command can go below on the same interpreter.
EXCHANGE_ONLY = """\
import atexit, os, sys
from hafence.secrets import Secret
from hafence_ipmi import session
host, port, user, pw_file = sys.argv[1:5]
with open(pw_file, encoding="utf-8") as f:
    target = session.Target(host=host, port=int(port), user=user, password=Secret(f.read().strip()))
data = session.call(target, lambda cmd: session.raw(cmd, 0x00, 0x01))
print("power", "on" if data[0] & 0x01 else "off")
atexit._run_exitfuncs()
sys.stdout.flush()
os._exit(0)
"""


def hafence_script(path: str | None = None) -> str:
    here = Path(sys.executable).with_name("hafence")
    found = path or (str(here) if here.exists() else shutil.which("hafence"))
    if not found or not Path(found).exists():
        raise SystemExit("the hafence console script is not installed (pip install -e .)")
    return found


def script_python(script: str) -> str:
    """The interpreter a script runs with (its ``#!`` line, without options)."""
    with open(script, encoding="utf-8") as f:
        first = f.readline()
    return first[2:].split()[0] if first.startswith("#!") else sys.executable


def installation(script: str, env: dict[str, str]) -> str:
    """Where the script's hafence comes from: an editable install or an installed copy."""
    code = "import hafence; print(hafence.__file__)"
    where = subprocess.run(
        [script_python(script), "-P", "-c", code],  # -P: not the checkout in the cwd
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    kind = "installed copy" if "site-packages" in where else "editable install"
    return f"{script} ({kind}: {Path(where).parent})"


def child_env() -> dict[str, str]:
    # Installed packages carry compiled bytecode; let both tools use (and write) it.
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def fence_cfg(sim: IpmiSim, pw_file: Path) -> Path:
    """A fence.cfg with one ipmi device for the BMC, mode 0600, password in a file."""
    cfg = pw_file.with_name("fence.cfg")
    cfg.write_text(
        f"device bmc1 ipmi ip={sim.host} ipport={sim.port} username={sim.user} "
        f"password_file={pw_file} lanplus=1\nconnect bmc1 node=node1\n"
    )
    cfg.chmod(0o600)
    return cfg


def commands(
    sim: IpmiSim, pw_file: Path, script: str, floors: bool = False
) -> dict[str, tuple[list[str], str | None, str]]:
    """tool -> (argv, stdin, text its output must contain). ``floors`` adds the
    reference rows: each interpreter's bare start-up, and the IPMI exchange alone."""
    cfg = fence_cfg(sim, pw_file)
    hafence = [script, "device", "status", "--config", str(cfg), "--device", "bmc1"]
    stdin = "".join(
        f"{k}={v}\n"
        for k, v in {
            "action": "status",
            "ip": sim.host,
            "ipport": sim.port,
            "username": sim.user,
            "password": PASSWORD,
            "lanplus": 1,
            "cipher": 3,
        }.items()
    )
    cmds: dict[str, tuple[list[str], str | None, str]] = {
        "hafence device status": (hafence, None, " on "),
        "fence_ipmilan -o status": (["fence_ipmilan"], stdin, "Status: ON"),
    }
    if floors:
        ours = script_python(script)
        theirs = script_python(shutil.which("fence_ipmilan") or "fence_ipmilan")
        exchange = [ours, "-P", "-c", EXCHANGE_ONLY, sim.host, str(sim.port), sim.user]
        cmds |= {
            "  hafence: IPMI exchange only": ([*exchange, str(pw_file)], None, "power on"),
            "  hafence: python start-up": ([ours, "-c", "print('up')"], None, "up"),
            "  fence_ipmilan: python start-up": ([theirs, "-c", "print('up')"], None, "up"),
        }
    return cmds


def cpu_seconds() -> float:
    """User + system time of the children waited for so far (their children included)."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def run_once(
    argv: list[str], stdin: str | None, expect: str, env: dict[str, str]
) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds) of one run. On a loaded machine the wall clock
    mostly measures the wait for a core; the CPU time is the work the command did."""
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=120)
    took, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    if proc.returncode != 0 or expect not in proc.stdout:
        tail = (proc.stdout + proc.stderr).replace(PASSWORD, "******").strip()[-500:]
        raise SystemExit(f"{Path(argv[0]).name} failed (rc {proc.returncode}): {tail}")
    return took, cpu


def import_costs(argv: list[str], env: dict[str, str], top: int) -> list[tuple[str, float]]:
    """The ``top`` top-level imports of one hafence run by cumulative time (seconds)."""
    code = "import sys; from hafence.cli.main import cli; sys.argv[0] = 'hafence'; cli()"
    proc = subprocess.run(
        [script_python(argv[0]), "-P", "-X", "importtime", "-c", code, *argv[1:]],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line[len("import time:") :].split("|")
        if len(name) - len(name.lstrip()) <= 3:  # imported by the command itself
            rows.append((name.strip(), int(cumulative) / 1e6))
    return sorted(rows, key=lambda r: r[1], reverse=True)[:top]


def summary(times: list[float]) -> dict[str, float]:
    return {"min": min(times), "median": statistics.median(times), "max": max(times)}


def bench(rounds: int, imports: int, script: str, floors: bool = False) -> dict[str, object]:
    env = child_env()
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="hafence-oneshot-") as tmp,
        IpmiSim(password=PASSWORD) as sim,
    ):
        pw_file = Path(tmp) / "bmc.pw"
        pw_file.write_text(PASSWORD + "\n")
        pw_file.chmod(0o600)
        cmds = commands(sim, pw_file, script, floors)
        for argv, stdin, expect in cmds.values():  # warm-up: bytecode, page cache
            run_once(argv, stdin, expect, env)
        times: dict[str, list[float]] = {tool: [] for tool in cmds}
        cpus: dict[str, list[float]] = {tool: [] for tool in cmds}
        for _ in range(rounds):  # alternate, so both meet the same machine load
            for tool, (argv, stdin, expect) in cmds.items():
                took, cpu = run_once(argv, stdin, expect, env)
                times[tool].append(took)
                cpus[tool].append(cpu)
        costs = import_costs(cmds["hafence device status"][0], env, imports) if imports else []
    out: dict[str, object] = {"rounds": rounds, "hafence": installation(script, env)}
    out["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    out |= {
        tool: {**summary(t), "runs": t, "cpu": summary(cpus[tool])} for tool, t in times.items()
    }
    for key, figures in (("speedup", times), ("cpu_speedup", cpus)):
        ours, theirs = (
            statistics.median(figures[tool])
            for tool in ("hafence device status", "fence_ipmilan -o status")
        )
        out[key] = theirs / ours
    if costs:
        out["imports"] = dict(costs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="runs per command")
    ap.add_argument("--imports", type=int, default=0, metavar="N",
                    help="also show hafence's N costliest imports")  # fmt: skip
    ap.add_argument("--hafence", metavar="PATH", help="the hafence console script to measure")
    ap.add_argument("--floors", action="store_true",
                    help="also time the bare start-ups and the IPMI exchange alone")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    for tool in ("ipmi_sim", "ipmitool", "fence_ipmilan"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (scripts/install.sh installs it)")
    res = bench(args.rounds, args.imports, hafence_script(args.hafence), args.floors)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"one-shot status against one ipmi_sim, {args.rounds} runs each (seconds)")
    load = res["load_average"]
    print(f"hafence: {res['hafence']}\nload average (1 min): {load[0]} before, {load[1]} after\n")
    print(f"{'command':<34}{'min':>8}{'median':>8}{'max':>8}   cpu: {'min':>6}{'median':>8}")
    for tool, fig in res.items():
        if isinstance(fig, dict) and "median" in fig:
            cpu = fig["cpu"]
            print(
                f"{tool:<34}{fig['min']:>8.3f}{fig['median']:>8.3f}{fig['max']:>8.3f}"
                f"        {cpu['min']:>6.3f}{cpu['median']:>8.3f}"
            )
    print()
    for key, what in (("speedup", "wall-clock"), ("cpu_speedup", "CPU time")):
        speedup = float(res[key])  # type: ignore[arg-type]
        verdict = "faster" if speedup > 1 else "SLOWER"
        print(f"hafence device status, median {what}: {speedup:.2f}x fence_ipmilan ({verdict})")
    for name, seconds in dict(res.get("imports", {})).items():  # type: ignore[call-overload]
        print(f"  import {name:<40}{seconds:>8.3f}")


if __name__ == "__main__":
    main()
