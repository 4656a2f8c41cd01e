"""With the real daemons (tests/daemons' 3-node harness, node1 fenced through ipmi_sim):
a fence sends one mail and one webhook; a fence that keeps failing sends one alarm."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons.test_daemons_e2e import SID, Cluster, _bring_up, cluster, wait_for

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


def test_a_fence_sends_one_mail_and_one_webhook(notified: tuple) -> None:
    c, box, hooks = notified
    _bring_up(c, c.bmc.password)
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
    assert Path(c.tmp / "notify.cfg").exists()
