"""With the real daemons (tests/daemons' 3-node harness, node1 fenced through ipmi_sim):
a fence sends one mail and one webhook, and ``curl`` on the master's metrics endpoint
shows it with its duration (issue 17's "done when", in one cluster run); a fence that
keeps failing sends one alarm."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons.test_daemons_e2e import NODES, SID, Cluster, _bring_up, cluster, wait_for
from tests.metrics.test_metrics import port_of, scrape, value

__all__ = ["cluster"]


@pytest.fixture
def notified(
    cluster: Cluster, smtp_server: tuple, webhook_server: tuple, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Cluster, object, object]]:
    ctl, box = smtp_server
    url, hooks = webhook_server
    cfg = cluster.tmp / "notify.cfg"
    cfg.write_text(f"smtp: mail\n\tserver 127.0.0.1\n\tport {ctl.port}\n\tto ops@example.com\n\n"
                   f"webhook: hook\n\turl {url}\n\nlog: log\n")  # fmt: skip
    monkeypatch.setenv("HAFENCE_NOTIFY_CFG", str(cfg))  # every CRM of the harness reads it
    yield cluster, box, hooks


def test_a_fence_sends_one_mail_one_webhook_and_shows_in_metrics(
    notified: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, box, hooks = notified
    monkeypatch.setenv("HAFENCE_METRICS", "127.0.0.1:0")  # each daemon: a free port of its own
    _bring_up(c, c.bmc.password)
    lrm1 = scrape(port_of(c, "node1", "lrm"))
    assert value(lrm1, "hafence_daemon_status", node="node1", role="lrm", status="active") == 1
    assert value(lrm1, "hafence_watchdog_armed", node="node1", role="lrm") == 0  # --no-watchdog
    assert value(lrm1, "hafence_round_duration_seconds_count", role="lrm") >= 1
    assert value(lrm1, "hafence_master") is None  # only the master speaks for the cluster
    c.kill_daemons("node1")
    wait_for(lambda: c.where() not in (None, "node1"), 60, f"{SID} to be recovered")
    wait_for(lambda: box.messages and hooks.posts, 30, "the notifications")
    new_node = c.where()
    # rounds after the recovery: the master sees the service started on its new node
    wait_for(lambda: f"service {SID} ({new_node}, started)" in c.ha("status").output, 30,
             "the master to see the recovered service started")  # fmt: skip
    time.sleep(2)  # four more rounds: nothing else may arrive
    assert len(box.messages) == 1, [m["Subject"] for m in box.messages]
    assert len(hooks.posts) == 1, [p["subject"] for p in hooks.posts]
    mail, hook = box.messages[0], hooks.posts[0]
    assert mail["Subject"] == hook["subject"] == "hafence: node 'node1' fenced"
    body = mail.get_payload(decode=True).decode()
    assert "FENCE: Try to fence node 'node1'" in body
    assert "SUCCEED: fencing: acknowledged - got agent lock for node 'node1'" in body
    assert f"recover service '{SID}' from fenced node 'node1' to node '{new_node}'" in body
    assert "device 'bmc1' (ipmi) off confirmed off in" in body
    kinds = [e["kind"] for e in hook["events"]]
    assert kinds == ["fence_started", "fence_succeeded", "service_recovered"]
    assert hook["attempts"][-1]["ok"] is True
    assert hook["attempts"][-1]["results"][0]["driver"] == "ipmi"
    assert c.bmc.password not in body and c.bmc.password not in str(hook)
    assert "notify: smtp:mail sent 'hafence: node 'node1' fenced'" in c.log()
    check_metrics(c, new_node)


def check_metrics(c: Cluster, new_node: str) -> None:
    master = next(n for n in NODES[1:] if "FENCE: Try to fence node 'node1'" in
                  (c.tmp / f"{n}-crm.log").read_text(errors="replace"))  # fmt: skip
    s = scrape(port_of(c, master, "crm"))
    fence = {"target": "node1", "device": "bmc1", "driver": "ipmi", "action": "off",
             "result": "ok"}  # fmt: skip
    assert value(s, "hafence_fence_attempts_total", **fence) == 1
    assert value(s, "hafence_fence_duration_seconds_count", **fence) == 1
    duration = value(s, "hafence_fence_duration_seconds_sum", **fence)
    assert duration is not None and 0 < duration < 60
    assert value(s, "hafence_fences_total", target="node1", result="ok") == 1
    assert value(s, "hafence_master", master=master) == 1
    assert value(s, "hafence_service_state", sid=SID, state="started", service_node=new_node)
    assert value(s, "hafence_service_state", sid=SID, service_node="node1") is None  # one state
    assert value(s, "hafence_lock_holder", lock="ha_manager_lock", owner=master) == 1
    assert value(s, "hafence_lock_holder", lock="ha_agent_node1_lock", owner=master) == 1
    assert value(s, "hafence_node_state", node_name=new_node, state="online") == 1
    assert value(s, "hafence_daemon_status", node=master, role="crm", status="master") == 1
    assert value(s, "hafence_round_duration_seconds_count", node=master, role="crm") >= 1
    assert value(s, "hafence_quorate", node=master, role="crm") == 1
    assert c.bmc.password not in "".join(map(str, s))


def test_a_failing_fence_alarms_once(notified: tuple) -> None:
    c, box, hooks = notified
    _bring_up(c, "not-the-password")
    c.kill_daemons("node1")
    wait_for(lambda: c.log().count("hardware fence of node 'node1' failed") >= 3, 60,
             "three failed fence attempts")  # fmt: skip
    wait_for(lambda: box.messages and hooks.posts, 30, "the alarm")
    time.sleep(2)
    assert [m["Subject"] for m in box.messages] == ["hafence: FAILED to fence node 'node1'"]
    assert [p["subject"] for p in hooks.posts] == ["hafence: FAILED to fence node 'node1'"]
    body = box.messages[0].get_payload(decode=True).decode()
    assert "auth_failed" in body and "not-the-password" not in body
    assert "metrics: serving" not in c.log()  # metrics are off unless asked for
    assert Path(c.tmp / "notify.cfg").exists()
