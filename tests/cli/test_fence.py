"""``hafence fence NODE [--dry-run]``, ``chain``, ``config check``, ``history`` against
real ipmi_sim BMCs on loopback."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import PASSWORD, WRONG, device_line

pytestmark = pytest.mark.peer("ipmi_sim")


def no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert WRONG not in text


# -- dry run ------------------------------------------------------------------------
def test_dry_run_text_checks_and_powers_nothing(run, bmc, node_cfg):
    r = run("fence", "node1", "--dry-run", "--config", str(node_cfg))
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "nothing powered off" in out
    row = next(line for line in out.splitlines() if line.startswith("1 "))
    assert row.split()[:5] == ["1", "bmc1", "ipmi", "ok", "on"]
    assert "time budget:" in out and "worst case (3 attempt(s)" in out
    assert "result: OK" in out
    assert bmc.power == "on" and bmc.power_calls() == []
    no_secret(r.stdout, r.stderr)


def test_dry_run_json_budget(run, bmc, node_cfg):
    r = run("fence", "node1", "--dry-run", "--config", str(node_cfg), "--retries", "0")
    assert r.exit_code == 0
    r = run(
        "--output", "json", "fence", "node1", "--dry-run", "--config", str(node_cfg),
        "--retries", "0",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["ok"] is True and data["dry_run"] is True and data["levels"] == 1
    dev = data["devices"][0]
    assert (dev["device"], dev["driver"], dev["state"], dev["ok"]) == ("bmc1", "ipmi", "on", True)
    # budget of one verified off: timeout 5 (off) + power_timeout 3 + timeout 5 (last poll)
    assert dev["budget_seconds"] == pytest.approx(13.0)
    assert data["budget_seconds"] == pytest.approx(13.0)  # --retries 0: one pass
    assert bmc.power_calls() == []


def test_dry_run_wrong_password_exit_1(run, bmc, write_cfg):
    cfg = write_cfg(f"{device_line('bmc1', bmc, password=WRONG)}\nconnect bmc1 node=node1\n")
    r = run("-vv", "fence", "node1", "--dry-run", "--config", str(cfg))
    assert r.exit_code == 1
    assert "FAILED (auth_failed)" in r.stdout and "result: FAILED" in r.stdout
    no_secret(r.stdout, r.stderr)
    r = run("fence", "node1", "--dry-run", "--config", str(cfg), "--output", "json")
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["devices"][0]["error_kind"] == "auth_failed"
    no_secret(r.stdout, r.stderr)


def test_dry_run_config_error_in_chain_exit_2(run, bmc, write_cfg):
    cfg = write_cfg(f"{device_line('bmc1', bmc)} bogus=1\nconnect bmc1 node=node1\n")
    r = run("fence", "node1", "--dry-run", "--config", str(cfg))
    assert r.exit_code == 2
    assert "config_error" in r.stdout and "bogus" in r.stdout


def test_unknown_node_exit_2(run, node_cfg):
    r = run("fence", "node9", "--dry-run", "--config", str(node_cfg))
    assert r.exit_code == 2
    assert "no fence device connects node 'node9'" in r.stderr and "node1" in r.stderr


# -- real fence ---------------------------------------------------------------------
def test_fence_refused_without_yes(run, bmc, node_cfg):
    r = run("fence", "node1", "--config", str(node_cfg))
    assert r.exit_code == 2
    assert "refusing without confirmation" in r.stderr
    assert bmc.power == "on" and bmc.power_calls() == []


def test_fence_verified_off_and_history(run, bmc, node_cfg, state_dir):
    r = run("fence", "node1", "--yes", "--config", str(node_cfg))
    assert r.exit_code == 0, r.output
    assert "node 'node1' fenced: off confirmed by level 1 (bmc1)" in r.stdout
    assert bmc.power == "off"
    assert bmc.power_calls() == ["set power 0"]
    r = run("history", "node1", "--output", "json")
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    assert [(x["node"], x["action"], x["ok"], x["level"]) for x in recs] == [
        ("node1", "off", True, 1)
    ]
    r = run("history")
    assert r.exit_code == 0
    row = r.stdout.splitlines()[1].split()
    assert row[2:6] == ["node1", "off", "ok", "1"]
    no_secret(r.stdout, (state_dir / "fence-history.jsonl").read_text())


def test_fence_json_result(run, bmc, node_cfg):
    r = run("fence", "node1", "--yes", "--config", str(node_cfg), "--output", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["ok"] is True and data["level"] == 1 and data["action"] == "off"
    assert data["attempts"][0]["levels"][0]["devices"][0]["state"] == "off"


def test_fence_falls_through_to_second_level(run, ipmi_sims, write_cfg):
    bad, good = ipmi_sims(), ipmi_sims()
    cfg = write_cfg(
        f"{device_line('first', bad, password=WRONG)}\nconnect first node=node1\n"
        f"{device_line('second', good)}\nconnect second node=node1\n"
    )
    r = run("fence", "node1", "--yes", "--config", str(cfg), "--retries", "0")
    assert r.exit_code == 0, r.output
    assert "level 1 device 'first': auth_failed" in r.stdout
    assert "confirmed by level 2 (second)" in r.stdout
    assert bad.power == "on" and good.power == "off"
    no_secret(r.stdout, r.stderr)


def test_fence_stuck_bmc_not_fenced_exit_1(run, ipmi_sims, write_cfg):
    bmc = ipmi_sims(stuck=True)
    cfg = write_cfg(f"{device_line('bmc1', bmc, power_timeout=0.5)}\nconnect bmc1 node=node1\n")
    r = run("fence", "node1", "--yes", "--config", str(cfg), "--retries", "1", "--backoff", "0")
    assert r.exit_code == 1
    assert "node 'node1' NOT fenced: still_on" in r.stderr
    assert "FAILED (still_on)" in r.stdout
    r = run("history", "node1", "--output", "json")
    assert [x["ok"] for x in json.loads(r.stdout)] == [False, False]  # two attempts recorded


def test_unfence_on_needs_no_confirmation(run, bmc, node_cfg):
    bmc.set_power(False)
    r = run("fence", "node1", "--action", "on", "--config", str(node_cfg))
    assert r.exit_code == 0, r.output
    assert bmc.power == "on"


# -- chain --------------------------------------------------------------------------
def test_chain_masks_secrets(run, ipmi_sims, write_cfg):
    a, b = ipmi_sims(), ipmi_sims()
    cfg = write_cfg(
        f"{device_line('psu:1', a)}\n{device_line('psu:2', b)}\n"
        "connect psu:1 node=node1\nconnect psu:2 node=node1\n"
        "device sw snmp_ifmib ip=127.0.0.1 community=Sw1tch-c0mmunity\n"
        "connect sw node=node1 plug=Gi1/0/1\n"
    )
    r = run("chain", "node1", "--config", str(cfg))
    assert r.exit_code == 0, r.output
    rows = [line.split()[:3] for line in r.stdout.splitlines()[3:]]
    assert rows == [["1", "psu:1", "ipmi"], ["1", "psu:2", "ipmi"], ["2", "sw", "snmp_ifmib"]]
    assert "password=******" in r.stdout and "community=******" in r.stdout
    r2 = run("chain", "node1", "--config", str(cfg), "--output", "json")
    data = json.loads(r2.stdout)
    assert [lv["name"] for lv in data["levels"]] == ["psu", "sw"]
    assert data["levels"][1]["devices"][0]["options"]["plug"] == "Gi1/0/1"
    for text in (r.stdout, r2.stdout):
        no_secret(text)
        assert "Sw1tch-c0mmunity" not in text


# -- config check --------------------------------------------------------------------
def test_config_check_ok(run, node_cfg):
    r = run("config", "check", str(node_cfg))
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{node_cfg}: OK, 1 device(s), 1 node(s)")
    r = run("config", "check", "--config", str(node_cfg), "--output", "json")
    assert json.loads(r.stdout) == {
        "ok": True,
        "file": str(node_cfg),
        "devices": 1,
        "nodes": ["node1"],
        "levels": {"node1": 1},
        "warnings": [],
    }


def test_config_check_rejects_inf_timeout_before_any_dry_run(run, write_cfg, bmc):
    """``timeout=inf`` used to pass config check and then hang ``fence --dry-run``."""
    cfg = write_cfg(f"{device_line('bmc1', bmc, timeout='inf')}\nconnect bmc1 node=node1\n")
    r = run("config", "check", str(cfg))
    assert r.exit_code == 2
    assert f"{cfg}:1: timeout: expected a finite number of seconds, got 'inf'" in r.stderr
    r = run("fence", "node1", "--dry-run", "--config", str(cfg))
    assert r.exit_code == 2 and "timeout: expected a finite number" in r.output
    assert bmc.calls() == []  # refused before any request reached the BMC


def test_config_check_warns_about_secrets_on_a_command_line(run, write_cfg, password_file):
    cfg = write_cfg(
        f"device sw fence_ifmib ip=127.0.0.1 community_file={password_file}\n"  # 1
        "connect sw node=node1 plug=7\n"
        f"device bmc fence_ipmilan ip=127.0.0.1 password_file={password_file} lanplus\n"  # 3
        "connect bmc node=node1\n"
        f"device kg fence_ipmilan ip=127.0.0.1 password_file={password_file} "  # 5
        "hexadecimal_kg=0123abcd\nconnect kg node=node2\n"
    )
    r = run("config", "check", str(cfg))
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2, r.stderr
    assert warnings[0].startswith(f"warning: {cfg}:1: community: fence_ifmib runs other programs")
    assert warnings[1].startswith(f"warning: {cfg}:5: hexadecimal_kg: fence_ipmilan runs ipmitool")
    assert all("ps shows it" in w for w in warnings)
    r = run("config", "check", str(cfg), "--output", "json")
    assert len(json.loads(r.stdout)["warnings"]) == 2


def test_config_check_names_file_line_field(run, write_cfg):
    cfg = write_cfg(
        "# comment\n"
        "device ok1 ipmi ip=127.0.0.1 password=x\n"
        "connect ok1 node=node1\n"
        "device bad ipmi ip=127.0.0.1 password=x port=notanumber\n"
        "connect bad node=node1\n"
        "device worse nosuchdriver a=b\n"
        "connect worse node=node2\n"
    )
    r = run("config", "check", str(cfg))
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert f"error: {cfg}:4: port: expected integer, got 'notanumber'" in lines
    assert any(line.startswith(f"error: {cfg}:6: driver: unknown fence driver") for line in lines)
    r = run("config", "check", str(cfg), "--output", "json")
    assert r.exit_code == 2
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["error_kind"] == "config_error"
    assert [(e["line"], e["field"]) for e in data["errors"]] == [(4, "port"), (6, "driver")]


def test_config_check_syntax_errors(run, write_cfg, tmp_path):
    cfg = write_cfg("device a ipmi ip=1\nconnect b node=n1\nconnect a nodes=n1\nbogus\n")
    r = run("config", "check", str(cfg))
    assert r.exit_code == 2
    assert f"error: {cfg}:2: device 'b' must be declared" in r.stderr
    assert f"error: {cfg}:3: node: node=nodename needed" in r.stderr
    assert f"error: {cfg}:4: unable to parse line: bogus" in r.stderr
    r = run("config", "check", str(tmp_path / "missing.cfg"))
    assert r.exit_code == 2 and "missing.cfg: cannot read" in r.stderr
    r = run("fence", "node1", "--dry-run", "--config", str(cfg))
    assert r.exit_code == 2 and f"{cfg}:2:" in r.stderr


def test_history_empty(run, tmp_path):
    r = run("history", "--history", str(tmp_path / "none.jsonl"))
    assert r.exit_code == 0 and "no fence history" in r.stdout
    r = run("history", "--history", str(tmp_path / "none.jsonl"), "--output", "json")
    assert json.loads(r.stdout) == []
