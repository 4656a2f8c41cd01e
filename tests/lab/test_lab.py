"""hafence lab end to end: a real 3-node cluster (namespaces, etcd quorum, live watchdogs,
IPMI BMCs, an SNMP switch) through fixed fault schedules, judged by the chaos checker.

Every schedule covers several fault kinds at once and must end clean: no service ran
twice, nothing was recovered before a fence, every service runs again once healed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hafence.cli.main import cli
from hafence.lab.chaos import ChaosRun, Result, Schedule, Step
from hafence.lab.checker import running_copies
from hafence.lab.control import Lab
from hafence.lab.network import ns_inode, pids_in_netns


def where(lab: Lab, sid: str) -> str:
    copies = running_copies(lab.layout).get(sid, [])
    assert len(copies) == 1, f"{sid} runs on {copies}"
    return copies[0]


def others(lab: Lab, node: str) -> list[str]:
    return [n for n in lab.layout.nodes if n != node]


def play(chaos: ChaosRun, name: str, *steps: Step, moved: tuple[str, str] | None = None) -> Result:
    """Play the steps; ``moved=(sid, node)``: keep the faults until ``sid`` runs on a node
    other than ``node`` (at most the recovery bound), then heal. The schedule must pass
    the checker and end clean."""

    def away() -> bool:
        assert moved is not None
        copies = running_copies(chaos.layout).get(moved[0], [])
        return bool(copies) and moved[1] not in copies

    schedule = Schedule(0, [name], list(steps), max(s.at for s in steps) + 2)
    r = chaos.run_schedule(schedule, until=away if moved else None)
    assert r.ok, "\n".join([name, *map(str, r.verdict.findings), *r.unrecovered, *r.notes])
    return r


def crm_log_since(lab: Lab, t0: float) -> str:
    """The CRMs' log lines written after ``t0`` (wall time)."""
    out = []
    for node in lab.layout.nodes:
        for line in (lab.layout.log_dir(node) / "crm.log").read_text().splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", line)
            if m and time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) >= int(t0):
                out.append(line)
    return "\n".join(out)


def events_since(lab: Lab, t0: float, event: str, node: str) -> list[dict]:
    recs = [json.loads(x) for x in lab.layout.events_file.read_text().splitlines()]
    return [r for r in recs if r["t"] >= t0 and r["event"] == event and r["node"] == node]


def test_each_node_is_its_own_host_with_its_own_etcd_member(lab: Lab) -> None:
    lay = lab.layout
    view = lab.cluster()
    assert all(view["etcd"].values()) and view["quorate"]
    assert view["master"] in lay.nodes and view["manager_lock"] == view["master"]
    inodes = {n: ns_inode(f"/run/netns/{lay.netns(n)}") for n in lay.nodes}
    procs = pids_in_netns(inodes.values())
    for node in lay.nodes:
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in procs[inodes[node]]}
        assert "etcd" in names, (node, names)
        argv = [Path(f"/proc/{p}/cmdline").read_bytes() for p in procs[inodes[node]]]
        for daemon in (b"hafence-watchdog-mux", b"hafence-lrm", b"hafence-crm"):
            assert any(daemon in a for a in argv), (node, daemon)
        assert not any(b"--no-watchdog" in a for a in argv)
    # every service runs once, where the master put it
    for sid, ss in view["service_status"].items():
        assert where(lab, sid) == ss["node"]
    # ha-manager through the lab, as a user runs it
    r = CliRunner().invoke(cli, ["lab", "--dir", str(lay.state_dir), "ha-manager", "status"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("quorum OK\n") and "service writer:w1" in r.output


def test_status_and_faults_from_the_command_line(lab: Lab) -> None:
    d = str(lab.layout.state_dir)
    r = CliRunner().invoke(cli, ["lab", "--dir", d, "status", "--output", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert {n: v["state"] for n, v in data["nodes"].items()} == dict.fromkeys(
        lab.layout.nodes, "up"
    )
    assert sorted(data["copies"]) == ["dummy:d1", "writer:w1", "writer:w2"]
    r = CliRunner().invoke(cli, ["lab", "--dir", d, "fault", "node9", "kill"])
    assert r.exit_code == 1 and "no node 'node9' in this lab" in r.output
    r = CliRunner().invoke(cli, ["lab", "--dir", d, "up"])
    assert r.exit_code == 1 and "a lab is already up" in r.output


def test_secrets_are_files_of_mode_0600_and_never_in_argv_or_logs(lab: Lab) -> None:
    lay = lab.layout
    for f in (lay.fence_cfg, *lay.secrets_dir.iterdir()):
        assert f.stat().st_mode & 0o777 == 0o600, f
    secrets = [f.read_text().strip() for f in lay.secrets_dir.iterdir()]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert not any(s in argv for s in secrets), argv[:200]
    # hafence's logs (the devices' own configs and logs hold them, as a real BMC's do:
    # those directories are root's alone)
    ours = [lay.supervisor_log, lay.events_file, *lay.state_dir.glob("nodes/*/log/*.log")]
    ours += list(lay.state_dir.glob("nodes/*/fence-history.jsonl"))
    logs = "".join(p.read_text(errors="replace") for p in ours if p.exists())
    assert "fencing" in logs or "watchdog" in logs
    assert not any(s in logs for s in secrets)
    for device_dir in (lay.switch_dir, *(lay.bmc_dir(n) for n in lay.nodes)):
        assert device_dir.stat().st_mode & 0o077 == 0, device_dir


def test_crash_is_fenced_through_the_bmc_while_an_lrm_restarts(lab: Lab, chaos: ChaosRun):
    victim = where(lab, "writer:w1")
    _a, b = others(lab, victim)
    t0 = time.time()
    r = play(
        chaos,
        "crash with healthy BMC",
        Step(0, "restart", b, {"daemon": "lrm"}),
        Step(0.5, "kill", victim),
        moved=("writer:w1", victim),
    )
    log = crm_log_since(lab, t0)
    lines = [
        f"fencing: node '{victim}' confirmed off by level 1 (bmc-{victim})",
        f"fencing: acknowledged - got agent lock for node '{victim}'",
        f"recover service 'writer:w1' from fenced node '{victim}'",
    ]
    assert all(x in log for x in lines), log
    assert log.index(lines[0]) < log.index(lines[1]) < log.index(lines[2])
    assert events_since(lab, t0, "power_off", victim)
    assert r.verdict.recoveries, log
    assert max(r.verdict.recoveries) <= lab.timings.recovery_bound(), (r.verdict.recoveries, log)


def test_dead_bmc_falls_back_to_the_switch_port(lab: Lab, chaos: ChaosRun) -> None:
    victim = where(lab, "writer:w2")
    t0 = time.time()
    play(
        chaos,
        "crash with a dead BMC",
        Step(0, "bmc-dead", victim),
        Step(0.5, "kill", victim),
        moved=("writer:w2", victim),
    )
    log = crm_log_since(lab, t0)
    assert re.search(rf"device 'bmc-{victim}' off failed: (timeout|unreachable)", log), log
    assert f"fencing: node '{victim}' confirmed off by level 2 (switch)" in log, log
    assert events_since(lab, t0, "link_down", victim)  # the switch really shut the port
    assert not events_since(lab, t0, "power_off", victim)


def test_hung_node_with_a_stuck_bmc_is_reset_by_its_watchdog(lab: Lab, chaos: ChaosRun):
    victim = where(lab, "dummy:d1")
    a, _b = others(lab, victim)
    t0 = time.time()
    play(
        chaos,
        "hung node with a stuck BMC, a peer's CRM killed",
        Step(0, "bmc-stuck", victim),
        Step(0.5, "freeze", victim),
        Step(1, "kill-daemon", a, {"daemon": "crm"}),
        Step(lab.timings.watchdog_timeout + lab.timings.mux_timeout + 2, "thaw", victim),
    )
    # nobody fed its watchdog hardware: the node reset itself (the live watchdog path)
    assert events_since(lab, t0, "watchdog_reset", victim)
    log = crm_log_since(lab, t0)
    if f"FENCE: Try to fence node '{victim}'" in log:  # the master got to fence it too
        assert f"device 'bmc-{victim}' off failed: still_on" in log, log


def test_node_whose_messages_are_lost_fences_itself_and_is_fenced(lab: Lab, chaos: ChaosRun):
    """A one-way partition: the node still hears the cluster, nobody hears it. Its
    BMC is flaky, so the master's fence may need its retries."""
    victim = where(lab, "writer:w1")
    t0 = time.time()
    play(
        chaos,
        "one-way partition, flaky BMC",
        Step(0, "bmc-flaky", victim),
        Step(0.5, "partition", victim, {"direction": "out"}),
        moved=("writer:w1", victim),
    )
    # its LRM cannot renew its lock, stops feeding: the watchdog resets it, unless the
    # master's fence through the BMC powered it off first
    reset = events_since(lab, t0, "watchdog_reset", victim)
    assert reset or events_since(lab, t0, "power_off", victim)
    assert f"recover service 'writer:w1' from fenced node '{victim}'" in crm_log_since(lab, t0)


def test_etcd_member_loss_and_a_crm_restart_move_nothing(lab: Lab, chaos: ChaosRun) -> None:
    """Faults a healthy majority rides out: the services of those nodes stay. (The third
    node's link is lossy meanwhile; its services may move: with every store call a new
    TCP connection, heavy loss can make its LRM miss its watchdog - see docs/lab.md.)"""
    a, b, c = lab.layout.nodes
    before = {s: n for s, n in running_copies(lab.layout).items() if n[0] in (a, b)}
    play(
        chaos,
        "etcd member lost, a CRM restarted, a lossy link",
        Step(0, "etcd-stop", a),
        Step(0.5, "restart", b, {"daemon": "crm"}),
        Step(1, "slow-net", c, {"loss": 20, "delay": 50}),
        Step(2 * lab.timings.node_timeout, "heal", a),
    )
    after = running_copies(lab.layout)
    assert {s: after.get(s) for s in before} == before


def test_the_checker_sees_a_second_copy(
    lab: Lab, chaos: ChaosRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rogue writer for w2 on another node, for a second: the checker must flag it
    (both by sampling the processes and from the shared file)."""
    home = where(lab, "writer:w2")
    rogue_node = others(lab, home)[0]
    from hafence_resources.writer import WriterType

    monkeypatch.setenv("HAFENCE_WRITER_DIR", str(lab.layout.writer_dir))
    argv = WriterType(rogue_node, lab.layout.state_dir / "rogue").argv("w2")
    t0 = time.time()
    rogue = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{lab.layout.netns(rogue_node)}", "--", *argv]
    )
    log = lab.layout.writer_dir / "w2.log"
    mine = f" {rogue_node} writer:w2 {rogue.pid}-"

    def interleaved() -> bool:
        """Three lines of the rogue with a line of the real writer after its first."""
        lines = log.read_text(errors="replace").splitlines()
        first = next((i for i, x in enumerate(lines) if mine in x), None)
        if first is None or sum(mine in x for x in lines) < 3:
            return False
        return any(f" {home} writer:w2 " in x for x in lines[first:])

    try:
        # as long as a loaded machine needs to start it and let both write (not a timing)
        deadline = time.monotonic() + 60
        while not interleaved() and rogue.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert interleaved(), "the rogue writer never wrote beside the real one"
    finally:
        rogue.send_signal(signal.SIGKILL)
        rogue.wait()
    time.sleep(0.3)
    found = chaos.checker.judge(t0, time.time()).findings
    rules = {(f.rule, "pid" in f.detail) for f in found}
    assert ("twice", True) in rules, found  # sampled processes
    assert ("twice", False) in rules, found  # interleaved writes in the shared file
