#!/usr/bin/env python3
"""One-shot status: ``hafence device status`` vs ClusterLabs ``fence_ipmilan -o status``.

Starts one OpenIPMI ``ipmi_sim`` on loopback and runs, alternately, each command as a
user would from a shell, several times:

* ``hafence device status --driver ipmi -o ip=... --password-file FILE``: a new
  process that imports hafence, resolves the ``ipmi`` driver (importing only that
  plugin), logs in and reads the power state;
* ``fence_ipmilan`` with ``action=status`` (lanplus, cipher 3): options on stdin, as
  fence_ipmilan reads them when run without arguments, so no password is on argv.

Wall-clock time per run, from process start to exit, min/median/max. Both run with
compiled bytecode as an installed package has it (a first, uncounted run of each
writes it where it is missing). ``--imports N`` also shows the N costliest imports of
the hafence command (``python -X importtime``).

    python benchmarks/oneshot.py [--rounds N] [--imports N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
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


def hafence_script() -> str:
    here = Path(sys.executable).with_name("hafence")
    found = str(here) if here.exists() else shutil.which("hafence")
    if not found:
        raise SystemExit("the hafence console script is not installed (pip install -e .)")
    return found


def child_env() -> dict[str, str]:
    # Installed packages carry compiled bytecode; let both tools use (and write) it.
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def commands(sim: IpmiSim, pw_file: Path) -> dict[str, tuple[list[str], str | None, str]]:
    """tool -> (argv, stdin, text its output must contain)."""
    hafence = [
        hafence_script(), "device", "status", "--driver", "ipmi",
        "-o", f"ip={sim.host}", "-o", f"ipport={sim.port}", "-o", f"username={sim.user}",
        "--password-file", str(pw_file),
    ]  # fmt: skip
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
    return {
        "hafence device status": (hafence, None, " on "),
        "fence_ipmilan -o status": (["fence_ipmilan"], stdin, "Status: ON"),
    }


def run_once(argv: list[str], stdin: str | None, expect: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=120)
    took = time.perf_counter() - t0
    if proc.returncode != 0 or expect not in proc.stdout:
        tail = (proc.stdout + proc.stderr).replace(PASSWORD, "******").strip()[-500:]
        raise SystemExit(f"{Path(argv[0]).name} failed (rc {proc.returncode}): {tail}")
    return took


def import_costs(argv: list[str], env: dict[str, str], top: int) -> list[tuple[str, float]]:
    """The ``top`` top-level imports of one hafence run by cumulative time (seconds)."""
    code = "import sys; from hafence.cli.main import cli; sys.argv[0] = 'hafence'; cli()"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *argv[1:]],
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


def bench(rounds: int, imports: int) -> dict[str, object]:
    env = child_env()
    with (
        tempfile.TemporaryDirectory(prefix="hafence-oneshot-") as tmp,
        IpmiSim(password=PASSWORD) as sim,
    ):
        pw_file = Path(tmp) / "bmc.pw"
        pw_file.write_text(PASSWORD + "\n")
        pw_file.chmod(0o600)
        cmds = commands(sim, pw_file)
        for argv, stdin, expect in cmds.values():  # warm-up: bytecode, page cache
            run_once(argv, stdin, expect, env)
        times: dict[str, list[float]] = {tool: [] for tool in cmds}
        for _ in range(rounds):  # alternate, so both meet the same machine load
            for tool, (argv, stdin, expect) in cmds.items():
                times[tool].append(run_once(argv, stdin, expect, env))
        costs = import_costs(cmds["hafence device status"][0], env, imports) if imports else []
    out: dict[str, object] = {"rounds": rounds}
    out |= {tool: {**summary(t), "runs": t} for tool, t in times.items()}
    ours, theirs = (statistics.median(t) for t in times.values())
    out["speedup"] = theirs / ours
    if costs:
        out["imports"] = dict(costs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="runs per command")
    ap.add_argument("--imports", type=int, default=0, metavar="N",
                    help="also show hafence's N costliest imports")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    for tool in ("ipmi_sim", "ipmitool", "fence_ipmilan"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (scripts/install.sh installs it)")
    res = bench(args.rounds, args.imports)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"one-shot status against one ipmi_sim, {args.rounds} runs each (seconds)\n")
    print(f"{'command':<26}{'min':>8}{'median':>8}{'max':>8}")
    for tool, fig in res.items():
        if isinstance(fig, dict) and "median" in fig:
            print(f"{tool:<26}{fig['min']:>8.3f}{fig['median']:>8.3f}{fig['max']:>8.3f}")
    speedup = float(res["speedup"])  # type: ignore[arg-type]
    verdict = "faster" if speedup > 1 else "SLOWER"
    print(f"\nhafence device status: {speedup:.2f}x fence_ipmilan's speed ({verdict})")
    for name, seconds in dict(res.get("imports", {})).items():  # type: ignore[call-overload]
        print(f"  import {name:<40}{seconds:>8.3f}")


if __name__ == "__main__":
    main()
