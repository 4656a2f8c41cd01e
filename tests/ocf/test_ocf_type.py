"""The ocf resource type with real OCF agents: resource-agents' Dummy and a scriptable
agent that produces every OCF exit code (tests/ocf/conftest.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hafence_ocf.agent import Agent
from hafence_ocf.config import parse_ocf_config
from hafence_ocf.resource import OcfType

from hafence.cli.ha_manager import cli as ha_manager
from hafence.ha.resources import RUNNING, STOPPED, UNKNOWN, ResourceError, load_resource_types

SECRET = "Ocf-s3cret-Value"


def ocf_type(node: str, state: Path) -> OcfType:
    rt = load_resource_types(node, state)["ocf"]  # through the plugin's entry point
    assert isinstance(rt, OcfType)
    return rt


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    d = tmp_path / "probe"
    d.mkdir()
    return d


def write_probe_cfg(ocf_cfg: Path, probe_dir: Path, extra: str = "") -> None:
    (probe_dir.parent / "secret.txt").write_text(SECRET + "\n")
    ocf_cfg.write_text(
        "ocf: p\n\tagent hafence-test:Probe\n"
        f"\tdir {probe_dir}\n\tsecret_file {probe_dir.parent / 'secret.txt'}\n{extra}"
    )


def test_dummy_runs_per_node_and_stops(ocf_root: Path, ocf_cfg: Path, tmp_path: Path) -> None:
    ocf_cfg.write_text("ocf: web\n\tagent heartbeat:Dummy\n\tfake hello\n")
    n1, n2 = ocf_type("node1", tmp_path / "s1"), ocf_type("node2", tmp_path / "s2")
    assert n1.available() is None and n1.exists("web")
    assert n1.status("web") == STOPPED
    n1.start("web")
    assert (tmp_path / "s1" / "ocf" / "Dummy-web.state").exists()  # Dummy's own state file
    assert n1.status("web") == RUNNING
    assert n2.status("web") == STOPPED  # node2 has its own HA_RSCTMP
    n1.start("web")  # idempotent
    n1.stop("web", 10)
    assert n1.status("web") == STOPPED
    n1.stop("web", 10)  # stopping a stopped resource succeeds (OCF)


@pytest.mark.parametrize(
    ("action", "rc", "expect"),
    [
        ("monitor", 1, UNKNOWN),  # failed: counts as running for the LRM
        ("monitor", 8, RUNNING),
        ("monitor", 2, "config"),
        ("monitor", 6, "config"),
        ("monitor", 5, "unavailable"),
        ("monitor", 3, "not_supported"),
        ("start", 1, "failed"),
        ("start", 4, "failed"),
        ("start", 5, "unavailable"),
        ("start", 6, "config"),
        ("start", 7, "failed"),
        ("stop", 1, "failed"),
        ("validate-all", 6, "config"),
    ],
)
def test_exit_codes_map_to_states_and_reasons(
    ocf_root: Path, ocf_cfg: Path, probe_dir: Path, tmp_path: Path, action: str, rc: int,
    expect: str,
) -> None:  # fmt: skip
    write_probe_cfg(ocf_cfg, probe_dir)
    rt = ocf_type("node1", tmp_path / "s")
    if action == "stop":
        rt.start("p")
    (probe_dir / f"rc-{action}").write_text(f"{rc}\n")
    call = {
        "monitor": lambda: rt.status("p"),
        "start": lambda: rt.start("p"),
        "stop": lambda: rt.stop("p", 10),
        "validate-all": lambda: rt.check_config("p"),
    }[action]
    if expect in (RUNNING, UNKNOWN):
        assert call() == expect
        return
    with pytest.raises(ResourceError) as info:
        call()
    assert info.value.reason == expect
    assert SECRET not in str(info.value)  # the agent printed it: masked in the error
    if action != "monitor":
        assert "******" in str(info.value)


def test_failed_service_is_stopped_before_it_starts_again(
    ocf_root: Path, ocf_cfg: Path, probe_dir: Path, tmp_path: Path
) -> None:
    write_probe_cfg(ocf_cfg, probe_dir)
    rt = ocf_type("node1", tmp_path / "s")
    (probe_dir / "rc-monitor").write_text("1\n")
    rt.start("p")
    actions = [line.split()[-1] for line in (probe_dir / "argv").read_text().splitlines()]
    assert actions == ["monitor", "stop", "start"]  # validate-all: at ha-manager add


def test_timeouts_come_from_the_agents_metadata(
    ocf_root: Path, ocf_cfg: Path, probe_dir: Path, tmp_path: Path
) -> None:
    write_probe_cfg(ocf_cfg, probe_dir)
    rt = ocf_type("node1", tmp_path / "s")
    rt.start("p")
    rt.stop("p", 1)  # the LRM's shutdown timeout does not cut an OCF stop short
    assert (probe_dir / "timeout-start").read_text().strip() == "7000"
    assert (probe_dir / "timeout-stop").read_text().strip() == "9000"
    assert (probe_dir / "timeout-monitor").read_text().strip() == "5000"

    write_probe_cfg(ocf_cfg, probe_dir, "\ttimeout_start 1s\n")
    (probe_dir / "sleep-start").write_text("30\n")
    t0 = time.monotonic()
    with pytest.raises(ResourceError) as info:
        rt.start("p")
    elapsed = time.monotonic() - t0
    assert info.value.reason == "timeout" and "1s" in info.value.message
    assert elapsed < 30  # killed at its bound, not after the agent's sleep
    # the agent's whole process group died with it: its child (the sleep) is gone too
    sleeper = Path(f"/proc/{(probe_dir / 'sleep.pid').read_text().strip()}")
    deadline = time.monotonic() + 10
    while sleeper.exists() and time.monotonic() < deadline:  # reaped by init shortly
        time.sleep(0.05)
    assert not sleeper.exists()


def test_secret_params_travel_in_the_environment_only(
    ocf_root: Path, ocf_cfg: Path, probe_dir: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    write_probe_cfg(ocf_cfg, probe_dir)
    rt = ocf_type("node1", tmp_path / "s")
    rt.start("p")
    assert (probe_dir / "secret").read_text().strip() == SECRET  # the agent got it
    assert SECRET not in (probe_dir / "argv").read_text()  # never in argv
    monkeypatch.setenv("PROBE_SECRET", "from-the-env")
    ocf_cfg.write_text(f"ocf: p\n\tagent hafence-test:Probe\n\tdir {probe_dir}\n"
                       "\tsecret_env PROBE_SECRET\n")  # fmt: skip
    rt.stop("p", 10)
    assert (probe_dir / "secret").read_text().strip() == "from-the-env"
    assert SECRET not in caplog.text and "from-the-env" not in caplog.text


def test_definitions_are_checked_against_the_agents_metadata(
    ocf_root: Path, ocf_cfg: Path, probe_dir: Path, tmp_path: Path
) -> None:
    rt = ocf_type("node1", tmp_path / "s")
    ocf_cfg.write_text(
        "ocf: ip\n\tagent heartbeat:IPaddr2\n\tcidr_netmask 24\n\n"  # 'ip' is required
        f"ocf: p\n\tagent hafence-test:Probe\n\tdir {probe_dir}\n\tcount many\n\tfrob 1\n\n"
        "ocf: gone\n\tagent heartbeat:NoSuchAgent\n"
    )
    with pytest.raises(ResourceError) as info:
        rt.check_config("ip")
    assert info.value.reason == "config"
    assert f"{ocf_cfg}:1: ip: required by agent heartbeat:IPaddr2" in str(info.value)
    with pytest.raises(ResourceError) as info:
        rt.start("p")
    text = str(info.value)
    assert f"{ocf_cfg}:8: count: expected an integer, got 'many'" in text
    assert f"{ocf_cfg}:9: frob: agent hafence-test:Probe has no parameter 'frob'" in text
    assert not (probe_dir / "argv").exists()  # a bad definition never ran the agent
    assert rt.exists("gone") is False
    with pytest.raises(ResourceError) as info:
        rt.start("gone")
    assert info.value.reason == "unavailable" and "NoSuchAgent" in info.value.message
    with pytest.raises(ResourceError) as info:
        rt.status("missing")
    assert info.value.reason == "config" and "no section 'ocf: missing'" in info.value.message


def test_ocf_cfg_syntax_errors_name_file_line_field() -> None:
    text = (
        "ocf: a\n\tagent heartbeat:Dummy\n\tagent heartbeat:Dummy\n\n"
        "ocf: b\n\tfake x\n\n"
        "vm: 100\n\n"
        "ocf: c\n\tagent heart/../beat:Dummy\n\ttimeout_start soon\n\tfake x\n\tfake_file /f\n"
    )
    with pytest.raises(Exception) as info:
        parse_ocf_config(text, "ocf.cfg")
    got = {(e.line, e.field) for e in info.value.errors}
    assert got == {(3, "agent"), (5, "agent"), (8, None), (11, "agent"),
                   (12, "timeout_start"), (13, "fake")}  # fmt: skip


def test_dummy_metadata_parsed() -> None:
    meta = Agent.from_spec("ocf:heartbeat:Dummy").metadata()
    assert meta.timeout("start") == 20 and meta.timeout("stop") == 20
    assert set(meta.params) == {"state", "fake"}


def test_ha_manager_add_accepts_ocf(ocf_cfg: Path, tmp_path: Path) -> None:
    ocf_cfg.write_text("ocf: web\n\tagent heartbeat:Dummy\n")
    r = CliRunner().invoke(ha_manager, ["--store", str(tmp_path / "ha"), "add", "ocf:web",
                                        "--node", "node1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(ha_manager, ["--store", str(tmp_path / "ha"), "config"])
    assert "ocf:web" in r.output, r.output


@pytest.mark.parametrize(
    ("sid", "error"),
    [
        ("ocf:nothere", "no section 'ocf: nothere' (defined: web)"),
        ("ocf:web", ":3: colour: agent heartbeat:Dummy has no parameter 'colour'"),
    ],
)
def test_ha_manager_add_refuses_a_bad_ocf_definition(
    ocf_cfg: Path, tmp_path: Path, sid: str, error: str
) -> None:
    ocf_cfg.write_text("ocf: web\n\tagent heartbeat:Dummy\n\tcolour red\n")
    store = ["--store", str(tmp_path / "ha")]
    r = CliRunner().invoke(ha_manager, [*store, "add", sid, "--node", "node1"])
    assert r.exit_code != 0 and error in r.output, r.output
    assert str(ocf_cfg) in r.output  # names the file
    r = CliRunner().invoke(ha_manager, [*store, "config"])
    assert sid not in r.output  # nothing was written


def test_an_inline_secret_looking_parameter_is_masked(
    ocf_root: Path, ocf_cfg: Path, probe_dir: Path, tmp_path: Path
) -> None:
    ocf_cfg.write_text(f"ocf: p\n\tagent hafence-test:Probe\n\tdir {probe_dir}\n"
                       f"\tsecret {SECRET}\n")  # fmt: skip
    rt = ocf_type("node1", tmp_path / "s")
    (probe_dir / "rc-start").write_text("1\n")  # the agent prints the value, then fails
    with pytest.raises(ResourceError) as info:
        rt.start("p")
    assert SECRET not in str(info.value) and "******" in str(info.value)
    assert (probe_dir / "secret").read_text().strip() == SECRET
