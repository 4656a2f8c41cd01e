"""``hafence lab down --orphans``: a lab whose supervisor was killed (with the test that
ran it) is swept by its names and by the state directory its runtime directory names;
a lab whose supervisor runs is left alone. Real namespaces, links and processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hafence.cli.main import cli
from hafence.lab.cleanup import ORPHAN_HINT, SUPERVISOR_MODULE, orphans
from hafence.lab.layout import RUN_ROOT, prefix_for
from hafence.lab.network import netns_supported, sh

SLEEP = "import time; time.sleep(300)"


@pytest.fixture
def made(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    why = netns_supported()
    if why:
        pytest.skip(f"needs network namespaces: {why}")
    procs: list[subprocess.Popen[bytes]] = []
    prefixes = [prefix_for(tmp_path / d) for d in ("dead", "alive")]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for prefix in prefixes:
            sh("ip", "netns", "del", f"{prefix}-node1", check=False)
            sh("ip", "link", "del", f"{prefix}-br", check=False)
            sh("rm", "-rf", str(RUN_ROOT / prefix), check=False)


def _lab_traces(prefix: str) -> None:
    sh("ip", "netns", "add", f"{prefix}-node1")
    sh("ip", "link", "add", f"{prefix}-br", "type", "bridge")
    (RUN_ROOT / prefix).mkdir(parents=True)


def _alive(p: subprocess.Popen[bytes]) -> bool:
    return p.poll() is None


def test_an_orphaned_lab_is_swept_and_a_live_one_is_not(
    tmp_path: Path, made: list[subprocess.Popen[bytes]]
) -> None:
    dead, alive = tmp_path / "dead", tmp_path / "alive"
    dead_prefix, alive_prefix = prefix_for(dead), prefix_for(alive)
    for prefix in (dead_prefix, alive_prefix):
        _lab_traces(prefix)
    (RUN_ROOT / dead_prefix / ORPHAN_HINT).write_text(f"{dead}\n")
    # a node's process (in its namespace) and a device's (host side, naming the state dir)
    node = subprocess.Popen(["ip", "netns", "exec", f"{dead_prefix}-node1", sys.executable,
                             "-c", SLEEP])  # fmt: skip
    device = subprocess.Popen([sys.executable, "-c", SLEEP, f"{dead}/bmc/node1/lan.conf"])
    # the live lab: its supervisor's command line names its state directory
    supervisor = subprocess.Popen([sys.executable, "-c", SLEEP, "-m", SUPERVISOR_MODULE,
                                   str(alive)])  # fmt: skip
    made += [node, device, supervisor]
    deadline = time.monotonic() + 30
    while not (RUN_ROOT / alive_prefix).exists() or alive_prefix in orphans():
        assert time.monotonic() < deadline, "the stand-in supervisor never showed"
        time.sleep(0.05)
    assert dead_prefix in orphans()

    r = CliRunner().invoke(cli, ["lab", "down", "--orphans"])
    assert r.exit_code == 0, r.output
    assert f"netns {dead_prefix}-node1" in r.output and f"link {dead_prefix}-br" in r.output
    for p in (node, device):
        p.wait(10)  # killed
    assert _alive(supervisor)
    assert dead_prefix not in orphans() and not (RUN_ROOT / dead_prefix).exists()
    assert f"{alive_prefix}-node1" in sh("ip", "netns", "list")  # untouched
    assert (RUN_ROOT / alive_prefix).exists()
