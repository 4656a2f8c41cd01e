"""``hafence lab`` refusals that need no lab: bad options, no lab where one is asked for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hafence.cli.main import cli
from hafence.lab.control import missing_modules
from hafence.lab.network import missing_tools, netns_supported


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["lab", *args])
    return r.exit_code, r.output


def test_no_lab_is_a_clear_failure(tmp_path: Path) -> None:
    code, out = run("--dir", str(tmp_path / "none"), "status")
    assert code == 1 and f"no lab in {tmp_path / 'none'} (hafence lab up)" in out
    code, out = run("--dir", str(tmp_path / "none"), "fault", "node1", "kill")
    assert code == 1 and "no lab in" in out


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    d = str(tmp_path / "lab")
    assert run("--dir", d, "up", "--nodes", "9")[0] == 2
    assert run("--dir", d, "up", "--timings", "slow")[0] == 2
    code, out = run("--dir", d, "fault", "node1", "melt")
    assert code == 2 and "melt" in out
    code, out = run("--dir", d, "fault", "node1", "restart")
    assert code == 2 and "restart needs --daemon" in out
    assert not (tmp_path / "lab").exists()  # nothing was created


def test_fault_help_lists_every_kind() -> None:
    code, out = run("fault", "--help")
    assert code == 0
    for kind in ("kill", "freeze", "partition", "slow-net", "bmc-dead", "bmc-stuck",
                 "etcd-stop", "link-down", "heal"):  # fmt: skip
        assert kind in out


def test_down_removes_only_a_lab_directory(tmp_path: Path) -> None:
    precious = tmp_path / "not-a-lab"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work\n")
    code, out = run("--dir", str(precious), "down")
    assert code == 0, out
    assert (precious / "thesis.tex").read_text() == "years of work\n"
    code, out = run("--dir", str(precious), "up")
    assert code == 1 and "is not empty and holds no lab" in out
    assert sorted(p.name for p in precious.iterdir()) == ["thesis.tex"]


def test_missing_python_packages_are_named_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert missing_modules(["json", "no_such_package_hl"]) == ["no_such_package_hl"]
    if netns_supported() or missing_tools():
        pytest.skip("the checks before it refuse first here")
    monkeypatch.setitem(sys.modules, "aiosmtpd", None)  # as if not installed
    code, out = run("--dir", str(tmp_path / "lab"), "up")
    assert code == 1, out
    assert "missing Python packages: aiosmtpd (pip install 'hafence[lab]')" in out
    assert not (tmp_path / "lab").exists()  # nothing was created
