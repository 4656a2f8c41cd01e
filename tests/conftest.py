"""Suite-wide hooks: slow checks marked, xdist workers' results gathered, and no process
the suite started outlives it.

* ``slow``: the files in :data:`SLOW` (seconds each, peers in subprocesses, venvs) are
  marked here, in one place; ``-m "not slow"`` skips them while developing, and
  ``bash scripts/test.sh`` runs them like every other test.
* Under pytest-xdist (``scripts/test.sh`` runs ``-n auto``) each worker tallies the HA
  reference scenarios it ran; the tallies reach the controller, which prints the
  summary once.
* Every process started by the suite inherits ``HAFENCE_TEST_RUN`` (a fresh id per run);
  when the run ends, any such process still alive is a leak: it is killed and named,
  with the test that started it.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.ha import conftest as ha

SLOW = (
    "tests/daemons/test_daemons_e2e.py",
    "tests/daemons/test_daemon_watchdog.py",
    "tests/daemons/test_fast_failover.py",
    "tests/ha/test_safety.py",
    "tests/ipmi/test_benchmark_runs.py",
    "tests/ipmi/test_hwtests_config.py",
    "tests/kit/test_kit_catches.py",
    "tests/kit/test_venv_install.py",
    "tests/redfish/test_benchmark_runs.py",
    "tests/watchdog/test_hwtest.py",
)
RUN_ENV = "HAFENCE_TEST_RUN"
OWNER_ENV = "HAFENCE_TEST_RUN_OWNER"  # the pid that started the run, and sweeps it
ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    if RUN_ENV not in os.environ:  # xdist workers and pytest runs inside tests inherit it
        os.environ[RUN_ENV] = uuid.uuid4().hex
        os.environ[OWNER_ENV] = str(os.getpid())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(ROOT).as_posix() in SLOW:
            item.add_marker(pytest.mark.slow)


# -- the HA scenario tally across xdist workers -------------------------------------
def pytest_sessionfinish(session: pytest.Session) -> None:
    out = getattr(session.config, "workeroutput", None)
    if out is not None:  # an xdist worker: hand the tally to the controller
        out["ha_scenarios"] = json.dumps(ha.RESULTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    data = getattr(node, "workeroutput", {}).get("ha_scenarios")
    if data:
        for key, names in json.loads(data).items():
            ha.RESULTS[key].extend(names)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    results = ha.RESULTS
    if not any(results.values()):
        return
    tr = terminalreporter
    tr.section("Proxmox HA reference scenarios")
    tr.write_line(f"{len(results['matched'])} matched, {len(results['mismatched'])} mismatched")
    for name in sorted(results["mismatched"]):
        tr.write_line(f"  MISMATCH {name}")


# -- leftover processes -------------------------------------------------------------
def _ours(run: str) -> dict[int, str]:
    """pid -> "its command line, started by TEST", for live processes of this run."""
    keep = {os.getpid()}
    pid = os.getppid()
    while pid > 1:  # this process's ancestors carry the id too
        keep.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in keep:
            continue
        try:
            env = dict(
                kv.split("=", 1)
                for kv in (entry / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in kv
            )
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
        if env.get(RUN_ENV) == run and state not in ("Z", "X"):
            test = env.get("PYTEST_CURRENT_TEST", "?")
            found[int(entry.name)] = f"{cmd.strip()[:120]}, started by {test}"
    return found


def pytest_unconfigure(config: pytest.Config) -> None:
    # After the session (and any xdist workers) ended: whatever still runs leaked.
    run = os.environ.get(RUN_ENV)
    if not run or os.environ.get(OWNER_ENV) != str(os.getpid()) or not Path("/proc").is_dir():
        return  # only the process that started the run sweeps (not a worker, nor a
        # pytest a test runs: it would take its sibling workers for leftovers)
    leaked = _ours(run)
    for pid in leaked:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while leaked and _ours(run) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _ours(run):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for pid, what in sorted(leaked.items()):
        sys.stderr.write(f"leaked process {pid} killed: {what}\n")
    _sweep_orphaned_labs()


def _sweep_orphaned_labs() -> None:
    """Labs of tests that died before their lab's supervisor could tear it down (a
    killed worker): their namespaces and links outlive every process. Only labs whose
    state directory was pytest's (a user's own lab is theirs to look at)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return
    from hafence.lab import cleanup

    ours = Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    for prefix in cleanup.orphans():
        state_dir = cleanup.orphan_state_dir(prefix)
        if state_dir is not None and state_dir.is_relative_to(ours):
            for item in cleanup.sweep_orphan(prefix):
                sys.stderr.write(f"leaked lab {prefix} ({state_dir}) swept: {item}\n")
