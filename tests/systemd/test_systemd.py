"""systemd integration over the real protocols, with sockets the tests bind: sd_notify
(READY=1 only once the daemon has its store and its watchdog-mux) and journal fields."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence import systemd
from hafence.ha.realenv import RealEnv
from hafence.store import EmbeddedStore
from hafence.watchdog.muxproc import MuxProcess

# lease 10 > watchdog 4 + the mux's hardware timeout 5 + store latency 0.3 (the timing rule)
TIMINGS = ["--interval", "0.3", "--lease-ttl", "10", "--watchdog-timeout", "4",
           "--watchdog-hw-timeout", "5", "--fence-delay", "2", "--node-timeout", "2"]  # fmt: skip


@pytest.fixture
def dgram(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.2)
    try:
        yield path, s
    finally:
        s.close()


def receive(s: socket.socket, until: str, timeout: float = 30) -> list[str]:
    """Datagrams until one contains ``until`` (a bound against hangs, not a speed check)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(s.recv(65536).decode())
        except TimeoutError:
            continue
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until!r} within {timeout}s; got {got}")


def test_notify_to_path_and_abstract_socket(dgram: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    path, s = dgram
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert systemd.notify("READY=1")
    assert s.recv(100) == b"READY=1"
    name = f"hafence-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as a:
        a.bind("\0" + name)
        assert systemd.notify("STATUS=x", sock_path="@" + name)
        assert a.recv(100) == b"STATUS=x"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd.notify("READY=1") is False  # not started by systemd: nothing to do


def parse_native(data: bytes) -> dict[str, str]:
    """journald's native protocol: KEY=value lines, or KEY\\n<u64 length><bytes>\\n."""
    out: dict[str, str] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            k, _, v = line.partition(b"=")
            out[k.decode()] = v.decode()
            data = rest
        else:
            (n,) = struct.unpack("<Q", rest[:8])
            out[line.decode()] = rest[8 : 8 + n].decode()
            data = rest[8 + n + 1 :]
    return out


def test_journal_fields_name_node_role_and_service(dgram: tuple, tmp_path: Path) -> None:
    path, s = dgram
    handler = systemd.JournalHandler("hafence-crm", path=path)
    logger = logging.getLogger("hafence.ha")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        env = RealEnv("node2", EmbeddedStore(tmp_path / "ha"), role="crm")
        env.log("info", "recover service 'vm:100' from fenced node 'node1' to node 'node2'")
        env.log("email", "FENCE: Try to fence node 'node1'")
        logging.getLogger("hafence.ha").error("two\nlines")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
        handler.close()
    first, second, third = (parse_native(s.recv(65536)) for _ in range(3))
    assert first["MESSAGE"].endswith("recover service 'vm:100' from fenced node 'node1' to "
                                     "node 'node2'")  # fmt: skip
    assert (first["HAFENCE_NODE"], first["HAFENCE_ROLE"]) == ("node2", "crm")
    assert first["HAFENCE_SERVICE"] == "vm:100" and first["PRIORITY"] == "6"
    assert first["SYSLOG_IDENTIFIER"] == "hafence-crm" and first["HAFENCE_LEVEL"] == "info"
    assert second["PRIORITY"] == "2" and second["HAFENCE_LEVEL"] == "email"
    assert "HAFENCE_SERVICE" not in second
    assert third["MESSAGE"] == "two\nlines" and third["PRIORITY"] == "3"


def test_ready_only_once_store_and_watchdog_are_there(dgram: tuple, tmp_path: Path) -> None:
    path, s = dgram
    mux = MuxProcess(tmp_path / "wd", timeout=5)  # not started yet: no watchdog
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000",
           "WATCHDOG_PID": ""}  # fmt: skip
    argv = [sys.executable, "-c", "from hafence.daemons import lrm_main; lrm_main()",
            "--node", "node1", "--store", str(tmp_path / "ha"), "--watchdog-socket", mux.socket,
            "--state-dir", str(tmp_path / "state"), *TIMINGS]  # fmt: skip
    log = tmp_path / "lrm.log"
    with open(log, "wb") as logf:
        lrm = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=logf, env=env)
    try:
        early = receive(s, "WATCHDOG=1")  # the daemon runs its rounds...
        early += receive(s, "WATCHDOG=1")
        assert not any("READY=1" in m for m in early)  # ...but is not ready without a mux
        mux.start()
        got = receive(s, "READY=1")
        got += receive(s, "STATUS=")
        assert any(m.startswith("STATUS=node1/lrm: ") for m in got), got
        lrm.send_signal(signal.SIGTERM)
        receive(s, "STOPPING=1")
        assert lrm.wait(timeout=60) == 0
    finally:
        if lrm.poll() is None:
            lrm.kill()
            lrm.wait()
        mux.stop(grace=2)


def test_units_verify_and_use_type_notify(tmp_path: Path) -> None:
    import shutil

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    units = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
    bindir = str(Path(sys.executable).parent) + "/"
    for unit in units.glob("*.service"):
        text = unit.read_text().replace("/usr/local/bin/", bindir)
        (tmp_path / unit.name).write_text(text)
    names = sorted(str(p) for p in tmp_path.glob("*.service"))
    r = subprocess.run(["systemd-analyze", "verify", *names], capture_output=True, text=True,
                       timeout=60, check=False, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    for name in ("hafence-crm.service", "hafence-lrm.service"):
        text = (units / name).read_text()
        assert "Type=notify" in text and "NotifyAccess=main" in text
