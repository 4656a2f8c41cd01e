"""The real fencer over modelled devices: the combinatorial failure paths.

The model (conftest.ModelDriver) is a FenceDriver whose "hardware" can be made stuck,
unreachable, hanging...; everything above it (levels, concurrency, verification,
time bounds, retries, history, events) is the production code. The same paths against
a real ipmi_sim are in test_fence_agent.py.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from hafence.fence import FenceHistory, Fencer, parse_fence_config

FAST = "power_timeout=0.3 poll_interval=0.01 timeout=0.5"


def fencer(lab, text: str, tmp_path: Path, **kw) -> Fencer:
    cfg = parse_fence_config(text, str(tmp_path / "fence.cfg"))
    kw.setdefault("retries", 0)
    kw.setdefault("backoff", 0.0)
    return Fencer(cfg, lab.registry, FenceHistory(tmp_path / "history.jsonl"), actor="nodeA", **kw)


async def test_single_device_confirmed_off(lab, tmp_path: Path) -> None:
    dev = lab.add("a")
    f = fencer(lab, f"device a model device=a password=pw {FAST}\nconnect a node=n1\n", tmp_path)
    res = await f.fence("n1")
    assert res.ok and res.level == 1 and res.level_name == "a"
    assert dev.power == "off"
    assert dev.calls[0] == "off" and dev.calls[-1] == "status"
    assert dev.closed == 1
    assert res.devices == ["a"]
    json.loads(res.to_json())
    [hist] = f.history.records("n1")
    assert hist.ok and hist.actor == "nodeA" and hist.devices == ["a"] and hist.level == 1
    assert lab.events and lab.events[-1]["ok"] is True


async def test_level_with_one_of_two_failing_falls_through(lab, tmp_path: Path, caplog) -> None:
    psu1 = lab.add("psu1")
    psu2 = lab.add("psu2", behaviour="unreachable")
    sw = lab.add("sw")
    text = (
        f"device psu:1 model device=psu1 {FAST}\n"
        f"device psu:2 model device=psu2 {FAST}\n"
        "connect psu:1 node=n1\nconnect psu:2 node=n1\n"
        f"device sw model device=sw {FAST}\nconnect sw node=n1\n"
    )
    f = fencer(lab, text, tmp_path)
    with caplog.at_level(logging.INFO, logger="hafence.fence"):
        res = await f.fence("n1")
    assert res.ok and res.level == 2 and res.level_name == "sw"
    [attempt] = res.attempts
    lv1, lv2 = attempt.levels
    assert not lv1.ok and lv2.ok
    kinds = {d.device: (d.ok, d.error_kind) for d in lv1.devices}
    assert kinds == {"psu:1": (True, None), "psu:2": (False, "unreachable")}
    assert psu1.power == "off" and sw.power == "off"  # both acted; level 1 still failed
    assert psu2.power == "on"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert (
        "fence node 'n1': level 1 device 'psu:2' off failed: unreachable (connection refused)"
        in errors
    )
    assert "fence node 'n1': level 1 (psu) failed" in errors


async def test_device_that_never_reaches_off_is_still_on(lab, tmp_path: Path) -> None:
    dev = lab.add("a", behaviour="stuck")
    f = fencer(lab, f"device a model device=a {FAST}\nconnect a node=n1\n", tmp_path)
    res = await f.fence("n1")
    assert not res.ok and res.level is None
    assert res.error_kind == "still_on"
    assert dev.calls.count("status") >= 2  # it kept polling until power_timeout
    assert f.history.last("n1").error_kind == "still_on"


async def test_lagging_status_is_polled_until_off(lab, tmp_path: Path) -> None:
    dev = lab.add("a", lag=3)
    f = fencer(lab, f"device a model device=a {FAST}\nconnect a node=n1\n", tmp_path)
    res = await f.fence("n1")
    assert res.ok
    assert dev.calls.count("status") == 4


async def test_hanging_device_times_out_within_bound(lab, tmp_path: Path) -> None:
    lab.add("a", behaviour="hang")
    f = fencer(lab, "device a model device=a timeout=0.05\nconnect a node=n1\n", tmp_path)
    res = await f.fence("n1")
    assert not res.ok and res.error_kind == "timeout"
    assert "0.05s" in res.attempts[0].levels[0].devices[0].message


async def test_unexpected_exception_is_device_error_and_secret_scrubbed(
    lab, tmp_path: Path, caplog
) -> None:
    lab.add("a", behaviour="crash")
    f = fencer(
        lab, f"device a model device=a password=hunter22 {FAST}\nconnect a node=n1\n", tmp_path
    )
    with caplog.at_level(logging.DEBUG):
        res = await f.fence("n1")
    assert not res.ok and res.error_kind == "device_error"
    assert "******" in res.message
    assert "hunter22" not in res.to_json()
    assert "hunter22" not in caplog.text
    assert "hunter22" not in (tmp_path / "history.jsonl").read_text()
    assert "hunter22" not in json.dumps(lab.events)


async def test_retries_with_exponential_capped_backoff(lab, tmp_path: Path, caplog) -> None:
    dev = lab.add("a", behaviour="auth")
    f = fencer(
        lab,
        f"device a model device=a {FAST}\nconnect a node=n1\n",
        tmp_path,
        retries=3,
        backoff=0.01,
        backoff_max=0.03,
    )
    assert f.backoff_delays() == [0.01, 0.02, 0.03]
    with caplog.at_level(logging.ERROR, logger="hafence.fence"):
        res = await f.fence("n1")
    assert not res.ok and res.error_kind == "auth_failed"
    assert [a.attempt for a in res.attempts] == [1, 2, 3, 4]
    assert [a.backoff for a in res.attempts] == [0.01, 0.02, 0.03, 0.0]
    assert dev.calls.count("off") == 4
    assert len(f.history.records("n1")) == 4 and len(lab.events) == 4
    assert "fence node 'n1': attempt 2/4 failed on every level, retrying in 0.02s" in caplog.text
    assert "NOT fenced" in caplog.text


async def test_retry_succeeds_on_second_attempt(lab, tmp_path: Path) -> None:
    dev = lab.add("a", fail_first=1)
    f = fencer(lab, f"device a model device=a {FAST}\nconnect a node=n1\n", tmp_path, retries=2)
    res = await f.fence("n1")
    assert res.ok and len(res.attempts) == 2
    assert [r.ok for r in f.history.records("n1")] == [False, True]
    assert dev.power == "off"


async def test_delay_plus_random_spread_before_off(lab, tmp_path: Path, caplog) -> None:
    lab.add("a")
    rng = random.Random(7)
    expected = 0.01 + random.Random(7).uniform(0, 0.02)
    f = fencer(
        lab,
        f"device a model device=a delay=0.01 delay_max=0.02 {FAST}\nconnect a node=n1\n",
        tmp_path,
        rng=rng,
    )
    with caplog.at_level(logging.INFO, logger="hafence.fence"):
        res = await f.fence("n1")
    assert res.ok
    assert f"device 'a' delaying by {expected:.2f}s (delay=0.01 delay_max=0.02)" in caplog.text


async def test_config_error_is_loud_and_not_retried(lab, tmp_path: Path) -> None:
    f = fencer(lab, "device a model device=a colour=red\nconnect a node=n1\n", tmp_path, retries=3)
    res = await f.fence("n1")
    assert not res.ok and res.error_kind == "config_error" and len(res.attempts) == 1
    assert "colour" in res.message and "fence.cfg:1" in res.message


async def test_node_without_chain(lab, tmp_path: Path) -> None:
    f = fencer(lab, "device a model device=a\nconnect a node=n1\n", tmp_path)
    res = await f.fence("n2")
    assert not res.ok and res.error_kind == "no_device"
    assert f.history.last("n2").error_kind == "no_device"


async def test_reboot_composed_and_native(lab, tmp_path: Path) -> None:
    plain = lab.add("a")
    native = lab.add("b")
    text = (
        f"device a model device=a {FAST}\nconnect a node=n1\n"
        f"device b model_reboot device=b {FAST}\nconnect b node=n2\n"
    )
    f = fencer(lab, text, tmp_path)
    res = await f.fence("n1", action="reboot")
    assert res.ok and plain.power == "on"
    assert plain.calls[0] == "off" and "on" in plain.calls
    assert plain.calls.index("on") > plain.calls.index("status")  # off verified first
    res = await f.fence("n2", action="reboot")
    assert res.ok and native.calls[0] == "reboot" and "off" not in native.calls


async def test_unfence_on(lab, tmp_path: Path) -> None:
    dev = lab.add("a", power="off")
    f = fencer(lab, f"device a model device=a {FAST}\nconnect a node=n1\n", tmp_path)
    res = await f.fence("n1", action="on")
    assert res.ok and dev.power == "on"


async def test_check_powers_nothing_off_and_computes_budget(lab, tmp_path: Path) -> None:
    a, b = lab.add("a"), lab.add("b")
    bad = lab.add("c", behaviour="hang_status")
    text = (
        "device p:1 model device=a timeout=1 power_timeout=5 power_wait=1 delay=2 delay_max=3\n"
        "device p:2 model device=b timeout=1 power_timeout=2\n"
        "connect p:1 node=n1\nconnect p:2 node=n1\n"
        "device s model device=c timeout=0.05 power_timeout=1\nconnect s node=n1\n"
    )
    f = fencer(lab, text, tmp_path, retries=1, backoff=4)
    rep = await f.check("n1")
    assert "off" not in a.calls + b.calls + bad.calls
    assert a.power == b.power == bad.power == "on"
    assert not rep.ok and rep.levels == 2
    by = {c.device: c for c in rep.devices}
    assert by["p:1"].ok and by["p:1"].state == "on"
    assert by["s"].error_kind == "timeout"
    # p:1 = delay 2 + delay_max 3 + off 1 + power_wait 1 + power_timeout 5 + status 1 = 13
    assert by["p:1"].budget_seconds == 13
    assert by["p:2"].budget_seconds == 4
    assert by["s"].budget_seconds == pytest.approx(1.1)
    assert rep.attempt_budget_seconds == pytest.approx(14.1)  # levels run one after another
    assert rep.budget_seconds == pytest.approx(14.1 * 2 + 4)
    assert f.history.records() == []  # a dry run is not a fence


async def test_run_device_single_actions(lab, tmp_path: Path) -> None:
    from hafence.fence import build_driver

    lab.add("a")
    f = fencer(lab, f"device a model device=a {FAST}\nconnect a node=n1\n", tmp_path)
    spec = f.chain("n1")[0].devices[0]
    drv = build_driver(spec, lab.registry)
    st = await f.run_device(drv, "status")
    assert st.ok and st.state == "on"
    lst = await f.run_device(drv, "list")
    assert not lst.ok and lst.error_kind == "not_supported"
    off = await f.run_device(drv, "off", node="n1")
    assert off.ok and off.state == "off"
    assert [r.action for r in f.history.records()] == ["off"]  # only power actions recorded
    with pytest.raises(ValueError):
        await f.run_device(drv, "explode")
