"""hwtests/test_watchdog_hw.py, unmodified, on "machines" the fake kernel stands in for:
softdog with soft_noboot=1 (everything runs), softdog that resets and an iTCO chip
(only the inspection runs; arming is refused with the reason), no watchdog at all
(everything skips), and a hardware config naming the device.

Each case is a separate pytest process: the file is collected as it would be on a node.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hafence.watchdog.fake import FakeKernel
from hafence.watchdog.kernel import FAKE_ENV

ROOT = Path(__file__).resolve().parents[2]
HWTEST = "hwtests/test_watchdog_hw.py"


def run_hwtest(kernel: FakeKernel, hw_config: str, tmp_path: Path, **env: str) -> tuple[dict, str]:
    cfg = tmp_path / "hardware.toml"
    cfg.write_text(hw_config)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HAFENCE_")}
    full_env.update({FAKE_ENV: str(kernel.path), "HAFENCE_HW_CONFIG": str(cfg), **env})
    # its own short basetemp: no numbered dirs in the shared one, and socket paths stay
    # under the AF_UNIX limit
    base = tempfile.mkdtemp(prefix="hwwd")
    try:
        args = ["-q", "-rs", "-p", "no:cacheprovider", f"--basetemp={base}/t", HWTEST]
        p = subprocess.run(
            [sys.executable, "-m", "pytest", *args],
            cwd=ROOT,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|skipped|failed|error)", p.stdout)}
    return counts, p.stdout + p.stderr


def test_softdog_with_noboot_runs_everything(kernel: FakeKernel, tmp_path: Path) -> None:
    kernel.modprobe("softdog", {"soft_noboot": "1", "soft_margin": "60"})
    counts, out = run_hwtest(kernel, "", tmp_path)
    assert counts == {"passed": 6}, out
    assert len(kernel.events("expired_noboot")) == 2 and not kernel.events("reset")
    dev = kernel.device()
    assert (dev["active"], dev["timeout"]) == (False, 60)  # left as found


def test_a_machine_that_would_reset_is_never_armed(kernel: FakeKernel, tmp_path: Path) -> None:
    kernel.modprobe("softdog", {})  # plain `modprobe softdog`: soft_noboot=0
    kernel.modprobe("iTCO_wdt", {})
    counts, out = run_hwtest(kernel, "", tmp_path)
    assert counts == {"passed": 2, "skipped": 10}, out
    assert "not arming /dev/watchdog0: softdog runs with soft_noboot=0" in out
    assert "not arming /dev/watchdog1: 'iTCO_wdt' is a hardware watchdog" in out
    assert kernel.events("open") == []


def test_no_watchdog_skips_with_the_reason(kernel: FakeKernel, tmp_path: Path) -> None:
    counts, out = run_hwtest(kernel, "", tmp_path)
    assert counts == {"skipped": 6}, out
    assert "no watchdog device on this machine" in out and "soft_noboot=1" in out


def test_configured_device_and_allow_reset(kernel: FakeKernel, tmp_path: Path) -> None:
    kernel.modprobe("softdog", {"soft_noboot": "1"})
    kernel.modprobe("iTCO_wdt", {})
    cfg = '[watchdog.chip]\ndevice = "/dev/watchdog1"\nallow_reset = true\n'
    counts, out = run_hwtest(kernel, cfg, tmp_path)
    # only watchdog1; arming allowed, letting it expire never
    assert counts == {"passed": 4, "skipped": 2}, out
    assert "letting /dev/watchdog1 expire would reset this machine" in out
    assert not kernel.events("reset") and not kernel.events("expired_noboot")
    assert {e["device"] for e in kernel.events("open")} == {"watchdog1"}


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ('device = "/dev/watchdog0"\nallow_rest = true\n', "watchdog.x.allow_rest: unknown key"),
        ('device = "/dev/sda"\n', "watchdog.x.device: must be a /dev/watchdogN path"),
    ],
)
def test_config_mistakes_name_the_field(
    kernel: FakeKernel, tmp_path: Path, table: str, field: str
) -> None:
    counts, out = run_hwtest(kernel, f"[watchdog.x]\n{table}", tmp_path)
    # the loader names the line too (hardware.toml:N: field: ...)
    assert re.search(rf"hardware\.toml:\d+: {re.escape(field)}", out) and "error" in counts, out
    assert kernel.events("open") == []
