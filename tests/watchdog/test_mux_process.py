"""The real ``hafence-watchdog-mux`` process on the fake device (syscall seam), with real
WatchdogClient connections from this and other processes.

The fake kernel's state file is shared with the mux process: the test reads what the
"kernel" saw (keepalives, magic closes, the expiry). Every process is stopped by the
``start_mux`` fixture, or killed when it refuses.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hafence.watchdog.client import WatchdogClient, mux_status
from hafence.watchdog.errors import ClientExpiredError, WatchdogError
from hafence.watchdog.fake import FakeKernel
from hafence.watchdog.muxproc import MuxProcess

from .conftest import StartMux, wait_for


def tripped(mux: MuxProcess) -> str | None:
    return mux_status(mux.socket)["tripped"]


def test_a_silent_client_stops_the_feeding_and_the_device_expires(start_mux: StartMux) -> None:
    mux = start_mux(timeout=2)  # softdog, soft_noboot=0: expiry resets the (fake) node
    crm = WatchdogClient.connect(mux.socket, 60, name="crm")
    lrm = WatchdogClient.connect(mux.socket, 1, name="lrm")
    # lrm never feeds; crm (60 s) is fine, but one dead client is enough
    reason = wait_for(lambda: tripped(mux), "the mux to trip")
    assert reason.startswith("client 'lrm' (pid") and "expired" in reason
    fed_at_trip = mux.kernel.device()["keepalives"]
    [reset] = wait_for(lambda: mux.kernel.events("reset"), "the fake kernel to see the expiry")
    dev = mux.kernel.device()
    assert dev["keepalives"] == fed_at_trip  # no feed after the trip
    assert abs(reset["expired_at"] - (dev["last_keepalive"] + 2)) < 0.5  # expired off the last
    assert "watchdog: watchdog0: watchdog expired - node reset" in mux.kernel.kmsg()
    assert "expired: no feed for" in mux.log() and "stop feeding watchdog" in mux.log()
    with pytest.raises(ClientExpiredError):
        crm.feed()
    for c in (lrm, crm):
        c.close(magic=False)
    mux.kill()  # a tripped mux refuses SIGTERM: the node reset would end it


def test_a_crashed_client_process_trips_the_mux(start_mux: StartMux) -> None:
    mux = start_mux(timeout=2, noboot=True)  # drill mode: the expiry only logs
    code = (
        "import os, sys; from hafence.watchdog.client import WatchdogClient;"
        "c = WatchdogClient.connect(sys.argv[1], 60, name='lrm'); c.feed(); os._exit(3)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, mux.socket])
    assert child.wait(60) == 3
    reason = wait_for(lambda: tripped(mux), "the mux to trip")
    assert reason == f"client 'lrm' (pid {child.pid}) disconnected without magic close"
    wait_for(lambda: mux.kernel.events("expired_noboot"), "softdog to fire")
    assert "softdog: Triggered - Reboot ignored" in mux.kernel.kmsg()
    assert not mux.kernel.events("reset")
    mux.kill()


def test_a_failed_hardware_keepalive_trips_the_mux(start_mux: StartMux) -> None:
    """The device stops taking keepalives (EIO at the syscall seam): the mux stops for good,
    tells its clients, says so loudly, and lets the hardware reset the node."""
    # softdog, soft_noboot=0: expiry resets the (fake) node; 5 s, so that a busy machine
    # does not let it expire before the fault (a mux stalled that long fails a keepalive too)
    mux = start_mux(timeout=5)
    lrm = WatchdogClient.connect(mux.socket, 60, name="lrm")
    lrm.feed()
    mux.kernel.fail_keepalive(code=errno.EIO)
    reason = wait_for(lambda: tripped(mux), "the mux to trip")
    assert reason == "hardware keepalive failed: /dev/watchdog0: KEEPALIVE: Input/output error"
    loud = f"CRITICAL {reason} - stop feeding watchdog /dev/watchdog0: node will reset within 5s"
    assert loud in mux.log()
    with pytest.raises(ClientExpiredError, match="hardware keepalive failed"):
        lrm.feed()
    mux.kernel.fail_keepalive(code=0)  # even if the hardware answered again: no more feeds
    [reset] = wait_for(lambda: mux.kernel.events("reset"), "the hardware to reset the node")
    assert len(mux.kernel.events("keepalive_failed")) == 1  # it tried once, then stopped
    assert reset["expired_at"] == pytest.approx(mux.kernel.device()["last_keepalive"] + 5, abs=0.5)
    lrm.close(magic=False)
    mux.kill()


def test_magic_close_keeps_feeding_and_sigterm_then_disarms(start_mux: StartMux) -> None:
    mux = start_mux(timeout=2)
    with WatchdogClient.connect(mux.socket, 30, name="lrm") as lrm:
        lrm.feed()
    assert mux_status(mux.socket)["clients"] == []
    n = mux.kernel.device()["keepalives"]
    wait_for(lambda: mux.kernel.device()["keepalives"] > n + 3, "feeding after a magic close")
    assert tripped(mux) is None
    mux.signal(signal.SIGTERM)
    assert mux.wait(30) == 0
    assert mux.kernel.events("magic_close") and mux.kernel.device()["active"] is False
    assert not Path(mux.socket).exists()
    assert "got SIGTERM, no active clients - disarming watchdog and exiting" in mux.log()
    assert "watchdog /dev/watchdog0 disarmed (magic close)" in mux.log()
    assert not mux.kernel.events("reset")


def test_sigterm_is_refused_while_a_client_is_active(start_mux: StartMux) -> None:
    mux = start_mux(timeout=5)
    crm = WatchdogClient.connect(mux.socket, 30, name="crm")
    mux.signal(signal.SIGTERM)
    wait_for(
        lambda: "got SIGTERM but refusing to stop: active clients: 'crm'" in mux.log(), "refusal"
    )
    assert mux.proc.poll() is None
    crm.feed()  # still serving
    crm.close()
    mux.signal(signal.SIGTERM)
    assert mux.wait(30) == 0
    assert mux.kernel.events("magic_close")


def test_sigterm_is_refused_after_a_trip(start_mux: StartMux) -> None:
    mux = start_mux(timeout=30)
    WatchdogClient.connect(mux.socket, 30, name="lrm").close(magic=False)
    wait_for(lambda: tripped(mux), "the trip")
    mux.signal(signal.SIGTERM)
    wait_for(lambda: "got SIGTERM but refusing to stop: tripped" in mux.log(), "refusal")
    assert mux.proc.poll() is None
    mux.kill()  # what a node reset would do; the fixture would too
    assert not mux.kernel.events("magic_close")


def test_a_killed_mux_leaves_the_watchdog_armed(start_mux: StartMux) -> None:
    mux = start_mux(timeout=1)
    mux.kill()
    [ev] = wait_for(lambda: mux.kernel.events("close_armed"), "the kernel to notice")
    assert "died" in ev["why"]
    wait_for(lambda: mux.kernel.events("reset"), "the reset")


def test_a_mux_that_died_with_clients_is_not_restarted(start_mux: StartMux) -> None:
    """A new mux would re-arm and feed the device: the dead clients' reset must happen."""
    mux = start_mux(timeout=30, noboot=True)
    client = WatchdogClient.connect(mux.socket, 30, name="lrm")
    mux.kill()
    client.close(magic=False)
    again = MuxProcess(mux.workdir, timeout=30, noboot=True, kernel=mux.kernel)
    opens = len(mux.kernel.events("open"))
    try:
        with pytest.raises(WatchdogError, match="exited with status 1") as exc:
            again.start()
    finally:
        again.kill()
    assert "watchdog active - a previous watchdog-mux exited with clients connected" in str(
        exc.value
    )
    assert len(mux.kernel.events("open")) == opens  # nothing re-armed


def test_a_mux_that_died_without_clients_may_restart(start_mux: StartMux) -> None:
    mux = start_mux(timeout=30, noboot=True)
    with WatchdogClient.connect(mux.socket, 30, name="lrm"):
        pass
    mux.kill()
    assert not (mux.workdir / "watchdog-mux.active").exists()
    again = MuxProcess(mux.workdir, timeout=30, noboot=True, kernel=mux.kernel)
    try:
        again.start()  # same socket, same marker place
        assert mux_status(again.socket)["pid"] == again.proc.pid
    finally:
        again.stop(grace=2)
        again.kill()


def test_socket_mode_and_status_from_another_process(start_mux: StartMux) -> None:
    mux = start_mux(timeout=10)
    assert os.stat(mux.socket).st_mode & 0o777 == 0o600
    with WatchdogClient.connect(mux.socket, 20, name="lrm"):
        st = mux_status(mux.socket)
    assert st["pid"] == mux.proc.pid and st["device"]["driver"] == "softdog"
    assert st["device"]["timeout"] == 10 and st["feeding"] is True
    assert [(c["name"], c["pid"]) for c in st["clients"]] == [("lrm", os.getpid())]


# -- refusing to start: nothing armed -----------------------------------------------------------
def _start_fails(tmp_path: Path, **kw: object) -> str:
    mux = MuxProcess(tmp_path / "mux", **kw)  # type: ignore[arg-type]
    try:
        with pytest.raises(WatchdogError, match="watchdog-mux exited with status") as exc:
            mux.start()
    finally:
        mux.kill()
    assert mux.kernel.events("open") == []
    return str(exc.value)


def test_unknown_module_nothing_armed(tmp_path: Path) -> None:
    err = _start_fails(tmp_path, module="nosuch_wdt")
    assert "status 1" in err and "Module nosuch_wdt not found (nothing armed)" in err


def test_missing_device_nothing_armed(tmp_path: Path) -> None:
    err = _start_fails(tmp_path, module="generic")
    assert "generic: no watchdog device" in err and "(nothing armed)" in err


def test_bad_config_names_file_line_key(tmp_path: Path) -> None:
    cfg = tmp_path / "hafence-watchdog"
    cfg.write_text("WATCHDOG_MODULE=softdog\nWATCHDOG_NOWAYOUT=maybe\n")
    err = _start_fails(tmp_path, extra_args=["--config", str(cfg)])
    assert "status 2" in err and f"{cfg}:2: WATCHDOG_NOWAYOUT: must be 0 or 1" in err


def test_noboot_on_itco_names_the_setting(tmp_path: Path) -> None:
    err = _start_fails(tmp_path, module="iTCO_wdt", noboot=True)
    assert "WATCHDOG_NOBOOT: the iTCO_wdt driver has no no-reboot mode" in err


def test_a_second_mux_on_the_same_socket(start_mux: StartMux, tmp_path: Path) -> None:
    first = start_mux(timeout=10)
    second = MuxProcess(tmp_path / "mux2")
    second.args[second.args.index("--socket") + 1] = first.socket
    try:
        with pytest.raises(WatchdogError, match="another watchdog-mux is running"):
            second.start()
    finally:
        second.kill()
    assert second.kernel.events("open") == []
    assert mux_status(first.socket)["pid"] == first.proc.pid


def test_a_drill_softdog_cannot_serve_self_fencing(tmp_path: Path) -> None:
    """softdog left loaded by a drill (soft_noboot=1) would never reset the node."""
    kernel = FakeKernel(tmp_path / "k.json")
    kernel.modprobe("softdog", {"soft_noboot": "1"})
    err = _start_fails(tmp_path, kernel=kernel)
    assert "softdog is already loaded with soft_noboot=1 (expiry only logs)" in err
    assert "self-fencing needs soft_noboot=0" in err
