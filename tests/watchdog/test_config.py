"""The watchdog config file (like Proxmox's /etc/default/pve-ha-manager)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hafence.errors import ConfigError
from hafence.watchdog.config import MuxConfig, load_config, parse_config
from hafence.watchdog.fake import FakeKernel
from hafence.watchdog.protocol import DEFAULT_SOCKET, SOCKET_ENV

F = "/etc/default/hafence-watchdog"


def test_full_file() -> None:
    cfg = parse_config(
        """
# hafence watchdog
WATCHDOG_MODULE=iTCO_wdt     # the chipset watchdog
export WATCHDOG_TIMEOUT="20"
WATCHDOG_NOWAYOUT=1
WATCHDOG_DEVICE='/dev/watchdog1'
MUX_SOCKET=/run/x/mux.sock
FEED_INTERVAL=0.5
""",
        F,
    )
    assert cfg.module == "iTCO_wdt" and cfg.file == F
    s = cfg.settings
    assert (s.timeout, s.nowayout, s.noboot, s.device) == (20, True, False, "/dev/watchdog1")
    assert (cfg.socket, cfg.feed_interval) == ("/run/x/mux.sock", 0.5)
    assert cfg.lines["WATCHDOG_NOWAYOUT"] == 5


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    cfg = load_config(tmp_path / "absent")  # a missing file means defaults
    assert (cfg.module, cfg.settings.timeout, cfg.settings.nowayout) == ("softdog", 10, False)
    assert (cfg.socket, cfg.feed_interval, cfg.file) == (DEFAULT_SOCKET, 1.0, None)
    monkeypatch.setenv(SOCKET_ENV, "/tmp/elsewhere.sock")
    assert MuxConfig().socket == "/tmp/elsewhere.sock"


def test_file_is_read(tmp_path: Path) -> None:
    p = tmp_path / "wd"
    p.write_text("WATCHDOG_MODULE=softdog\nWATCHDOG_NOBOOT=1\n")
    cfg = load_config(p)
    assert cfg.settings.noboot and cfg.file == str(p)
    with pytest.raises(ConfigError, match=r"absent: file not found"):
        load_config(tmp_path / "absent", required=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("\n\nWATCHDOG_MODULE softdog\n", f"{F}:3: expected KEY=VALUE"),
        (
            "WATCHDOG_MODUEL=softdog\n",
            f"{F}:1: WATCHDOG_MODUEL: unknown key (known: WATCHDOG_MODULE",
        ),
        ("WATCHDOG_MODULE=\n", f"{F}:1: WATCHDOG_MODULE: must name a driver"),
        ("WATCHDOG_MODULE=a b\n", f"{F}:1: WATCHDOG_MODULE: one value expected (quote it)"),
        ("WATCHDOG_MODULE='softdog\n", f"{F}:1: WATCHDOG_MODULE: No closing quotation"),
        ("#\nWATCHDOG_TIMEOUT=ten\n", f"{F}:2: WATCHDOG_TIMEOUT: must be whole seconds, got 'ten'"),
        ("WATCHDOG_TIMEOUT=0\n", f"{F}:1: WATCHDOG_TIMEOUT: must be 1..3600 seconds"),
        ("WATCHDOG_NOWAYOUT=yes\n", f"{F}:1: WATCHDOG_NOWAYOUT: must be 0 or 1, got 'yes'"),
        ("WATCHDOG_NOBOOT=2\n", f"{F}:1: WATCHDOG_NOBOOT: must be 0 or 1, got '2'"),
        ("WATCHDOG_DEVICE=/dev/sda\n", f"{F}:1: WATCHDOG_DEVICE: must be a /dev/watchdogN path"),
        ("MUX_SOCKET=mux.sock\n", f"{F}:1: MUX_SOCKET: must be an absolute path"),
        ("FEED_INTERVAL=fast\n", f"{F}:1: FEED_INTERVAL: must be 0.05..60 seconds, got 'fast'"),
        (
            "WATCHDOG_TIMEOUT=5\nFEED_INTERVAL=5\n",
            f"{F}:2: FEED_INTERVAL: must be shorter than WATCHDOG_TIMEOUT (5s)",
        ),
    ],
)
def test_errors_name_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, F)
    assert str(exc.value).startswith(message)


def test_a_setting_the_driver_rejects_names_its_line(tmp_path: Path) -> None:
    p = tmp_path / "wd"
    p.write_text("WATCHDOG_MODULE=iTCO_wdt\n# drill\nWATCHDOG_NOBOOT=1\n")
    cfg = load_config(p)
    with pytest.raises(ConfigError) as exc:
        cfg.driver(FakeKernel(tmp_path / "k.json"))
    assert str(exc.value) == (
        f"{p}:3: WATCHDOG_NOBOOT: the iTCO_wdt driver has no no-reboot mode "
        "(WATCHDOG_MODULE=iTCO_wdt)"
    )


def test_driver_from_config(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "k.json")
    drv = parse_config("WATCHDOG_MODULE=softdog\nWATCHDOG_TIMEOUT=30\n").driver(kernel)
    assert drv.name == "softdog" and drv.module_args()["soft_margin"] == "30"
