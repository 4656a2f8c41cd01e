"""The ``hafence`` command line under mutated arguments: click usage errors or one-line
errors with exit 2 (1 when a device failed), never a traceback or an internal error.

In-process through CliRunner (property test), and the same checks through the real
console script for arguments a shell can pass (no NUL).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hafence.cli.main import cli
from tests.fuzz.cli import CliLab, HaLab, mutate_argv, run_argv


@pytest.fixture(scope="module")
def cli_lab(tmp_path_factory: pytest.TempPathFactory) -> CliLab:
    return CliLab(tmp_path_factory.mktemp("cli"))


def test_seed_invocations_end_cleanly(cli_lab: CliLab) -> None:
    for argv in cli_lab.seeds():
        assert run_argv(cli_lab, argv) == [], argv


def _fuzz(lab: CliLab | HaLab, examples: int) -> None:
    seeds, vocabulary = lab.seeds(), lab.vocabulary()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.integers(0, len(seeds) - 1), st.randoms(use_true_random=False))
    def check(index: int, rnd: random.Random) -> None:
        argv = mutate_argv(seeds[index], rnd, vocabulary)
        assert run_argv(lab, argv) == [], argv

    check()


def test_mutated_arguments(cli_lab: CliLab) -> None:
    _fuzz(cli_lab, 300)


def test_mutated_ha_manager_arguments(tmp_path: Path) -> None:
    _fuzz(HaLab(tmp_path / "ha"), 150)


def test_the_checker_sees_a_traceback(cli_lab: CliLab, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_argv is not blind: a command that blows up is reported."""
    import hafence.cli.fence as fence_cli

    def boom(*args: object, **kw: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(fence_cli, "load_config", boom)
    problems = run_argv(cli_lab, ["chain", "node1", "--config", str(cli_lab.cfg)])
    assert problems and "internal error" in problems[0]


def _hafence() -> str:
    exe = Path(sys.executable).with_name("hafence")
    if not exe.exists():
        pytest.skip("the hafence console script is not installed (pip install -e .)")
    return str(exe)


REDFISH = ["device", "status", "--driver", "redfish", "-o", "ip=127.0.0.1"]
# fmt: off
BAD_ARGUMENTS = [
    (["--timeout", "nan", "config", "check", "{cfg}"], 2, "not a finite number"),
    (["--timeout", "inf", "chain", "node1", "--config", "{cfg}"], 2, "--timeout"),
    (["fence", "node1", "--dry-run", "--config", "{cfg}", "--backoff", "inf"], 2, "--backoff"),
    (["fence", "node1", "--dry-run", "--config", "{cfg}", "--backoff", "nan"], 2, "finite"),
    (["fence", "node1", "--dry-run", "--config", "{cfg}", "--retries", "99999"], 2, "range"),
    (["config", "check", "/dev/zero"], 2, "not a regular file"),
    (["config", "check", "{latin1}"], 2, "latin1.cfg:1: not UTF-8 text"),
    (["history", "--history", "/etc"], 2, "/etc: cannot read"),
    (["history", "--history", "{hist}", "--limit", "0"], 2, "--limit"),
    (["history", "--history", "{hist}"], 0, "history.jsonl:3: skipped: "),
    ([*REDFISH, "-o", "timeout=inf", "--password-file", "{pw}"], 2,
     "timeout: expected a finite number"),
    ([*REDFISH, "-o", "password"], 2, "password: needs a value"),
    ([*REDFISH, "-o", "ipport=70000", "--password-file", "{pw}"], 2, "70000 out of range"),
    ([*REDFISH, "--password-file", "{latin1}"], 2, "password_file: file"),
    (["device", "status", "--config", "{cfg}", "--device", "bmc", "--node", "node1",
      "--timeout", "1"], 1, "unreachable"),
    (["sim", "run", "{missing}"], 2, "does not exist"),
]
# fmt: on


def _argv(cli_lab: CliLab, args: list[str]) -> list[str]:
    names = {"cfg": cli_lab.cfg, "pw": cli_lab.pw, "hist": cli_lab.history}
    names["latin1"], names["missing"] = cli_lab.notutf8, cli_lab.dir / "no-such-dir"
    return [a.format(**{k: str(v) for k, v in names.items()}) for a in args]


@pytest.mark.parametrize(("args", "code", "says"), BAD_ARGUMENTS)
def test_bad_arguments(cli_lab: CliLab, args: list[str], code: int, says: str) -> None:
    env = {"HAFENCE_STATE_DIR": str(cli_lab.state), "HAFENCE_FENCE_CFG": ""}
    result = CliRunner().invoke(cli, _argv(cli_lab, args), env=env)
    output = result.output + result.stderr
    assert result.exit_code == code, output
    assert says in output
    assert "Traceback" not in output and "internal error" not in output


@pytest.mark.parametrize(("args", "code", "says"), BAD_ARGUMENTS[::3])
def test_console_script_bad_arguments(
    cli_lab: CliLab, args: list[str], code: int, says: str
) -> None:
    env = {**os.environ, "HAFENCE_STATE_DIR": str(cli_lab.state)}
    env.pop("HAFENCE_FENCE_CFG", None)
    p = subprocess.run(
        [_hafence(), *_argv(cli_lab, args)],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    output = p.stdout + p.stderr
    assert p.returncode == code, output
    assert says in output
    assert "Traceback" not in output and "internal error" not in output
