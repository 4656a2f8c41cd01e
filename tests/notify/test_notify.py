"""Notifications: notify.cfg, episodes (one notification per fence, no storm) and
delivery to a real SMTP server, a real HTTP server and the log."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from hafence.errors import ConfigErrors
from hafence.ha.realenv import RealEnv
from hafence.notify import Notifier, parse_notify_config
from hafence.notify.config import load_notify_config
from hafence.plugins import PluginRegistry
from hafence.store import EmbeddedStore

SECRET = "Smtp-s3cret-pw"


def test_config_errors_name_file_line_field(tmp_path: Path) -> None:
    text = (
        "smtp: mail\n\tserver 127.0.0.1\n\tport 99999\n\tto not-an-address\n\tcolour red\n\n"
        "webhook: hook\n\turl ftp://x\n\ttoken_file /nonexistent/token\n\n"
        "pager: p\n\n"
        "smtp: m2\n\tto a@b.c\n\tusername u\n"
    )
    with pytest.raises(ConfigErrors) as info:
        parse_notify_config(text, "notify.cfg")
    got = {(e.line, e.field) for e in info.value.errors}
    assert got == {(3, "port"), (4, "to"), (5, "colour"), (8, "url"), (9, "token_file"),
                   (11, None), (13, "server"), (15, "username")}  # fmt: skip
    assert all(e.file == "notify.cfg" for e in info.value.errors)


def test_config_secrets_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = tmp_path / "smtp.pw"
    pw.write_text(SECRET + "\n")
    monkeypatch.setenv("HOOK_TOKEN", "tok-123")
    cfg = tmp_path / "notify.cfg"
    cfg.write_text(
        f"smtp: mail\n\tserver 127.0.0.1\n\tto ops@example.com, oncall@example.com\n"
        f"\tusername notify\n\tpassword_file {pw}\n\ttls starttls\n\n"
        "webhook: hook\n\turl http://127.0.0.1:1/x\n\ttoken_env HOOK_TOKEN\n\ttimeout 2\n\n"
        "log: l\n"
    )
    mail, hook, lg = load_notify_config(cfg)
    assert mail.options["to"] == ["ops@example.com", "oncall@example.com"]
    assert mail.options["port"] == 25 and mail.options["password"].reveal() == SECRET
    assert SECRET not in repr(mail)
    assert hook.options["token"].reveal() == "tok-123" and hook.timeout == 2
    assert lg.type == "log"


def crm_env(tmp_path: Path, node: str = "node2") -> RealEnv:
    return RealEnv(node, EmbeddedStore(tmp_path / "ha"), role="crm")


def make_notifier(targets_text: str, tmp_path: Path) -> Notifier:
    return Notifier(parse_notify_config(targets_text, "notify.cfg")).start(PluginRegistry(
        load_entry_points=False))  # fmt: skip


def attempt(node: str, ok: bool, n: int, kind: str | None = None) -> dict:
    return {
        "node": node, "action": "off", "ok": ok, "attempt": n, "error_kind": kind,
        "results": [{"device": "bmc1", "driver": "ipmi", "action": "off", "ok": ok,
                     "state": "off" if ok else "unknown", "error_kind": kind,
                     "message": "" if ok else "refused", "duration": 0.42}],
    }  # fmt: skip


def wait_sent(n: Notifier, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(n.sent) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def test_one_notification_per_episode_failures_at_once_no_storm(
    tmp_path: Path, webhook_server: tuple
) -> None:
    url, hooks = webhook_server
    notifier = make_notifier(f"webhook: h\n\turl {url}\n", tmp_path)
    env = crm_env(tmp_path)
    try:
        env.log("email", "FENCE: Try to fence node 'node1'")
        for n in range(1, 4):  # the fence fails three rounds in a row
            notifier.fence_attempt(attempt("node1", False, n, "auth_failed"))
            env.log("email", "FAILED: hardware fence of node 'node1', services stay fenced")
            notifier.round_done()
        wait_sent(notifier, 1)
        assert [p["subject"] for p in hooks.posts] == ["hafence: FAILED to fence node 'node1'"]
        notifier.fence_attempt(attempt("node1", True, 4))
        env.log("email", "SUCCEED: fencing: acknowledged - got agent lock for node 'node1'")
        env.log("info", "recover service 'vm:100' from fenced node 'node1' to node 'node2'")
        env.log("err", "recovering service 'vm:101' from fenced node 'node1' failed, "
                "no recovery node found")  # fmt: skip
        notifier.round_done()
        for _ in range(3):  # the CRM retries the unrecoverable service every round
            env.log("err", "recovering service 'vm:101' from fenced node 'node1' failed, "
                    "no recovery node found")  # fmt: skip
            notifier.round_done()
        wait_sent(notifier, 2)
        time.sleep(0.3)  # anything else would have been queued by now
        assert len(hooks.posts) == 2, [p["subject"] for p in hooks.posts]
        summary = hooks.posts[1]
        assert summary["subject"] == "hafence: node 'node1' fenced"
        kinds = [e["kind"] for e in summary["events"]]
        assert kinds == ["fence_started", "fence_failed", "fence_succeeded",
                         "service_recovered", "service_unrecoverable"]  # fmt: skip
        assert summary["events"][3]["service"] == "vm:100"
        assert summary["events"][3]["target"] == "node2"
        assert [a["ok"] for a in summary["attempts"]] == [False, False, False, True]
        assert summary["attempts"][3]["results"][0]["duration"] == 0.42
        # a later fate of a service is news once; a new fence of the node a new episode
        env.log("info", "recover service 'vm:101' from fenced node 'node1' to node 'node3'")
        env.log("email", "FENCE: Try to fence node 'node1'")
        env.log("email", "SUCCEED: fencing: acknowledged - got agent lock for node 'node1'")
        notifier.round_done()
        wait_sent(notifier, 4)
        assert [p["subject"] for p in hooks.posts[2:]] == [
            "hafence: service 'vm:101' recovered",
            "hafence: node 'node1' fenced",
        ]
    finally:
        notifier.close()


def test_lrm_and_other_loggers_are_ignored(tmp_path: Path) -> None:
    notifier = make_notifier("log: l\n", tmp_path)
    try:
        lrm = RealEnv("node1", EmbeddedStore(tmp_path / "ha"), role="lrm")
        lrm.log("email", "FENCE: Try to fence node 'node1'")  # not the CRM: not an event
        logging.getLogger("hafence.ha").critical("node2/crm: FENCE: Try to fence node 'x'")
        assert notifier.episodes.episodes == {}
    finally:
        notifier.close()


def test_mail_and_webhook_delivery(
    tmp_path: Path, smtp_server: tuple, webhook_server: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    ctl, box = smtp_server
    url, hooks = webhook_server
    caplog.set_level(logging.INFO, logger="hafence.notify")
    tok = tmp_path / "tok"
    tok.write_text("Bearer-s3cret\n")
    notifier = make_notifier(
        f"smtp: mail\n\tserver 127.0.0.1\n\tport {ctl.port}\n\tfrom ha@cluster.test\n"
        "\tto ops@example.com, oncall@example.com\n\n"
        f"webhook: hook\n\turl {url}\n\ttoken_file {tok}\n\nlog: l\n", tmp_path)  # fmt: skip
    env = crm_env(tmp_path)
    try:
        env.log("email", "FENCE: Try to fence node 'node1'")
        notifier.fence_attempt(attempt("node1", True, 1))
        env.log("email", "SUCCEED: fencing: acknowledged - got agent lock for node 'node1'")
        notifier.round_done()
        wait_sent(notifier, 3)
    finally:
        notifier.close()
    assert len(box.messages) == 1
    msg = box.messages[0]
    assert msg["Subject"] == "hafence: node 'node1' fenced"
    assert msg["From"] == "ha@cluster.test"
    assert sorted(box.envelopes[0].rcpt_tos) == ["oncall@example.com", "ops@example.com"]
    body = msg.get_payload(decode=True).decode()
    assert "FENCE: Try to fence node 'node1'" in body
    assert "device 'bmc1' (ipmi) off confirmed off in 0.42s" in body
    assert len(hooks.posts) == 1 and hooks.posts[0]["node"] == "node1"
    assert hooks.headers[0]["Authorization"] == "Bearer Bearer-s3cret"
    assert "notification: hafence: node 'node1' fenced" in caplog.text
    assert "Bearer-s3cret" not in caplog.text


def test_a_hanging_target_never_blocks_the_crm(
    tmp_path: Path, silent_tcp_port: int, webhook_server: tuple,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    url, hooks = webhook_server
    notifier = make_notifier(
        f"webhook: dead\n\turl http://127.0.0.1:{silent_tcp_port}/x\n\ttimeout 3\n\n"
        f"webhook: live\n\turl {url}\n", tmp_path)  # fmt: skip
    env = crm_env(tmp_path)
    try:
        env.log("email", "FENCE: Try to fence node 'node1'")
        env.log("email", "SUCCEED: fencing: acknowledged - got agent lock for node 'node1'")
        notifier.round_done()
        env.log("email", "FENCE: Try to fence node 'node3'")
        env.log("email", "FAILED: hardware fence of node 'node3', services stay fenced")
        notifier.round_done()
        # the rounds went on while the worker still waits on the silent server
        assert notifier.sent == [] and hooks.posts == []
        wait_sent(notifier, 2)
    finally:
        notifier.close()
    assert [p["subject"] for p in hooks.posts] == [
        "hafence: node 'node1' fenced",
        "hafence: FAILED to fence node 'node3'",
    ]
    assert "notify: webhook:dead failed" in caplog.text


def test_a_fence_that_hangs_is_announced_once(tmp_path: Path, webhook_server: tuple) -> None:
    url, hooks = webhook_server
    notifier = Notifier(parse_notify_config(f"webhook: h\n\turl {url}\n"), pending_after=0.5)
    notifier.start(PluginRegistry(load_entry_points=False))
    env = crm_env(tmp_path)
    try:
        env.log("email", "FENCE: Try to fence node 'node1'")
        notifier.round_done()  # nothing resolved: nothing to say yet
        wait_sent(notifier, 1)
        for _ in range(3):  # many more rounds and worker wake-ups: still said once
            notifier.round_done()
            time.sleep(0.5)
        env.log("email", "SUCCEED: fencing: acknowledged - got agent lock for node 'node1'")
        notifier.round_done()
        wait_sent(notifier, 2)
    finally:
        notifier.close()
    assert [p["subject"] for p in hooks.posts] == [
        "hafence: fencing node 'node1' still in progress",
        "hafence: node 'node1' fenced",
    ]
