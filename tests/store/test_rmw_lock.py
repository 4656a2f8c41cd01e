"""The read-modify-write lock with real ``ha-manager`` processes: a writer paused past the
lock's life loses (nothing written), a ``kill -9``'d holder's lock is taken over at once.

The child is the real ``ha-manager`` command in its own interpreter; the only change is
a hook that announces "holding" and stops the process (SIGSTOP) right before its commit,
which is where a scheduler, a swap storm or a debugger would pause it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from hafence.cli.ha_manager import cli as ha_cli
from hafence.store import EmbeddedStore, LockTimeout, open_store

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from hafence.store.etcd import EtcdStore

    commit = EtcdStore._commit

    def hook(self, key, me, section):
        print("holding", flush=True)
        if sys.argv[1] == "pause":
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            time.sleep(3600)  # until kill -9
        return commit(self, key, me, section)

    EtcdStore._commit = hook
    from hafence.cli.ha_manager import cli
    cli(["--store", sys.argv[2], "add", "vm:100"])
    """
)


def _child(mode: str, url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding", proc.stderr.read() if proc.stderr else ""
    return proc


def _state(pid: int) -> str:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2]


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.peer("etcd")
def test_writer_paused_past_the_lock_life_loses(etcd_url: str) -> None:
    url = f"{etcd_url.replace('http://', 'etcd://')}/t{uuid.uuid4().hex[:8]}?lock_ttl=2"
    store = open_store(url)
    proc = _child("pause", url)
    try:
        _wait(lambda: _state(proc.pid) == "T", 30, "the writer to stop")
        # its lock lease runs out while it is stopped; then another add is acknowledged
        _wait(lambda: store._get(".lock") is None, 60, "the paused writer's lock to expire")
        r = CliRunner().invoke(ha_cli, ["--store", url, "add", "vm:101"])
        assert r.exit_code == 0, r.output
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
        store.close()
    assert proc.returncode == 1, (out, err)
    assert "expired while this process held it" in err and "nothing was written" in err, err
    assert "Traceback" not in err
    assert sorted(store.read_resources()) == ["vm:101"]  # the acknowledged add survived


@pytest.mark.peer("etcd")
def test_killed_holder_lock_is_taken_over_at_once(etcd_url: str) -> None:
    url = f"{etcd_url.replace('http://', 'etcd://')}/t{uuid.uuid4().hex[:8]}?lock_ttl=300"
    proc = _child("hold", url)
    proc.kill()  # kill -9 while it holds the lock (a 300 s lease)
    proc.wait()
    started = time.monotonic()
    # ha-manager waits 10 s for the lock at most: only a takeover gets it within that
    r = CliRunner().invoke(ha_cli, ["--store", url, "add", "vm:101"])
    assert r.exit_code == 0, r.output
    assert time.monotonic() - started < 300
    store = open_store(url)
    try:
        assert sorted(store.read_resources()) == ["vm:101"]  # the killed writer wrote nothing
    finally:
        store.close()


def test_embedded_paused_holder_blocks_instead_of_being_overwritten(tmp_path: Path) -> None:
    """flock has no lifetime: a paused holder keeps it (others wait and time out, they
    never write past it), and a killed holder's flock is gone at once."""
    d = tmp_path / "ha"
    code = textwrap.dedent(
        f"""
        import os, signal
        from hafence.store import EmbeddedStore
        s = EmbeddedStore({str(d)!r})
        with s.locked():
            print("holding", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        _wait(lambda: _state(proc.pid) == "T", 30, "the holder to stop")
        s = EmbeddedStore(d)
        with pytest.raises(LockTimeout), s.locked(timeout=0.5):
            pass
        proc.kill()
        proc.wait()
        with s.locked(timeout=30):
            s.write_text("crm_commands", "stop vm:100 0\n")
        assert s.read_crm_commands() == ["stop vm:100 0"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
