"""The chaos checker's rules on hand-made evidence: each rule flags what breaks it and
passes what does not (no lab needed), and the schedule generator is reproducible."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hafence.lab.chaos import ChaosRun, make_schedule, services_for
from hafence.lab.checker import Checker, Copy
from hafence.lab.control import Lab
from hafence.lab.layout import Layout
from hafence.lab.timings import preset

NODES = ("node1", "node2", "node3")
T0 = 1_900_000_000.0


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    lay = Layout(tmp_path, "hlzzzz", "10.255.255", NODES)
    lay.writer_dir.mkdir(parents=True)
    for n in NODES:
        lay.log_dir(n).mkdir(parents=True)
    return lay


def checker(layout: Layout) -> Checker:
    return Checker(layout, preset("fast"))


def events(layout: Layout, *recs: tuple[float, str, str]) -> None:
    with open(layout.events_file, "a") as fh:
        for t, event, node in recs:
            fh.write(json.dumps({"t": T0 + t, "event": event, "node": node}) + "\n")


def crm(layout: Layout, node: str, *lines: tuple[float, str]) -> None:
    with open(layout.log_dir(node) / "crm.log", "a") as fh:
        for t, text in lines:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(T0 + t))
            ms = round((T0 + t) % 1 * 1000)
            fh.write(f"{stamp},{ms:03d} INFO    {node}/crm: {text}\n")


def writes(layout: Layout, sid: str, node: str, token: str, start: float, end: float) -> None:
    with open(layout.writer_dir / f"{sid.split(':')[1]}.log", "a") as fh:
        t, n = start, 0
        while t <= end:
            n += 1
            fh.write(f"{T0 + t:.3f} {node} {sid} {token} {n}\n")
            t += 0.05


def sample(c: Checker, t: float, *copies: tuple[str, str]) -> None:
    c.samples.append(
        (T0 + t, [Copy(sid, node, 1000 + i, False) for i, (sid, node) in enumerate(copies)])
    )


def rules(c: Checker, t0: float = 0, t1: float = 100) -> list[str]:
    return [f.rule for f in c.judge(T0 + t0, T0 + t1).findings]


def test_two_sampled_copies_are_a_violation_unless_one_node_is_cut_off(layout: Layout):
    c = checker(layout)
    sample(c, 1, ("dummy:a", "node1"))
    sample(c, 2, ("dummy:a", "node1"), ("dummy:a", "node2"))
    sample(c, 2.1, ("dummy:a", "node1"), ("dummy:a", "node2"))
    assert rules(c) == ["twice"]  # one finding per episode

    c = checker(layout)
    events(layout, (1.5, "link_down", "node1"))  # its switch port is shut
    sample(c, 2, ("dummy:a", "node1"), ("dummy:a", "node2"))
    assert rules(c) == []


def test_interleaved_writers_are_a_violation_a_handover_is_not(layout: Layout) -> None:
    writes(layout, "writer:w", "node1", "11-aa", 0, 3)
    writes(layout, "writer:w", "node2", "22-bb", 3.2, 6)  # starts after node1's copy ended
    assert rules(checker(layout)) == []
    writes(layout, "writer:w", "node1", "33-cc", 5, 5.5)  # a frozen copy thawed: two at once
    assert rules(checker(layout)) == ["twice"]


def test_writes_of_a_node_cut_off_at_its_switch_port_do_not_count(layout: Layout) -> None:
    events(layout, (2.0, "link_down", "node1"), (8.0, "link_up", "node1"))
    writes(layout, "writer:w", "node1", "11-aa", 0, 6)  # keeps writing while isolated
    writes(layout, "writer:w", "node2", "22-bb", 4, 10)
    assert rules(checker(layout)) == []
    writes(layout, "writer:w", "node1", "11-aa", 8.5, 9)  # link back while node2 writes
    assert rules(checker(layout)) == ["twice"]


def test_recovery_needs_an_acknowledged_fence_and_the_old_copy_gone(layout: Layout) -> None:
    crm(layout, "node2", (10, "recover service 'dummy:a' from fenced node 'node1' to node 'node2'"))
    assert rules(checker(layout)) == ["early-recovery"]  # no agent lock taken


def test_recovery_after_the_agent_lock_is_fine_unless_the_copy_still_runs(layout: Layout):
    crm(
        layout,
        "node2",
        (9.9, "fencing: acknowledged - got agent lock for node 'node1'"),
        (10, "recover service 'dummy:a' from fenced node 'node1' to node 'node2'"),
    )
    c = checker(layout)
    sample(c, 9.9)
    assert rules(c) == []
    c = checker(layout)
    sample(c, 10.05, ("dummy:a", "node1"))  # node1 still runs it: never reset
    assert rules(c) == ["early-recovery"]


def test_a_recovery_retried_past_its_schedule_keeps_its_fence_until_the_next_one(
    layout: Layout,
) -> None:
    # the store failed the master's writes: it logged the recovery again each round, into
    # the next schedule's look-back, long after the acknowledgement (chaos seed 8012)
    crm(
        layout,
        "node1",
        (5, "fencing: acknowledged - got agent lock for node 'node2'"),
        *((t, "recover service 'writer:w' from fenced node 'node2' to node 'node1'")
          for t in (5.1, 40, 42, 44)),
    )  # fmt: skip
    c = checker(layout)
    c.judge(T0, T0 + 20)  # the fence's own schedule
    c.forget_before(T0 + 30)  # a long run drops old evidence, not a fence still open
    assert rules(c, 30, 50) == []
    # back online while the recovery is still retried: the same episode (seed 8180)
    crm(layout, "node1", (60, "node 'node2': state changed from 'unknown' => 'online'"),
        (61, "recover service 'writer:w' from fenced node 'node2' to node 'node1'"))  # fmt: skip
    assert rules(c, 50, 65) == []
    crm(layout, "node1", (70, "node 'node2': state changed from 'unknown' => 'fence'"),
        (71, "recover service 'writer:w' from fenced node 'node2' to node 'node1'"))  # fmt: skip
    assert rules(c, 65, 80) == ["early-recovery"]  # a new fence needs its own acknowledgement


def test_a_copy_sampled_just_before_its_node_died_is_not_running_at_the_recovery(
    layout: Layout,
) -> None:
    """The fast path recovers within a sample interval of a confirmed power-off: the
    copy seen before the node's death (recorded once its processes are killed) is gone,
    and one seen after the recovery, or with no death in between, is not."""
    crm(
        layout,
        "node2",
        (9.9, "fencing: acknowledged - got agent lock for node 'node1'"),
        (10, "recover service 'dummy:a' from fenced node 'node1' to node 'node2'"),
    )
    c = checker(layout)
    sample(c, 9.85, ("dummy:a", "node1"))
    assert rules(c) == ["early-recovery"]  # no death: it still ran
    events(layout, (9.95, "died", "node1"))
    c = checker(layout)
    sample(c, 9.85, ("dummy:a", "node1"))
    assert rules(c) == []
    c = checker(layout)
    sample(c, 9.85, ("dummy:a", "node1"))
    sample(c, 10.05, ("dummy:a", "node1"))  # alive after the recovery: a death missed
    assert rules(c) == ["early-recovery"]


def test_a_confirmed_off_must_be_a_real_power_off_or_link_down(layout: Layout) -> None:
    crm(
        layout,
        "node2",
        (10, "fencing: node 'node1' confirmed off by level 1 (bmc-node1) in 0.1s"),
        (20, "fencing: node 'node3' confirmed off by level 2 (switch) in 0.3s"),
    )
    assert rules(checker(layout)) == ["false-fence", "false-fence"]
    events(layout, (9.95, "power_off", "node1"), (20.1, "link_down", "node3"))
    assert rules(checker(layout)) == []


def test_a_power_cut_hidden_by_a_power_on_at_once_is_a_real_power_off(layout: Layout) -> None:
    # the BMC's off-hook logged the cut; the lab's heal pressed power on 4 ms later,
    # before the physics' next tick could log a power_off (chaos seed 8007)
    crm(layout, "node2", (10, "fencing: node 'node1' confirmed off by level 1 (bmc-node1) in 0.9s"))
    with open(layout.events_file, "a") as fh:
        fh.write(json.dumps({"t": T0 + 9.9, "event": "died", "node": "node1", "why": "crash"}))
        fh.write("\n")
    assert rules(checker(layout)) == ["false-fence"]  # a crash leaves the power on
    with open(layout.events_file, "a") as fh:
        rec = {"t": T0 + 9.92, "event": "died", "node": "node1", "why": "power cut"}
        fh.write(json.dumps(rec) + "\n")
    events(layout, (9.924, "power_on", "node1"))
    assert rules(checker(layout)) == []


def test_recovery_time_is_measured_from_the_death_of_the_node(layout: Layout) -> None:
    c = checker(layout)
    events(layout, (2.0, "died", "node1"))
    sample(c, 1, ("dummy:a", "node1"))
    sample(c, 2.05)
    sample(c, 20)
    sample(c, 21.05, ("dummy:a", "node2"))
    v = c.judge(T0, T0 + 100)
    assert v.findings == [] and v.recoveries == [pytest.approx(19.05)]


def test_a_recovery_is_measured_even_when_the_samples_came_seconds_apart(layout: Layout):
    # A loaded machine: the sampler's next look came 3.5 s after the one that saw the
    # copy (a test at load 9 found no recovery at all: the death was 2.5 s before the
    # first sample without the copy, outside a fixed 2 s window).
    c = checker(layout)
    events(layout, (2.0, "died", "node1"))
    sample(c, 1, ("dummy:a", "node1"))
    sample(c, 4.5)
    sample(c, 10, ("dummy:a", "node2"))
    v = c.judge(T0, T0 + 100)
    assert v.findings == [] and v.recoveries == [pytest.approx(8.0)]


def test_a_service_gone_without_a_death_is_no_failover(layout: Layout) -> None:
    c = checker(layout)
    events(layout, (30.0, "died", "node1"))  # long after: another episode
    sample(c, 1, ("dummy:a", "node1"))
    sample(c, 2)  # stopped by hand, say
    sample(c, 10, ("dummy:a", "node2"))
    assert c.judge(T0, T0 + 100).recoveries == []


def test_schedules_are_reproducible_and_cover_every_fault_kind() -> None:
    t = preset("fast")
    nodes, services = list(NODES), services_for(3)
    assert make_schedule(7, nodes, services, t) == make_schedule(7, nodes, services, t)
    seen = set()
    for seed in range(300):
        s = make_schedule(seed, nodes, services, t)
        assert [st.at for st in s.steps] == sorted(st.at for st in s.steps)
        assert s.length >= max(st.at for st in s.steps)
        seen |= {st.action for st in s.steps}
    assert seen >= {
        "kill",
        "freeze",
        "thaw",
        "partition",
        "heal",
        "slow-net",
        "link-down",
        "bmc-dead",
        "bmc-stuck",
        "bmc-flaky",
        "etcd-stop",
        "kill-daemon",
        "restart",
        "power-off",
        "ha-manager",
    }


def test_an_lrm_status_stamped_in_its_boot_second_is_since_the_boot(layout: Layout) -> None:
    # chaos seed 7166: node3's idle LRM wrote its status 0.56 s after the boot, stamped
    # in whole seconds, and wrote nothing more; readiness called it not reporting
    layout.state_file.write_text(json.dumps({"layout": layout.to_dict()}))
    events(layout, (0.019, "boot", "node3"))
    view = {
        "etcd": dict.fromkeys(NODES, True),
        "quorate": True,
        "alive": dict.fromkeys(NODES, True),
        "lrm": {n: {"timestamp": int(T0 + 5)} for n in NODES},
    }
    view["lrm"]["node3"] = {"timestamp": int(T0 + 0.019)}  # the boot's own second
    lab = Lab(layout.state_dir)
    assert lab.not_ready(view, master=False) is None
    view["lrm"]["node3"] = {"timestamp": int(T0 - 1)}  # before the boot: a dead LRM's
    assert lab.not_ready(view, master=False) == "LRMs not reporting: node3"


class _AdminLab:
    """A lab's status and heal, nothing else: what the chaos run's settling asks."""

    def __init__(self, layout: Layout, nodes: dict[str, dict[str, object]]) -> None:
        self.layout, self.timings, self.nodes = layout, preset("fast"), nodes
        self.healed: list[list[str]] = []

    def status(self) -> dict[str, object]:
        return {"nodes": {n: dict(v) for n, v in self.nodes.items()}}

    def heal(self, nodes: list[str] | None = None) -> None:
        self.healed.append(list(nodes or self.nodes))
        for n in nodes or self.nodes:
            self.nodes[n].update(state="up", power="on", link="up", faults=[])

    def not_ready(self, master: bool = True) -> str | None:
        return None


def test_settling_unfences_a_node_fenced_after_the_heal(layout: Layout) -> None:
    # Seed 9150: the BMC was stuck, the schedule healed everything, the node booted, and
    # only then did the fence's switch level shut its port: power on, link down, no
    # fault left. Nobody but an admin turns a fabric-fenced port on again; without it
    # the cluster never settles (the run counted it unrecovered).
    up = {"state": "up", "power": "on", "link": "up", "faults": []}
    lab = _AdminLab(layout, {"node1": {**up, "link": "down"}, "node2": dict(up),
                             "node3": {**up, "power": "off", "state": "halted"}})  # fmt: skip
    run = ChaosRun(lab, layout.state_dir, print)  # type: ignore[arg-type]
    assert run.not_clean() is not None  # this look still saw the old state
    assert lab.healed == [["node1", "node3"]]
    assert run.not_clean() is None


def test_settling_leaves_a_link_down_that_a_fault_holds(layout: Layout) -> None:
    up = {"state": "up", "power": "on", "link": "up", "faults": []}
    lab = _AdminLab(layout, {"node1": {**up, "link": "down", "faults": ["link-down"]},
                             "node2": dict(up), "node3": dict(up)})  # fmt: skip
    run = ChaosRun(lab, layout.state_dir, print)  # type: ignore[arg-type]
    assert "node1: machine up, link down" in (run.not_clean() or "")
    assert lab.healed == []
