"""Run a real ``hafence-watchdog-mux`` process on a fake device (tests, demos).

::

    with MuxProcess(tmp_path, timeout=10) as mux:        # started and answering
        with WatchdogClient.connect(mux.socket, timeout=5, name="lrm") as wd:
            wd.feed()
        mux.kernel.events("magic_close")                  # what the fake kernel saw
        mux.log()                                          # the mux's stderr so far

The mux is ``python -m hafence.watchdog.mux --fake-device <dir>/watchdog.json``; the
:class:`~hafence.watchdog.fake.FakeKernel` on the same file is ``mux.kernel``. On exit
the process is stopped with SIGTERM and, if it refuses (clients still connected or a
trip), with SIGKILL; it is always reaped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from hafence.watchdog.client import mux_status
from hafence.watchdog.errors import MuxProtocolError, MuxUnavailableError, WatchdogError
from hafence.watchdog.fake import FakeKernel


class MuxProcess:
    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        timeout: int = 10,
        module: str = "softdog",
        noboot: bool = False,
        feed_interval: float = 0.2,
        extra_args: list[str] | None = None,
        kernel: FakeKernel | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state = str(kernel.path if kernel else self.workdir / "watchdog.json")
        self.kernel = kernel or FakeKernel(self.state)
        self.socket = str(self.workdir / "mux.sock")
        self.log_path = self.workdir / "mux.log"
        self.args = [
            sys.executable,
            "-m",
            "hafence.watchdog.mux",
            "--fake-device",
            self.state,
            "--socket",
            self.socket,
            "--module",
            module,
            "--timeout",
            str(timeout),
            "--feed-interval",
            str(feed_interval),
            "--noboot" if noboot else "--no-noboot",
            *(extra_args or []),
        ]
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MuxProcess:
        env = {k: v for k, v in os.environ.items() if k != "HAFENCE_WATCHDOG_FAKE"}
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                self.args, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        end = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise WatchdogError(
                    f"watchdog-mux exited with status {self.proc.returncode}: {self.log()}"
                )
            try:
                mux_status(self.socket, io_timeout=2.0)
                return self
            except (MuxUnavailableError, MuxProtocolError):
                pass  # not up yet, or bound its socket and then gave up (see poll above)
            if time.monotonic() > end:
                self.kill()
                raise WatchdogError(f"watchdog-mux did not come up: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM; SIGKILL when the mux refuses within ``grace`` seconds."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> MuxProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
