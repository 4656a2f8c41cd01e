"""The timing rules (hafence.ha.timings) and the daemons' refusal to start against them.

Each rule has a case on either side of its boundary; the real ``hafence-lrm`` /
``hafence-crm`` processes refuse broken timings with status 2 before they touch the
store, and start with the presets. The mux's hardware timeout comes from the mux's
config, an option, or a running mux (fake device at the syscall seam).
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hafence.ha.timings import PRESETS, TimingError, Timings, preset
from hafence.store import EmbeddedStore
from hafence.watchdog.client import mux_status
from hafence.watchdog.muxproc import MuxProcess

from .conftest import EVENT_WAIT, StartMux


def rules(t: Timings) -> list[str]:
    """The names of the broken rules (each message starts with its rule)."""
    return [p.split(":")[0] for p in t.problems()]


# -- the rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_pass_with_the_mux_default_hardware_timeout(name: str) -> None:
    t = preset(name)
    assert t.hw_timeout == 10  # WATCHDOG_TIMEOUT's default
    t.check()


def test_the_fast_preset() -> None:
    t = preset("fast")
    assert (t.interval, t.node_timeout, t.fence_delay) == (1, 5, 0)  # 1 s heartbeat
    assert t.self_fence_time == 5 + 10 + 2 < t.lease_ttl
    assert preset("fast") is not PRESETS["fast"]  # a copy: callers may change it


def test_the_pve_preset_is_proxmox() -> None:
    t = preset("pve")
    assert (t.interval, t.lease_ttl, t.watchdog_timeout, t.fence_delay) == (10, 120, 60, 60)
    assert t.store_latency == t.interval  # no store deadline given: one interval


def test_issue_example_is_refused_naming_every_term() -> None:
    t = Timings(watchdog_timeout=115, lease_ttl=120)
    with pytest.raises(TimingError) as exc:
        t.check()
    assert str(exc.value) == (
        "self-fence before takeover: --lease-ttl 120s must be longer than "
        "--watchdog-timeout 115s + the mux's hardware timeout 10s + store latency 10s "
        "(--store-deadline) = 135s: a node that lost its lock must have reset itself "
        "before another node may take the lock over"
    )


@pytest.mark.parametrize("term", ["watchdog_timeout", "hw_timeout", "store_deadline"])
def test_self_fence_rule_counts_each_term(term: str) -> None:
    """lease 120 = 60 + 10 + 5 + 45 of slack: adding 46 s to any one term breaks it."""
    base = Timings(interval=5, lease_ttl=120, watchdog_timeout=60, hw_timeout=10,
                   store_deadline=5, node_timeout=100)  # fmt: skip
    base.check()
    base.replace(lease_ttl=75.5).check()  # just above 60 + 10 + 5
    assert rules(base.replace(lease_ttl=75)) == ["self-fence before takeover"]  # equal: no
    grown = base.replace(**{term: getattr(base, term) + 46})
    assert rules(grown) == ["self-fence before takeover"]


def test_short_watchdog_timeouts_as_sbd_uses() -> None:
    """A 5 s client timeout on 5 s hardware: fine when the lease outlasts them."""
    t = Timings(interval=1, watchdog_timeout=5, hw_timeout=5, store_deadline=1, lease_ttl=12,
                node_timeout=3, fence_delay=0)  # fmt: skip
    t.check()
    assert rules(t.replace(lease_ttl=11)) == ["self-fence before takeover"]


def test_watchdog_outlasts_a_round() -> None:
    t = Timings(interval=2, store_deadline=1, watchdog_timeout=3.5, lease_ttl=30, node_timeout=5)
    t.check()
    assert rules(t.replace(watchdog_timeout=3)) == ["watchdog outlasts a round"]


def test_membership_outlasts_a_round() -> None:
    t = Timings(interval=10, node_timeout=20.5)
    t.check()
    assert rules(t.replace(node_timeout=20)) == ["membership outlasts a round"]
    # a store deadline is part of the round
    assert rules(t.replace(store_deadline=15)) == ["membership outlasts a round"]


def test_watchdog_range_is_what_the_mux_accepts() -> None:
    small = Timings(interval=0.1, store_deadline=0.1, watchdog_timeout=0.5, lease_ttl=20,
                    node_timeout=1)  # fmt: skip
    assert rules(small) == ["watchdog range"]
    assert rules(Timings(watchdog_timeout=4000, lease_ttl=5000)) == ["watchdog range"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0.0])
@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("interval", "--interval"),
        ("lease_ttl", "--lease-ttl"),
        ("watchdog_timeout", "--watchdog-timeout"),
        ("node_timeout", "--node-timeout"),
        ("hw_timeout", "the mux's hardware timeout (--watchdog-hw-timeout)"),
        ("store_deadline", "--store-deadline"),
    ],
)
def test_non_finite_negative_and_zero_are_refused(bad: float, name: str, shown: str) -> None:
    [problem] = Timings(**{name: bad}).problems()  # only that one: no sums of bad terms
    why = "a finite number of seconds" if not math.isfinite(bad) else "> 0"
    assert problem.startswith(f"{shown} must be {why}, got "), problem


def test_fence_delay_may_be_zero_but_not_negative() -> None:
    Timings(fence_delay=0).check()
    assert Timings(fence_delay=-1).problems() == ["--fence-delay must be >= 0, got -1"]
    Timings(power_fence_delay=0).check()
    assert Timings(power_fence_delay=-1).problems() == ["--power-fence-delay must be >= 0, got -1"]
    assert Timings(power_fence_delay=math.inf).problems() == [
        "--power-fence-delay must be a finite number of seconds, got inf"
    ]


def test_every_broken_rule_is_reported_at_once() -> None:
    t = Timings(interval=10, lease_ttl=30, watchdog_timeout=15, node_timeout=15)
    assert rules(t) == [
        "self-fence before takeover",
        "watchdog outlasts a round",
        "membership outlasts a round",
    ]


# -- the real daemons ------------------------------------------------------------------------
def run_daemon(role: str, tmp: Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    """Start the daemon as a process; it must exit by itself (a refusal)."""
    code = f"from hafence.daemons import {role}_main; {role}_main()"
    argv = [sys.executable, "-c", code, "--node", "node1", "--store", str(tmp / "ha"), *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)  # fmt: skip
    return p.returncode, p.stdout + p.stderr


@pytest.fixture
def wd_config(tmp_path: Path) -> Path:
    """The mux config the daemons read (never the host's /etc/default/hafence-watchdog)."""
    p = tmp_path / "hafence-watchdog"
    p.write_text("# defaults\n")
    return p


@pytest.mark.parametrize(
    ("role", "args", "says"),
    [
        ("lrm", ["--watchdog-timeout", "115", "--lease-ttl", "120"],
         "self-fence before takeover: --lease-ttl 120s must be longer than --watchdog-timeout "
         "115s + the mux's hardware timeout 10s + store latency 10s (--store-deadline) = 135s"),
        ("crm", ["--watchdog-timeout", "115", "--lease-ttl", "120"], "self-fence before takeover"),
        ("lrm", ["--store-deadline", "51"], "= 121s"),
        ("lrm", ["--watchdog-hw-timeout", "51"], "the mux's hardware timeout 51s"),
        ("lrm", ["--timings", "fast", "--watchdog-timeout", "3"], "watchdog outlasts a round"),
        ("lrm", ["--interval", "10", "--node-timeout", "15"], "membership outlasts a round"),
        ("lrm", ["--interval", "nan"], "--interval must be a finite number of seconds"),
    ],
)  # fmt: skip
def test_daemons_refuse_unsafe_timings_before_touching_the_store(
    tmp_path: Path, wd_config: Path, role: str, args: list[str], says: str
) -> None:
    rc, output = run_daemon(role, tmp_path, "--no-watchdog", "--watchdog-config",
                            str(wd_config), *args)  # fmt: skip
    assert rc == 2, output
    assert "unsafe timings, not starting" in output and says in output
    assert "Traceback" not in output
    assert not (tmp_path / "ha").exists()  # nothing locked, nothing written


def test_the_hardware_timeout_comes_from_the_mux_config(tmp_path: Path, wd_config: Path) -> None:
    wd_config.write_text("WATCHDOG_MODULE=softdog\nWATCHDOG_TIMEOUT=55\n")
    rc, output = run_daemon("lrm", tmp_path, "--no-watchdog", "--watchdog-config",
                            str(wd_config))  # fmt: skip
    assert rc == 2, output
    assert "the mux's hardware timeout 55s + store latency 10s (--store-deadline) = 125s" in output
    assert f"(the mux's hardware timeout 55s is from WATCHDOG_TIMEOUT in {wd_config}:2)" in output
    assert not (tmp_path / "ha").exists()


def test_a_broken_mux_config_names_file_line_and_key(tmp_path: Path, wd_config: Path) -> None:
    wd_config.write_text("WATCHDOG_TIMEOUT=soon\n")
    rc, output = run_daemon("crm", tmp_path, "--no-watchdog", "--watchdog-config",
                            str(wd_config))  # fmt: skip
    assert rc == 2 and f"{wd_config}:1: WATCHDOG_TIMEOUT: must be whole seconds" in output
    assert not (tmp_path / "ha").exists()


def test_the_running_mux_hardware_timeout_wins(
    tmp_path: Path, wd_config: Path, start_mux: StartMux
) -> None:
    """Configured 5 s, but the mux armed a 20 s device: the fast preset must be refused."""
    mux = start_mux(timeout=20)
    rc, output = run_daemon("lrm", tmp_path, "--timings", "fast", "--watchdog-hw-timeout", "5",
                            "--watchdog-config", str(wd_config),
                            "--watchdog-socket", mux.socket)  # fmt: skip
    assert rc == 2, output
    assert "the mux's hardware timeout 20s + store latency 2s (--store-deadline) = 27s" in output
    assert f"is from the device of the watchdog-mux on {mux.socket})" in output
    assert not (tmp_path / "ha").exists()
    assert mux_status(mux.socket)["clients"] == []  # never armed


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_daemons_start_with_a_preset(
    tmp_path: Path, wd_config: Path, start_mux: StartMux, name: str
) -> None:
    """Against a running mux with its default hardware timeout (10 s); stopped by SIGTERM."""
    mux: MuxProcess = start_mux(timeout=10)
    t = preset(name)
    code = "from hafence.daemons import lrm_main; lrm_main()"
    log = tmp_path / "lrm.log"
    argv = [sys.executable, "-c", code, "--node", "node1", "--store", str(tmp_path / "ha"),
            "--timings", name, "--watchdog-config", str(wd_config),
            "--watchdog-socket", mux.socket, "--log-file", str(log)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    expect = (
        f"node1/lrm: timings {name}: round {t.interval:g}s, lock {t.lease_ttl:g}s, watchdog "
        f"{t.watchdog_timeout:g}s + hardware 10s + store {t.store_latency:g}s = self-fence "
        f"within {t.self_fence_time:g}s"
    )
    store = EmbeddedStore(tmp_path / "ha")
    try:
        end = time.monotonic() + EVENT_WAIT
        # running: its first round wrote the LRM status (its signal handlers are set)
        while not store.read_lrm_status("node1"):
            assert proc.poll() is None, log.read_text() if log.exists() else "no log"
            assert time.monotonic() < end, "the daemon did not start"
            time.sleep(0.05)
        assert expect in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EVENT_WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
