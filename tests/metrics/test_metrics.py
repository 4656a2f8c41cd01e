"""Prometheus metrics: the address rule, and helpers to scrape running daemons. The end
to end check (``curl`` on the master CRM shows a fence of node1 and its duration) shares
its cluster with the notification test: tests/notify/test_notify_daemons.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hafence.metrics import parse_address
from tests.daemons.test_daemons_e2e import Cluster

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


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hafence.daemons import crm_cli

    r = CliRunner().invoke(crm_cli, ["--help"])
    assert "--metrics [HOST:]PORT" in r.output and "off unless given" in r.output
