"""``hafence watchdog info|test|status`` against the fake device (what CI has).

In-process through click's CliRunner (stdin scripted), plus the installed console
script for the no-terminal case. The fake kernel's state file is shared with the CLI
through ``--fake-device`` or ``$HAFENCE_WATCHDOG_FAKE``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hafence.cli.main import cli
from hafence.watchdog.client import WatchdogClient
from hafence.watchdog.errors import ClientExpiredError
from hafence.watchdog.fake import FakeKernel
from hafence.watchdog.kernel import FAKE_ENV
from hafence.watchdog.muxproc import MuxProcess

from .conftest import wait_for


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A config file of our own: the host's /etc/default/hafence-watchdog never matters."""
    p = tmp_path / "hafence-watchdog"
    p.write_text(f"WATCHDOG_MODULE=softdog\nMUX_SOCKET={tmp_path / 'no-mux.sock'}\n")
    return p


@pytest.fixture
def wd(kernel: FakeKernel, cfg: Path) -> Callable[..., Result]:
    """``hafence watchdog ARGS --config CFG --fake-device STATE``, in-process."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        argv = ["watchdog", *args, "--config", str(cfg)]
        if args[0] != "status":
            argv += ["--fake-device", str(kernel.path)]
        return runner.invoke(cli, argv, input=input, catch_exceptions=False)

    return invoke


def armed(kernel: FakeKernel) -> bool:
    return bool(kernel.events("open"))


# -- info ----------------------------------------------------------------------------------------
def test_info_shows_devices_without_arming(wd: Callable[..., Result], kernel: FakeKernel) -> None:
    kernel.modprobe("softdog", {"soft_margin": "15", "soft_noboot": "1"})
    kernel.modprobe("iTCO_wdt", {"heartbeat": "30", "nowayout": "1"})
    r = wd("info")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "configured driver: softdog (" in out and "its device: watchdog0" in out
    assert "/dev/watchdog0: Software Watchdog" in out and "/dev/watchdog1: iTCO_wdt" in out
    assert "module params  soft_noboot=1 soft_margin=15 soft_panic=0 nowayout=0" in out
    assert "timeleft       0s" in out and "nowayout       1" in out  # iTCO_wdt
    assert "boot status    normal boot" in out and "state          inactive" in out
    assert not armed(kernel)


def test_info_json(wd: Callable[..., Result], kernel: FakeKernel) -> None:
    kernel.add_device("Board WDT", timeout=20, bootstatus=0x20)
    r = wd("info", "--output", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["configured"]["driver"] == "softdog"
    assert data["configured"]["driver_device"] is None  # softdog not loaded yet
    [w] = data["watchdogs"]
    assert (w["device"], w["identity"], w["timeout"]) == ("/dev/watchdog0", "Board WDT", 20)
    assert w["boot_flags"] == ["cardreset"] and w["watchdog_caused_last_boot"] is True
    assert not armed(kernel)


def test_info_names_a_module_without_plugin(
    wd: Callable[..., Result], kernel: FakeKernel, cfg: Path
) -> None:
    cfg.write_text("WATCHDOG_MODULE=sp5100_tco\n")
    kernel.modprobe("sp5100_tco", {})
    r = wd("info")
    assert "configured driver: sp5100_tco (" in r.stdout
    assert ", a kernel module without a hafence plugin)" in r.stdout
    assert "its device: watchdog0" in r.stdout and "module         sp5100_tco" in r.stdout
    assert json.loads(wd("info", "-o", "json").stdout)["configured"]["driver_kind"] == (
        "kernel module"
    )


def test_info_without_any_watchdog(wd: Callable[..., Result]) -> None:
    r = wd("info")
    assert r.exit_code == 1
    assert "no watchdog device registered" in r.stderr and "loads 'softdog'" in r.stderr
    r = wd("info", "--device", "/dev/watchdog7")
    assert r.exit_code == 1 and "error: no watchdog watchdog7" in r.stderr


def test_info_bad_config(wd: Callable[..., Result], cfg: Path) -> None:
    cfg.write_text("WATCHDOG_TIMEOUT=soon\n")
    r = wd("info")
    assert r.exit_code == 2
    assert f"error: {cfg}:1: WATCHDOG_TIMEOUT: must be whole seconds" in r.stderr


def test_info_reads_the_fake_from_the_environment(
    kernel: FakeKernel, cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel.add_device("Env WDT")
    monkeypatch.setenv(FAKE_ENV, str(kernel.path))
    r = CliRunner().invoke(cli, ["watchdog", "info", "--config", str(cfg), "-o", "json"])
    assert json.loads(r.stdout)["watchdogs"][0]["identity"] == "Env WDT"


# -- test (the drill) ------------------------------------------------------------------------------
DRILL = ("test", "--timeout", "1", "--feeds", "1")
# a drill that must NOT expire: a timeout well above the feed period (0.75 s), so a
# loaded machine cannot make it fire before the answer is read
ABORTED = ("test", "--timeout", "3", "--feeds", "1")


def test_drill_confirmed_expires_without_reboot(
    wd: Callable[..., Result], kernel: FakeKernel
) -> None:
    r = wd(*DRILL, input="expire\n")
    assert r.exit_code == 0, r.output
    assert "armed /dev/watchdog0 (Software Watchdog, driver softdog), timeout 1s" in r.stdout
    assert "Type 'expire' to stop feeding (it will only log (soft_noboot))" in r.stderr
    assert "kernel: softdog: Triggered - Reboot ignored" in r.stdout
    assert "note: softdog is now loaded with soft_noboot=1 and stays loaded; rmmod" in r.stdout
    assert kernel.events("modprobe")[0]["params"]["soft_noboot"] == "1"
    assert kernel.events("expired_noboot") and not kernel.events("reset")
    assert kernel.events("magic_close") and kernel.device()["active"] is False


def test_drill_json(wd: Callable[..., Result], kernel: FakeKernel) -> None:
    r = wd(*DRILL, "--output", "json", input="expire\n")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["confirmed"] is True and res["expired"] is True and res["disarmed"] is True
    assert res["device"] == "/dev/watchdog0" and res["noboot"] is True and res["feeds"] >= 1
    assert res["kernel_message"] == "softdog: Triggered - Reboot ignored"
    assert res["loaded_module"] == "softdog"


@pytest.mark.parametrize("answer", ["no\n", "Expire\n", "\n", None])
def test_drill_wrong_word_aborts_and_disarms(
    wd: Callable[..., Result], kernel: FakeKernel, answer: str | None
) -> None:
    r = wd(*ABORTED, input=answer)
    assert r.exit_code == 1
    assert "drill aborted: not confirmed, watchdog disarmed" in r.stdout
    assert kernel.events("magic_close") and kernel.device()["active"] is False
    assert not kernel.events("expired_noboot") and not kernel.events("reset")


def test_drill_custom_word(wd: Callable[..., Result], kernel: FakeKernel) -> None:
    r = wd(*ABORTED, "--confirm-word", "node1", input="expire\n")
    assert r.exit_code == 1 and "Type 'node1'" in r.stderr
    assert not kernel.events("expired_noboot")


@pytest.mark.parametrize(
    "args",
    [("--driver", "iTCO_wdt"), ("--no-noboot",), ("--driver", "generic")],
)
def test_a_drill_that_would_reset_needs_allow_reset(
    wd: Callable[..., Result], kernel: FakeKernel, args: tuple[str, ...]
) -> None:
    kernel.add_device()
    r = wd(*DRILL, *args, input="expire\n")
    assert r.exit_code == 2
    assert "would RESET the node" in r.stderr and "Nothing was armed" in r.stderr
    assert not armed(kernel) and not kernel.events("modprobe")


def test_drill_refused_on_a_softdog_that_resets(
    wd: Callable[..., Result], kernel: FakeKernel
) -> None:
    kernel.modprobe("softdog", {"soft_noboot": "0"})
    r = wd(*DRILL, input="expire\n")
    assert r.exit_code == 1
    assert "soft_noboot=0 (resets); a drill needs soft_noboot=1" in r.stderr
    assert "(nothing armed)" in r.stderr and not armed(kernel)


def test_drill_refused_while_the_mux_runs(
    tmp_path: Path, kernel: FakeKernel, cfg: Path, start_mux: Callable[..., MuxProcess]
) -> None:
    mux = start_mux(timeout=10, noboot=True, kernel=kernel)
    cfg.write_text(f"MUX_SOCKET={mux.socket}\n")
    r = CliRunner().invoke(
        cli, ["watchdog", *DRILL, "--config", str(cfg), "--fake-device", str(kernel.path)]
    )
    assert r.exit_code == 2 and "watchdog-mux is running" in r.stderr
    assert len(kernel.events("open")) == 1  # the mux's own open only


def test_drill_from_a_script_without_a_terminal(kernel: FakeKernel, cfg: Path) -> None:
    """The console script with stdin at EOF: no word typed, so the drill aborts safely."""
    exe = Path(sys.executable).with_name("hafence")
    exe = str(exe) if exe.exists() else shutil.which("hafence")
    if not exe:
        pytest.skip("the hafence console script is not installed (pip install -e .)")
    env = {k: v for k, v in os.environ.items() if k != FAKE_ENV}
    p = subprocess.run(
        [exe, "watchdog", *ABORTED, "--config", str(cfg), "--fake-device", str(kernel.path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 1 and "drill aborted: not confirmed" in p.stdout
    assert kernel.events("magic_close") and not kernel.events("expired_noboot")


# -- status --------------------------------------------------------------------------------------
def test_status_of_a_running_mux(
    kernel: FakeKernel, cfg: Path, start_mux: Callable[..., MuxProcess]
) -> None:
    mux = start_mux(timeout=10, kernel=kernel)
    run = CliRunner()
    with WatchdogClient.connect(mux.socket, 30, name="lrm"):
        r = run.invoke(cli, ["watchdog", "status", "--socket", mux.socket, "--config", str(cfg)])
        assert r.exit_code == 0, r.output  # healthy
        assert "OK: feeding every 0.2s, every client on time" in r.stdout
        assert f"watchdog-mux pid {mux.proc.pid} on {mux.socket}" in r.stdout
        assert "device /dev/watchdog0 (Software Watchdog, driver softdog), timeout 10s" in r.stdout
        assert "feeding every 0.2s" in r.stdout
        assert f"client lrm pid {os.getpid()}: timeout 30s" in r.stdout
        cfg.write_text(f"MUX_SOCKET={mux.socket}\n")  # the socket from the config
        r = run.invoke(cli, ["watchdog", "status", "-o", "json", "--config", str(cfg)])
        st = json.loads(r.stdout)
        assert st["pid"] == mux.proc.pid and [c["name"] for c in st["clients"]] == ["lrm"]
    r = run.invoke(cli, ["watchdog", "status", "--config", str(cfg)])
    assert "no clients" in r.stdout


def test_status_of_a_tripped_mux(
    kernel: FakeKernel, cfg: Path, start_mux: Callable[..., MuxProcess]
) -> None:
    mux = start_mux(timeout=30, kernel=kernel)
    WatchdogClient.connect(mux.socket, 30, name="crm").close(magic=False)
    run = CliRunner()
    args = ["watchdog", "status", "--socket", mux.socket, "--config", str(cfg)]
    r = wait_for(lambda: "TRIPPED" in (res := run.invoke(cli, args)).stdout and res, "the trip")
    assert r.exit_code == 1
    assert "TRIPPED: client 'crm'" in r.stdout and "disconnected without magic close" in r.stdout
    assert "OK:" not in r.stdout
    r = run.invoke(cli, ["--output", "json", *args])
    assert r.exit_code == 1 and json.loads(r.stdout)["healthy"] is False
    mux.kill()


def test_status_of_an_overdue_client(
    kernel: FakeKernel, cfg: Path, start_mux: Callable[..., MuxProcess]
) -> None:
    """Past its deadline, before the mux's next keepalive (an hour away here) trips it."""
    mux = start_mux(timeout=3600, feed_interval=3000, kernel=kernel)
    run = CliRunner()
    args = ["watchdog", "status", "--socket", mux.socket, "--config", str(cfg)]
    lrm = WatchdogClient.connect(mux.socket, 1, name="lrm")
    crm = WatchdogClient.connect(mux.socket, 600, name="crm")
    r = wait_for(lambda: (res := run.invoke(cli, args)).exit_code == 1 and res, "lrm overdue")
    assert "OVERDUE: client lrm (pid " in r.stdout and "(timeout 1s): the mux stops feeding" in (
        r.stdout
    )
    assert "OVERDUE: client crm" not in r.stdout and "TRIPPED" not in r.stdout
    r = run.invoke(cli, ["--output", "json", *args])
    st = json.loads(r.stdout)
    assert r.exit_code == 1 and st["overdue"] == ["lrm"] and st["tripped"] is None
    with pytest.raises(ClientExpiredError):
        lrm.feed()  # too late to come back: its feed trips the mux
    r = run.invoke(cli, args)
    assert r.exit_code == 1 and "TRIPPED: client 'lrm'" in r.stdout
    for c in (lrm, crm):
        c.close(magic=False)
    mux.kill()


def test_status_without_a_mux(wd: Callable[..., Result], tmp_path: Path) -> None:
    r = wd("status")
    assert r.exit_code == 1
    assert f"error: watchdog-mux is not running: no socket at {tmp_path / 'no-mux.sock'}" in (
        r.stderr
    )
    r = wd("status", "--output", "json")
    err = json.loads(r.stdout)
    assert r.exit_code == 1 and (err["ok"], err["error_kind"]) == (False, "unreachable")


# -- the global --output json, for every subcommand ------------------------------------------
def test_global_output_json_for_every_subcommand(
    kernel: FakeKernel, cfg: Path, start_mux: Callable[..., MuxProcess]
) -> None:
    mux = start_mux(timeout=10, kernel=kernel)
    common = ["--config", str(cfg), "--fake-device", str(kernel.path)]
    run = CliRunner()
    r = run.invoke(cli, ["--output", "json", "watchdog", "info", *common])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["watchdogs"][0]["identity"] == "Software Watchdog"
    r = run.invoke(cli, ["--output", "json", "watchdog", "status", "--socket", mux.socket])
    assert r.exit_code == 0 and json.loads(r.stdout)["healthy"] is True
    # the drill is refused while the mux runs; the refusal is JSON too (exit 2)
    cfg.write_text(f"MUX_SOCKET={mux.socket}\n")
    r = run.invoke(cli, ["--output", "json", "watchdog", "test", *common])
    err = json.loads(r.stdout)
    assert (
        r.exit_code == 2
        and err["error_kind"] == "busy"
        and "watchdog-mux is running" in (err["message"])
    )
    cfg.write_text("WATCHDOG_TIMEOUT=soon\n")
    r = run.invoke(cli, ["--output", "json", "watchdog", "info", *common])
    err = json.loads(r.stdout)
    assert r.exit_code == 2 and err["error_kind"] == "config_error"
    assert err["errors"] == [{"file": str(cfg), "line": 1, "field": "WATCHDOG_TIMEOUT",
                              "message": "must be whole seconds, got 'soon'"}]  # fmt: skip


def test_the_fake_kernel_is_announced(wd: Callable[..., Result], kernel: FakeKernel) -> None:
    kernel.add_device("Board WDT")
    r = wd("info")
    assert r.exit_code == 0
    assert f"warning: FAKE watchdog kernel {kernel.path} (--fake-device" in r.stderr
    assert "this node cannot reset itself" in r.stderr


def test_drill_timeout_is_whole_seconds(wd: Callable[..., Result], kernel: FakeKernel) -> None:
    r = wd("test", "--timeout", "1.5", input="expire\n")
    assert r.exit_code == 2 and "--timeout 1.5: a watchdog timeout is whole seconds" in r.stderr
    assert not armed(kernel)


@pytest.mark.parametrize("output", ["text", "json"])
def test_a_path_the_system_refuses_is_an_error_not_an_internal_one(output: str) -> None:
    """A path the kernel refuses (too long) is named with the kernel's words, exit 1."""
    root = "/" + "w" * 5000
    r = CliRunner().invoke(cli, ["--output", output, "watchdog", "info", "--sysfs-root", root])
    assert r.exit_code == 1, r.output
    assert "File name too long" in r.output and "internal" not in r.output, r.output[-300:]
