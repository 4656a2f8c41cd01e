"""``dummy``: a service that is a real process, for tests, demos and drills.

``dummy:NAME`` started on a node runs ``sleep infinity`` under the name
``hafence-dummy dummy:NAME NODE`` (its argv[0], so ``ps`` shows whose it is) in its own
session, as a guest outlives the LRM that started it; a few hundred of them cost next to
nothing. Subclasses (``writer``) run another program: :meth:`DummyType.argv`,
:meth:`DummyType.executable` and :meth:`DummyType.ours` say what and how to recognise it.
Its pid is kept in
``STATE_DIR/dummy/NAME.pid``; STATE_DIR is per node (default
``$HAFENCE_STATE_DIR/resources/NODE``), so several simulated nodes on one machine keep
separate state. ``stop`` sends SIGTERM, then SIGKILL after the timeout; ``status``
checks that the recorded pid is alive and still is our process (pid reuse).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from hafence.ha.resources import RUNNING, STOPPED, ResourceError, ResourceType
from hafence.store.atomic import write_atomic

MARKER = "hafence-dummy"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$")


def default_state_dir(node: str) -> Path:
    base = Path(os.environ.get("HAFENCE_STATE_DIR", "/var/lib/hafence"))
    return base / "resources" / node


def _cmdline(pid: int) -> list[str] | None:
    """argv of a live, non-zombie process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1]


def _reap(pid: int) -> None:
    """Collect our own child's exit status (no-op for processes we did not start)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class DummyType(ResourceType):
    name = "dummy"
    description = "a real process per service (tests and demos)"
    marker = MARKER  # the word that says "ours" (with the SID) when pid files are read

    def _dir(self) -> Path:
        base = self.state_dir if self.state_dir is not None else default_state_dir(self.node)
        return base / self.name

    def pidfile(self, rid: str) -> Path:
        if not _NAME.match(rid) or "/" in rid:
            raise ResourceError(self.sid(rid), "config", f"invalid dummy name '{rid}'")
        return self._dir() / f"{rid}.pid"

    def pid(self, rid: str) -> int | None:
        """The pid of the running process of ``rid``, or None."""
        try:
            pid = int(self.pidfile(rid).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        _reap(pid)
        argv = _cmdline(pid)
        return pid if argv and self.ours(argv, rid) else None

    def ours(self, argv: list[str], rid: str) -> bool:
        """Whether a process' argv is this service's (pid reuse)."""
        return argv[0].split()[:2] == [self.marker, self.sid(rid)]

    def exists(self, rid: str) -> bool:
        self.pidfile(rid)  # validates the name
        return True  # a dummy can run anywhere

    def enabled_outside_ha(self, rid: str) -> bool | None:
        return False  # only the LRM ever starts one

    def status(self, rid: str) -> str:
        return RUNNING if self.pid(rid) is not None else STOPPED

    def argv(self, rid: str) -> list[str]:
        """The service process' argv; argv[0] labels it for ``ps`` and :meth:`ours`."""
        return [f"{self.marker} {self.sid(rid)} {self.node}", "infinity"]

    def executable(self) -> str | None:
        """The program to run (None: argv[0])."""
        return shutil.which("sleep") or "/bin/sleep"

    def start(self, rid: str) -> None:
        if self.pid(rid) is not None:
            return
        path = self.pidfile(rid)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.Popen(
                self.argv(rid),
                executable=self.executable(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # survives the LRM, as a guest would
                close_fds=True,
            )
        except OSError as exc:
            raise ResourceError(self.sid(rid), "failed", f"cannot start: {exc}") from None
        write_atomic(path, f"{proc.pid}\n")
        # Popen returns while the exec may still be settling (an empty cmdline for a
        # moment): a start is done once the process reads as ours
        deadline = time.monotonic() + self.command_timeout
        while self.pid(rid) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ResourceError(self.sid(rid), "failed", f"pid {proc.pid} did not come up")
            time.sleep(0.005)
        proc.returncode = 0  # stop Popen.__del__ from tracking it; we reap in pid()

    def stop(self, rid: str, timeout: float) -> None:
        pid = self.pid(rid)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.pid(rid) is not None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.pid(rid) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                for _ in range(250):  # SIGKILL cannot be ignored; bounded wait anyway
                    if self.pid(rid) is None:
                        break
                    time.sleep(0.02)
            if self.pid(rid) is not None:
                raise ResourceError(self.sid(rid), "timeout", f"pid {pid} survived SIGKILL")
        with contextlib.suppress(FileNotFoundError):
            self.pidfile(rid).unlink()
