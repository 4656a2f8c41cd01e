"""The daemons as clients of a real hafence-watchdog-mux (fake device at the syscall seam),
and their start-up checks: nothing runs on a bad store URL, a broken fence.cfg or bad
timings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hafence.cli.ha_manager import cli as ha_manager
from hafence.watchdog.client import mux_status
from hafence.watchdog.muxproc import MuxProcess

# self-fencing rule: lease 10 > watchdog 4 + the mux's hardware 5 + store 0.5
TIMINGS = ["--interval", "0.5", "--lease-ttl", "10", "--watchdog-timeout", "4",
           "--fence-delay", "2", "--node-timeout", "2", "--watchdog-hw-timeout", "5"]  # fmt: skip


def wait_for(cond: Any, timeout: float, what: str) -> None:
    """A bound against hangs, not a speed assertion."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _clients(mux: MuxProcess) -> set[str]:
    return {c["name"] for c in mux_status(mux.socket)["clients"]}


def _dummy_alive(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / "dummy" / "wd.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


@pytest.fixture
def node1(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """node1's real mux, CRM and LRM on an embedded store; everything reaped at the end."""
    mux = MuxProcess(tmp_path / "wd", timeout=5).start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    state = tmp_path / "state"
    try:
        for role in ("crm", "lrm"):
            argv = [sys.executable, "-c", f"from hafence.daemons import {role}_main; {role}_main()",
                    "--node", "node1", "--store", str(tmp_path / "ha"),
                    "--watchdog-socket", mux.socket, *TIMINGS]  # fmt: skip
            if role == "lrm":
                argv += ["--state-dir", str(state)]
            with open(tmp_path / f"{role}.log", "wb") as logf:
                procs[role] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=logf)
        yield {"mux": mux, "procs": procs, "state": state, "tmp": tmp_path}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
        pid = _dummy_alive(state)
        if pid:
            os.kill(pid, signal.SIGKILL)
        mux.stop(grace=2)


def test_daemons_hold_the_watchdog_and_a_killed_lrm_trips_it(node1: dict[str, Any]) -> None:
    mux, procs, tmp = node1["mux"], node1["procs"], node1["tmp"]
    r = CliRunner().invoke(ha_manager, ["--store", str(tmp / "ha"), "add", "dummy:wd",
                                        "--node", "node1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    wait_for(lambda: _dummy_alive(node1["state"]) is not None, 40, "dummy:wd to start")
    # the master CRM and the active LRM are both the mux's clients
    wait_for(lambda: _clients(mux) == {"node1-crm", "node1-lrm"}, 20, "both watchdog clients")
    assert mux_status(mux.socket)["feeding"]

    # a clean CRM stop releases its lock and disarms its client with magic close
    procs["crm"].send_signal(signal.SIGTERM)
    assert procs["crm"].wait(timeout=30) == 0
    assert _clients(mux) == {"node1-lrm"}
    st = mux_status(mux.socket)
    assert st["feeding"] and not st["tripped"]

    # an LRM that dies holding its lock leaves without magic close: the node must reset
    procs["lrm"].send_signal(signal.SIGKILL)
    procs["lrm"].wait()
    wait_for(lambda: mux_status(mux.socket)["tripped"], 20, "the mux to stop feeding")
    assert not mux_status(mux.socket)["feeding"]
    assert "node1-lrm" in mux.log()
    crm_log = (tmp / "crm.log").read_text()
    assert "voluntary release CRM lock" in crm_log


# -- start-up checks ------------------------------------------------------------------------


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.exit_code = proc.returncode
        self.output = proc.stdout + proc.stderr


def _run(role: str, *args: str) -> Result:
    """The console script as a process (its logging set-up stays out of pytest's)."""
    code = f"from hafence.daemons import {role}_main; {role}_main()"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    return Result(proc)


def test_broken_fence_cfg_stops_the_crm_naming_line_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "fence.cfg"
    cfg.write_text("device bmc1 ipmi ip=127.0.0.1 password=s3cret-pw bogus_opt=1\n"
                   "connect bmc1 node=node1\n")  # fmt: skip
    store = tmp_path / "ha"
    r = _run("crm", "--node", "node1", "--store", str(store), "--no-watchdog",
             "--fence-config", str(cfg))  # fmt: skip
    assert r.exit_code == 2
    assert str(cfg) in r.output and "line 1" in r.output and "bogus_opt" in r.output
    assert "s3cret-pw" not in r.output
    assert not store.exists()  # nothing locked, nothing written


def test_missing_fence_cfg_stops_the_crm(tmp_path: Path) -> None:
    r = _run("crm", "--node", "node1", "--store", str(tmp_path / "ha"), "--no-watchdog",
             "--fence-config", str(tmp_path / "nope.cfg"))  # fmt: skip
    assert r.exit_code == 2
    assert "nope.cfg" in r.output


def test_malformed_store_url_is_refused_at_start() -> None:
    r = _run("lrm", "--node", "node1", "--store", "etcd://localhost:notaport/c",
             "--no-watchdog")  # fmt: skip
    assert r.exit_code == 2
    assert "notaport" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--lease-ttl", "5", "--watchdog-timeout", "10"], "self-fence before takeover"),
        (["--interval", "0"], "interval must be > 0"),
        (["--interval", "10", "--node-timeout", "15"], "membership outlasts a round"),
    ],
)
def test_unsafe_timings_are_refused(tmp_path: Path, args: list[str], msg: str) -> None:
    r = _run("lrm", "--node", "node1", "--store", str(tmp_path / "ha"), "--no-watchdog", *args)
    assert r.exit_code == 2
    assert msg in r.output
    assert not (tmp_path / "ha").exists()
