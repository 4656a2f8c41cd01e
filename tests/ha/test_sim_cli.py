"""`hafence sim run` / `hafence sim compare` as a user runs them."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from hafence.cli.main import cli
from tests.ha.conftest import SCENARIOS


def run(*args: str):
    return CliRunner().invoke(cli, ["sim", *args], catch_exceptions=False)


def test_run_prints_the_ha_log() -> None:
    r = run("run", str(SCENARIOS / "test-basic1"))
    assert r.exit_code == 0
    assert "node1/crm: recover service 'vm:103' from fenced node 'node3'" in r.output
    assert r.output.rstrip().endswith("hardware: exit simulation - done")


def test_compare_match_and_summary() -> None:
    r = run("compare", str(SCENARIOS / "test-basic1"), str(SCENARIOS / "test-reboot1"))
    assert r.exit_code == 0
    assert "match    test-basic1" in r.output and "2 of 2 scenarios match" in r.output


def test_compare_mismatch_shows_a_diff(tmp_path: Path) -> None:
    d = tmp_path / "test-changed"
    shutil.copytree(SCENARIOS / "test-basic1", d)
    expect = (d / "log.expect").read_text().replace("to node 'node2'", "to node 'node1'")
    (d / "log.expect").write_text(expect)
    r = run("compare", str(d))
    assert r.exit_code == 1
    assert "MISMATCH test-changed" in r.output
    assert (
        "-info 240 node1/crm: recover service 'vm:103' from fenced node 'node3' to node 'node1'"
        in r.output
    )
    assert (
        "+info 240 node1/crm: recover service 'vm:103' from fenced node 'node3' to node 'node2'"
        in r.output
    )


def test_bad_scenario_file_names_file_and_line(tmp_path: Path) -> None:
    d = tmp_path / "test-bad"
    shutil.copytree(SCENARIOS / "test-basic1", d)
    (d / "service_config").write_text('{\n  "vm:101": { "node": "node1" \n')
    r = CliRunner().invoke(cli, ["sim", "run", str(d)])
    assert r.exit_code == 2
    assert "service_config:3: invalid JSON" in r.output


def test_unknown_command_in_cmdlist_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "test-badcmd"
    shutil.copytree(SCENARIOS / "test-basic1", d)
    (d / "cmdlist").write_text('[["power node1 on"], ["explode node1"]]')
    r = CliRunner().invoke(cli, ["sim", "run", str(d)])
    assert r.exit_code == 2
    assert "unknown command 'explode node1'" in r.output
