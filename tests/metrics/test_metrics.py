"""Prometheus metrics of the running daemons (tests/daemons' 3-node harness with ipmi_sim):
``curl`` on the master CRM's endpoint shows the fence of node1 and its duration."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hafence.metrics import parse_address
from tests.daemons.test_daemons_e2e import NODES, SID, Cluster, _bring_up, cluster, wait_for

__all__ = ["cluster"]

_SERVING = re.compile(r"metrics: serving http://127\.0\.0\.1:(\d+)/metrics")


def test_address_is_loopback_unless_told_otherwise() -> None:
    assert parse_address("9559") == ("127.0.0.1", 9559)
    assert parse_address(":9559") == ("127.0.0.1", 9559)
    assert parse_address("0.0.0.0:9559") == ("0.0.0.0", 9559)
    assert parse_address("[::1]:9559") == ("::1", 9559)
    for bad in ("web", "127.0.0.1:http", "70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``curl`` the endpoint (urllib where curl is missing) -> {(name, labels): value}."""
    url = f"http://127.0.0.1:{port}/metrics"
    if shutil.which("curl"):
        text = subprocess.run(["curl", "-sf", url], capture_output=True, text=True,
                              timeout=30, check=True).stdout  # fmt: skip
    else:
        text = urllib.request.urlopen(url, timeout=30).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def port_of(c: Cluster, node: str, role: str) -> int:
    m = _SERVING.search((c.tmp / f"{node}-{role}.log").read_text(errors="replace"))
    assert m, f"{node}/{role} does not serve metrics"
    return int(m.group(1))


def value(samples: dict, name: str, **labels: str) -> float | None:
    want = set(labels.items())
    found = [v for (n, lab), v in samples.items() if n == name and want <= set(lab)]
    return sum(found) if found else None


def test_metrics_show_the_fence_and_its_duration(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cluster
    monkeypatch.setenv("HAFENCE_METRICS", "127.0.0.1:0")  # each daemon: a free port of its own
    _bring_up(c, c.bmc.password)
    lrm1 = scrape(port_of(c, "node1", "lrm"))
    assert value(lrm1, "hafence_daemon_status", node="node1", role="lrm", status="active") == 1
    assert value(lrm1, "hafence_watchdog_armed", node="node1", role="lrm") == 0  # --no-watchdog
    assert value(lrm1, "hafence_round_duration_seconds_count", role="lrm") >= 1

    c.kill_daemons("node1")
    wait_for(lambda: c.where() not in (None, "node1"), 60, f"{SID} to be recovered")
    master = next(n for n in NODES[1:] if "FENCE: Try to fence node 'node1'" in
                  (c.tmp / f"{n}-crm.log").read_text(errors="replace"))  # fmt: skip
    new_node = c.where()
    port = port_of(c, master, "crm")

    def seen() -> dict:
        s = scrape(port)
        ok = value(s, "hafence_service_state", sid=SID, state="started", service_node=new_node)
        return s if ok else {}

    wait_for(lambda: seen(), 30, "the master's metrics to show the service recovered")
    s = scrape(port)
    fence = {"target": "node1", "device": "bmc1", "driver": "ipmi", "action": "off",
             "result": "ok"}  # fmt: skip
    assert value(s, "hafence_fence_attempts_total", **fence) == 1
    assert value(s, "hafence_fence_duration_seconds_count", **fence) == 1
    duration = value(s, "hafence_fence_duration_seconds_sum", **fence)
    assert duration is not None and 0 < duration < 60
    assert value(s, "hafence_fences_total", target="node1", result="ok") == 1
    assert value(s, "hafence_master", master=master) == 1
    assert value(s, "hafence_lock_holder", lock="ha_manager_lock", owner=master) == 1
    assert value(s, "hafence_lock_holder", lock="ha_agent_node1_lock", owner=master) == 1
    assert value(s, "hafence_node_state", node_name=new_node, state="online") == 1
    assert value(s, "hafence_daemon_status", node=master, role="crm", status="master") == 1
    assert value(s, "hafence_round_duration_seconds_count", node=master, role="crm") >= 1
    assert value(s, "hafence_quorate", node=master, role="crm") == 1
    # only one state per service: the old one is gone
    assert value(s, "hafence_service_state", sid=SID, service_node="node1") is None
    assert c.bmc.password not in "".join(map(str, s))


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hafence.daemons import crm_cli

    r = CliRunner().invoke(crm_cli, ["--help"])
    assert "--metrics [HOST:]PORT" in r.output and "off unless given" in r.output
