"""The mux's decisions, in-process: a real Unix socket and real WatchdogClients, the
device on the fake kernel at the syscall seam, the event loop in a thread.

Time is never waited for here: client deadlines are checked with an explicit ``now``
and the hardware is fed by explicit calls (the feed loop interval is an hour).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hafence.watchdog.client import WatchdogClient, mux_status
from hafence.watchdog.device import WatchdogDevice
from hafence.watchdog.errors import (
    ClientExpiredError,
    MuxProtocolError,
    MuxUnavailableError,
    WatchdogError,
)
from hafence.watchdog.fake import FakeKernel
from hafence.watchdog.mux import Mux, bind_socket

from .conftest import wait_for


class MuxThread:
    """A Mux serving on a real socket from an event loop in a background thread."""

    def __init__(self, kernel: FakeKernel, sock_path: str) -> None:
        kernel.modprobe("softdog", {"soft_margin": "30", "soft_noboot": "1"})
        self.kernel = kernel
        self.device = WatchdogDevice("/dev/watchdog0", kernel)
        self.socket = sock_path
        self.sock = bind_socket(sock_path)
        self.mux = Mux(self.device, driver="softdog", socket_path=sock_path, feed_interval=3600)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete,
            args=(self.mux.serve(self.sock, signals=False),),
            daemon=True,
        )
        self.thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the mux's loop (its state belongs to that thread)."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def clients(self) -> dict[str, Any]:
        return self.call(lambda: {c.name: c for c in self.mux.clients.values()})

    def tripped(self) -> str | None:
        return self.call(lambda: self.mux.tripped)

    def keepalives(self) -> int:
        return self.kernel.device()["keepalives"]

    def close(self) -> None:
        if self.thread.is_alive():
            self.call(self.mux._stop.set)
            self.thread.join(30)
        # connection handlers still open when serve() returned: let them finish
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()

        async def drain() -> None:
            await asyncio.gather(*pending, return_exceptions=True)

        self.loop.run_until_complete(drain())
        self.loop.close()
        self.sock.close()
        self.device.close(magic=True)


@pytest.fixture
def mt(kernel: FakeKernel, tmp_path: Path) -> Iterator[MuxThread]:
    m = MuxThread(kernel, str(tmp_path / "mux.sock"))
    try:
        yield m
    finally:
        m.close()


def raw(path: str) -> Callable[[str], str]:
    """A bare protocol connection: send a line, get the reply line."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    f = s.makefile("rwb")

    def ask(line: str) -> str:
        f.write(line.encode() + b"\n")
        f.flush()
        return f.readline().decode().rstrip("\n")

    ask.sock = s  # type: ignore[attr-defined]
    return ask


def test_socket_is_mode_0600(mt: MuxThread) -> None:
    assert stat.S_IMODE(os.stat(mt.socket).st_mode) == 0o600


def test_a_live_socket_is_refused_and_a_stale_one_replaced(mt: MuxThread, tmp_path: Path) -> None:
    with pytest.raises(WatchdogError, match="another watchdog-mux is running"):
        bind_socket(mt.socket)
    stale = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(stale)  # bound, never listening: what a killed mux leaves behind
    dead.close()
    with pytest.raises(MuxUnavailableError, match="refuses connections"):
        WatchdogClient.connect(stale, 5)
    bind_socket(stale).close()
    (tmp_path / "file").write_text("")
    with pytest.raises(WatchdogError, match="is not a socket"):
        bind_socket(str(tmp_path / "file"))


def test_per_client_timeouts_and_feeding_only_while_all_alive(
    mt: MuxThread, caplog: pytest.LogCaptureFixture
) -> None:
    lrm = WatchdogClient.connect(mt.socket, 5, name="lrm")
    crm = WatchdogClient.connect(mt.socket, 60, name="crm")
    c = mt.clients()
    assert (c["lrm"].timeout, c["crm"].timeout) == (5.0, 60.0)
    assert c["lrm"].pid == os.getpid()  # SO_PEERCRED

    before = c["lrm"].deadline
    assert lrm.feed() == 5.0
    lrm_deadline = mt.clients()["lrm"].deadline
    assert lrm_deadline > before  # a feed moves only this client's deadline

    mt.call(mt.mux.check_clients, lrm_deadline - 0.01)
    assert mt.tripped() is None
    n = mt.keepalives()
    mt.call(mt.mux.feed_hardware)
    assert mt.keepalives() == n + 1  # every client alive: the hardware is fed

    with caplog.at_level(logging.CRITICAL, "hafence.watchdog.mux"):
        mt.call(mt.mux.check_clients, lrm_deadline + 0.01)  # lrm late, crm (60 s) is not
    assert mt.tripped().startswith(f"client 'lrm' (pid {os.getpid()}) expired")
    assert "(timeout 5s)" in mt.tripped() and "crm" not in mt.tripped()
    assert "stop feeding watchdog /dev/watchdog0: node will reset within 30s" in caplog.text
    mt.call(mt.mux.feed_hardware)
    assert mt.keepalives() == n + 1  # tripped: never fed again
    with pytest.raises(ClientExpiredError, match="tripped"):
        crm.feed()  # every client learns the node is going down
    with pytest.raises(ClientExpiredError):
        WatchdogClient.connect(mt.socket, 5, name="late")  # and no new client is accepted
    for cl in (lrm, crm):
        cl.close(magic=False)


def test_a_feed_counts_from_when_the_client_vouches_for_itself(mt: MuxThread) -> None:
    """FEED <since>: a feed that was delayed (stalled client, busy mux) extends no further
    than since + timeout; a since from the future counts as now."""
    lrm = WatchdogClient.connect(mt.socket, 10, name="lrm")
    now = time.monotonic()
    mt.call(setattr, mt.clients()["lrm"], "deadline", now - 5 + 10)  # last fed 5 s ago
    renewed = now - 4  # e.g. when the lock renewal was sent, 4 s ago
    lrm.feed(since=renewed)
    assert mt.clients()["lrm"].deadline == pytest.approx(renewed + 10, abs=1e-5)
    before = time.monotonic()
    lrm.feed(since=before + 3600)  # never beyond now + timeout
    after = time.monotonic()
    assert before + 10 <= mt.clients()["lrm"].deadline <= after + 10
    deadline = mt.clients()["lrm"].deadline
    lrm.feed(since=renewed)  # an older proof never moves the deadline back
    assert mt.clients()["lrm"].deadline == deadline
    lrm.feed()  # default: the moment the client sent it
    assert deadline <= mt.clients()["lrm"].deadline <= time.monotonic() + 10
    lrm.close()


def test_a_late_feed_trips_even_if_it_says_it_is_not(mt: MuxThread) -> None:
    lrm = WatchdogClient.connect(mt.socket, 1, name="lrm")
    deadline = mt.clients()["lrm"].deadline
    wait_for(lambda: time.monotonic() > deadline, "the deadline to pass")
    with pytest.raises(ClientExpiredError, match=r"'lrm'.*expired"):
        lrm.feed(since=deadline - 0.5)  # vouching for a time before its deadline is too late
    lrm.close(magic=False)


def test_the_client_learns_the_hardware_timeout(mt: MuxThread) -> None:
    with WatchdogClient.connect(mt.socket, 10, name="lrm", max_hw_timeout=30) as lrm:
        assert lrm.hw_timeout == 30
    with pytest.raises(WatchdogError, match=r"runs a 30s hardware timeout, more than the 29s"):
        WatchdogClient.connect(mt.socket, 10, name="crm", max_hw_timeout=29)
    wait_for(lambda: not mt.clients(), "the refused client to leave")
    assert mt.tripped() is None  # it left with magic close: no reset for a refusal


def test_overdue_clients_are_reported_before_the_trip(mt: MuxThread) -> None:
    lrm = WatchdogClient.connect(mt.socket, 1, name="lrm")
    crm = WatchdogClient.connect(mt.socket, 60, name="crm")
    st = mux_status(mt.socket)
    assert st["healthy"] is True and st["overdue"] == []
    deadline = mt.clients()["lrm"].deadline
    wait_for(lambda: time.monotonic() > deadline, "the deadline to pass")
    st = mux_status(mt.socket)  # the feed loop (once an hour here) has not looked yet
    assert st["tripped"] is None and st["overdue"] == ["lrm"] and st["healthy"] is False
    assert [c["overdue"] for c in st["clients"]] == [True, False]
    mt.call(mt.mux.feed_hardware)  # the next keepalive: checks first, then trips
    assert mux_status(mt.socket)["tripped"].startswith("client 'lrm'")
    for c in (lrm, crm):
        c.close(magic=False)


def test_a_failed_hardware_keepalive_trips(mt: MuxThread, caplog: pytest.LogCaptureFixture) -> None:
    lrm = WatchdogClient.connect(mt.socket, 60, name="lrm")
    n = mt.keepalives()
    mt.call(mt.mux.feed_hardware)
    assert mt.keepalives() == n + 1 and mt.tripped() is None
    mt.kernel.fail_keepalive(code=errno.EIO)
    with caplog.at_level(logging.CRITICAL, "hafence.watchdog.mux"):
        mt.call(mt.mux.feed_hardware)
    reason = mt.tripped()
    assert reason == "hardware keepalive failed: /dev/watchdog0: KEEPALIVE: Input/output error"
    assert f"{reason} - stop feeding watchdog /dev/watchdog0: node will reset within 30s" in (
        caplog.text
    )
    with pytest.raises(ClientExpiredError, match="hardware keepalive failed"):
        lrm.feed()
    mt.kernel.fail_keepalive(code=0)  # the hardware answers again: tripped is for good
    mt.call(mt.mux.feed_hardware)
    assert mt.keepalives() == n + 1
    assert len(mt.kernel.events("keepalive_failed")) == 1  # never tried again
    lrm.close(magic=False)


def test_disconnect_without_magic_close_stops_feeding(mt: MuxThread) -> None:
    WatchdogClient.connect(mt.socket, 60, name="crm").close(magic=False)
    reason = wait_for(mt.tripped, "the mux to trip")
    assert reason == f"client 'crm' (pid {os.getpid()}) disconnected without magic close"
    n = mt.keepalives()
    mt.call(mt.mux.feed_hardware)
    assert mt.keepalives() == n


def test_magic_close_is_clean(mt: MuxThread) -> None:
    with WatchdogClient.connect(mt.socket, 60, name="lrm") as lrm:
        lrm.feed()
    assert not lrm.connected
    wait_for(lambda: not mt.clients(), "the client to leave")
    assert mt.tripped() is None
    n = mt.keepalives()
    mt.call(mt.mux.feed_hardware)
    assert mt.keepalives() == n + 1


def test_an_exception_in_the_with_block_closes_without_magic(mt: MuxThread) -> None:
    with pytest.raises(RuntimeError), WatchdogClient.connect(mt.socket, 60, name="lrm"):
        raise RuntimeError("daemon crashed")
    assert "disconnected without magic close" in wait_for(mt.tripped, "the trip")


def test_refuses_to_stop_while_clients_are_active(
    mt: MuxThread, caplog: pytest.LogCaptureFixture
) -> None:
    lrm = WatchdogClient.connect(mt.socket, 60, name="lrm")
    with caplog.at_level(logging.INFO, "hafence.watchdog.mux"):
        mt.call(mt.mux.request_stop, "SIGTERM")
        assert mt.thread.is_alive() and not mt.call(mt.mux._stop.is_set)
        assert f"got SIGTERM but refusing to stop: active clients: 'lrm' (pid {os.getpid()})" in (
            caplog.text
        )
        lrm.close()
        wait_for(lambda: not mt.clients(), "the client to leave")
        mt.call(mt.mux.request_stop, "SIGTERM")
        mt.thread.join(30)
    assert not mt.thread.is_alive()
    assert "got SIGTERM, no active clients - disarming watchdog and exiting" in caplog.text


def test_refuses_to_stop_after_a_trip(mt: MuxThread, caplog: pytest.LogCaptureFixture) -> None:
    WatchdogClient.connect(mt.socket, 60, name="lrm").close(magic=False)
    wait_for(mt.tripped, "the trip")
    with caplog.at_level(logging.ERROR, "hafence.watchdog.mux"):
        mt.call(mt.mux.request_stop, "SIGINT")
    assert "got SIGINT but refusing to stop: tripped (client 'lrm'" in caplog.text
    assert not mt.call(mt.mux._stop.is_set)


def test_status(mt: MuxThread) -> None:
    lrm = WatchdogClient.connect(mt.socket, 7.5, name="lrm")
    st = mux_status(mt.socket)
    assert st["pid"] == os.getpid() and st["socket"] == mt.socket
    dev = st["device"]
    assert (dev["path"], dev["driver"], dev["identity"], dev["timeout"]) == (
        "/dev/watchdog0",
        "softdog",
        "Software Watchdog",
        30,
    )
    assert dev["flags"] == ["settimeout", "magicclose", "keepaliveping"]
    assert dev["timeleft"] is None  # softdog cannot tell
    assert st["feeding"] is True and st["tripped"] is None and st["hw_feeds"] >= 1
    [c] = st["clients"]
    assert (c["name"], c["timeout"], c["pid"], c["uid"]) == ("lrm", 7.5, os.getpid(), os.getuid())
    assert 0 < c["remaining"] <= 7.5 and c["overdue"] is False
    assert st["overdue"] == [] and st["healthy"] is True
    lrm.close()
    assert mux_status(mt.socket)["clients"] == []


def test_protocol_errors_change_nothing(mt: MuxThread) -> None:
    ask = raw(mt.socket)
    assert ask("FEED") == "ERR state not a client (HELLO first)"
    assert ask("V") == "ERR state not a client (HELLO first)"
    assert ask("HELLO lrm") == "ERR protocol usage: HELLO <name> <timeout-seconds>"
    assert ask("HELLO lrm ten") == "ERR protocol usage: HELLO <name> <timeout-seconds>"
    assert ask("HELLO lrm 0.5") == "ERR protocol timeout must be 1..3600 seconds"
    assert ask("REBOOT") == "ERR protocol unknown request 'REBOOT'"
    assert ask("") == "ERR protocol unknown request ''"
    assert mt.clients() == {}
    assert ask("HELLO lrm 10") == "OK 10 30"  # its timeout, the hardware's (softdog 30 s)
    assert ask("HELLO lrm 10") == "ERR state already registered as 'lrm'"
    deadline = mt.clients()["lrm"].deadline
    for bad in ("FEED soon", "FEED nan", "FEED inf", "FEED 1 2"):
        assert ask(bad) == "ERR protocol usage: FEED [<monotonic seconds>]"
    assert mt.clients()["lrm"].deadline == deadline  # none of them fed
    assert ask("FEED") == "OK 10"
    assert ask("V") == "OK closed"
    ask.sock.close()  # type: ignore[attr-defined]
    other = raw(mt.socket)  # a connection that never registers may just leave
    assert other("STATUS").startswith("OK {")
    other.sock.close()  # type: ignore[attr-defined]
    wait_for(lambda: not mt.clients(), "the client to leave")
    assert mt.tripped() is None


def test_an_overlong_line_from_a_client_trips(mt: MuxThread) -> None:
    ask = raw(mt.socket)
    assert ask("HELLO lrm 10") == "OK 10 30"
    assert ask("FEED " + "x" * 5000) == "ERR protocol line too long"
    ask.sock.close()  # type: ignore[attr-defined]
    assert "disconnected without magic close" in wait_for(mt.tripped, "the trip")


def test_client_errors_are_clear(tmp_path: Path, mt: MuxThread) -> None:
    with pytest.raises(MuxUnavailableError, match="not running: no socket at"):
        WatchdogClient.connect(tmp_path / "nothing.sock", 5)
    with pytest.raises(ValueError, match="one printable word"):
        WatchdogClient.connect(mt.socket, 5, name="two words")
    with pytest.raises(MuxProtocolError, match="timeout must be"):
        WatchdogClient.connect(mt.socket, 4000, name="lrm")
    c = WatchdogClient.connect(mt.socket, 5, name="lrm")
    c.close()
    with pytest.raises(MuxProtocolError, match="'lrm' is closed"):
        c.feed()
    assert mt.tripped() is None


def test_the_active_marker_follows_the_clients(mt: MuxThread) -> None:
    marker = Path(mt.mux.marker)
    assert marker.parent == Path(mt.socket).parent and not marker.exists()
    lrm = WatchdogClient.connect(mt.socket, 60, name="lrm")
    crm = WatchdogClient.connect(mt.socket, 60, name="crm")
    assert marker.exists()
    lrm.close()
    wait_for(lambda: len(mt.clients()) == 1, "lrm to leave")
    assert marker.exists()  # crm still depends on the watchdog
    crm.close()
    wait_for(lambda: not mt.clients(), "crm to leave")
    assert not marker.exists()
    WatchdogClient.connect(mt.socket, 60, name="lrm").close(magic=False)
    wait_for(mt.tripped, "the trip")
    assert marker.exists()  # a trip is for good
