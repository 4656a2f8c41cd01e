#!/usr/bin/env python3
"""Fuzz campaign for every hafence parser and the ``hafence``/``ha-manager`` command lines.

    python scripts/fuzz_parsers.py                    # the issue's input counts
    python scripts/fuzz_parsers.py --inputs 500       # the same count for every target
    python scripts/fuzz_parsers.py --only fence.cfg --inputs 50000 --seed 7

Each input is one of our own example files (README, test fixtures, Proxmox's scenario
files, hwtests/hardware.example.toml, the fence_cfgs cases) or a real ``hafence`` or
``ha-manager`` invocation (on an embedded store in the run's directory), mutated by the
operations in tests/fuzz/mutate.py (lines deleted, duplicated, swapped; bytes flipped;
non-UTF-8, NUL and control characters inserted; values replaced by inf, nan, negative,
huge or empty ones; bare, repeated and unknown keys).

Per target it reports the inputs tried and counts:

* ``tracebacks``: the parser raised anything but a hafence error (for the CLI: a
  traceback, an "internal error", an exit code other than 0/1/2, or exit 2 without a
  message);
* ``accepted invalid``: the parser returned a result that breaks a rule its format
  declares: a value outside its declared type, range, choices or finiteness, an unknown
  or repeated key, a missing required property, a result that does not read back, a
  history line neither returned nor reported (the exact rule per target is in the
  docstring of tests/fuzz/targets.py);
* ``unnamed errors``: a rejection whose error does not name the file and the line (and,
  for resources.cfg/groups.cfg, the field).

The goal is 0, 0 and 0. Exit status 1 when any count is not zero. Examples of each
failure are printed (``--show N``). Runs in a temporary directory it removes.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz import mutate as mu  # noqa: E402
from tests.fuzz import targets as tg  # noqa: E402
from tests.fuzz.cli import CliLab, HaLab, mutate_argv, run_argv  # noqa: E402

# The input counts of issue 12's table (what the reporters ran), per target.
ISSUE_INPUTS = {
    "fence.cfg": 20_000,
    "datacenter.cfg": 3_000,
    "resources.cfg": 3_000,
    "groups.cfg": 3_000,
    "rules.cfg": 3_000,
    "fence history": 3_000,
    "hardware.toml": 4_000,
    "password_file": 3_000,
    "hafence arguments": 2_500,
    "ha-manager arguments": 2_500,
}
CLI = "hafence arguments"
HA_CLI = "ha-manager arguments"


@dataclass
class Tally:
    inputs: int = 0
    accepted: int = 0
    tracebacks: int = 0
    accepted_invalid: int = 0
    unnamed_errors: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)


def _show(data: bytes | list[str]) -> str:
    text = repr(data)
    return text if len(text) <= 400 else text[:400] + "..."


def fuzz_target(lab: tg.Lab, target: tg.Target, n: int, rnd: random.Random, show: int) -> Tally:
    seeds = target.seeds(lab)
    tally = Tally()
    start = time.monotonic()
    for _ in range(n):
        data = mu.mutate(rnd.choice(seeds), rnd, target.syntax)
        tally.inputs += 1
        try:
            outcome = target.run(lab, data)
        except Exception as exc:  # the parser leaked something else than a hafence error
            tally.tracebacks += 1
            if len(tally.examples) < show:
                where = traceback.extract_tb(exc.__traceback__)[-1]
                tally.examples.append(
                    f"traceback {type(exc).__name__}: {exc} at {where.filename}:{where.lineno}"
                    f"\n    input {_show(data)}"
                )
            continue
        tally.accepted += outcome.accepted
        if outcome.problems:
            if outcome.accepted:
                tally.accepted_invalid += 1
            else:
                tally.unnamed_errors += 1
            if len(tally.examples) < show:
                tally.examples.append(f"{outcome.problems[0]}\n    input {_show(data)}")
    tally.seconds = time.monotonic() - start
    return tally


def fuzz_cli(lab: CliLab | HaLab, n: int, rnd: random.Random, show: int) -> Tally:
    seeds, vocabulary = lab.seeds(), lab.vocabulary()
    lab.exit_codes.clear()  # "accepted" below: the runs that exited 0
    tally = Tally()
    start = time.monotonic()
    for _ in range(n):
        argv = mutate_argv(rnd.choice(seeds), rnd, vocabulary)
        tally.inputs += 1
        problems = run_argv(lab, argv)
        if problems:
            tally.tracebacks += 1
            if len(tally.examples) < show:
                tally.examples.append(f"{problems[0]}\n    argv {_show(argv)}")
    tally.accepted = lab.exit_codes[0]
    tally.seconds = time.monotonic() - start
    return tally


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, help="inputs per target (default: the issue's)")
    ap.add_argument("--only", action="append", choices=list(ISSUE_INPUTS), help="a target")
    ap.add_argument("--seed", type=int, default=1, help="random seed (runs are repeatable)")
    ap.add_argument("--show", type=int, default=3, help="examples to print per target")
    args = ap.parse_args(argv)
    # A parser that reads without bound must fail here, not take the machine down.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))
    names = args.only or list(ISSUE_INPUTS)
    results: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory(prefix="hafence-fuzz-") as tmp:
        workdir = Path(tmp)
        lab = tg.Lab(workdir / "parsers")
        targets = tg.targets(lab)
        for name in names:
            n = args.inputs or ISSUE_INPUTS[name]
            rnd = random.Random(f"{args.seed}:{name}")
            if name == CLI:
                results[name] = fuzz_cli(CliLab(workdir / "cli"), n, rnd, args.show)
            elif name == HA_CLI:
                results[name] = fuzz_cli(HaLab(workdir / "ha-manager"), n, rnd, args.show)
            else:
                results[name] = fuzz_target(lab, targets[name], n, rnd, args.show)
            t = results[name]
            print(
                f"{name:<18} {t.inputs:>7} inputs  {t.accepted:>6} accepted  "
                f"{t.tracebacks:>4} tracebacks  {t.accepted_invalid:>4} accepted invalid  "
                f"{t.unnamed_errors:>4} unnamed errors  {t.seconds:7.1f}s",
                flush=True,
            )
            for example in t.examples:
                print(f"    {example}")
    bad = Counter()
    for t in results.values():
        bad["tracebacks"] += t.tracebacks
        bad["accepted invalid"] += t.accepted_invalid
        bad["unnamed errors"] += t.unnamed_errors
    total = sum(t.inputs for t in results.values())
    print(f"total: {total} inputs, " + ", ".join(f"{v} {k}" for k, v in bad.items()))
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
