"""Scenario directories in Proxmox's HA regression-test format, run and compared.

A scenario holds ``hardware_status`` (JSON: node -> power/network), ``service_config``
(JSON: sid -> node/state/group/max_restart/max_relocate), optional ``groups``
(``groups.cfg`` syntax), ``rules_config`` (``rules.cfg`` syntax), ``manager_status``
(JSON), ``datacenter.cfg`` (JSON: ``{"ha": {"shutdown_policy": ...}}``), a ``cmdlist``
(JSON: a list of command lists, one per 100 s round) and ``log.expect``, the HA log the
reference implementation wrote. hafence adds fencing through simulated devices: an
optional ``fence.cfg`` (the real syntax, driver ``sim_power``, see
:mod:`hafence.sim.power`), an optional ``fence_devices`` (JSON: node -> ``{"fails": N}``,
one device of its own that fails N times first, -1 for always) and an optional
``fence_options`` (JSON: ``{"retries": N, "backoff": SECONDS}`` of each CRM's fencer;
default 0 retries: the CRM starts a new attempt every round).

Features outside hafence's scope (the CRS static/dynamic schedulers, resource-affinity
rules, HA group -> rule migration, disarming the HA stack) are detected up front:
:func:`unsupported_reason` names them so a test can count them separately.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hafence.errors import ConfigError
from hafence.ha.config import parse_groups, parse_rules
from hafence.sim.hardware import Hardware


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        if default is None:
            raise ConfigError("missing scenario file", file=str(path))
        return default
    text = path.read_text()
    if not text.strip():
        return default if default is not None else {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None


def unsupported_reason(scenario: Path) -> str | None:
    """Why hafence does not simulate this scenario (yet), or None when it does."""
    dc = _read_json(scenario / "datacenter.cfg", {})
    crs = dc.get("crs") or {}
    for opt in ("ha-auto-rebalance",):
        if crs.get(opt):
            return f"CRS option '{opt}' (rebalancing)"
    if (scenario / "groups").exists():
        return "HA group to rules migration (Proxmox 9 upgrade path)"
    return None


def load(scenario: Path | str, echo: Any = None) -> Hardware:
    """Build the simulated cluster a scenario directory describes."""
    d = Path(scenario)
    status = _read_json(d / "hardware_status")
    hw_status = {
        n: {**s, "power": s.get("power", "off"), "network": s.get("network", "off"),
            "shutdown": None}
        for n, s in status.items()
    }  # fmt: skip
    services = _read_json(d / "service_config", {})
    groups: dict[str, Any] = {}
    if (d / "groups").exists():
        groups = parse_groups((d / "groups").read_text(), str(d / "groups"))
    rules: dict[str, Any] = {}
    if (d / "rules_config").exists():
        rules = parse_rules((d / "rules_config").read_text(), str(d / "rules_config"))
    hw = Hardware(
        status=hw_status,
        service_config=services,
        groups=groups,
        rules=rules,
        datacenter=_read_json(d / "datacenter.cfg", {}),
        manager_status=_read_json(d / "manager_status", {}),
        service_stats=_read_json(d / "static_service_stats", {}),
        dynamic_stats=_read_json(d / "dynamic_service_stats", {}),
        cmdlist=_read_json(d / "cmdlist", []),
        echo=echo,
    )
    # hafence extension: fencing through simulated devices (hafence.sim.power)
    if (d / "fence.cfg").exists():
        hw.fencing.set_config((d / "fence.cfg").read_text())
    for node, dev in _read_json(d / "fence_devices", {}).items():  # {"node1": {"fails": 2}}
        if node not in hw_status:
            raise ConfigError(f"unknown node '{node}'", file=str(d / "fence_devices"))
        hw.add_fence_device(node, int(dev.get("fails", 0)))
    opts = _read_json(d / "fence_options", {})
    hw.fencing.retries = int(opts.get("retries", hw.fencing.retries))
    hw.fencing.backoff = float(opts.get("backoff", hw.fencing.backoff))
    return hw


def run(scenario: Path | str, echo: Any = None) -> str:
    """Run a scenario; returns the HA log text."""
    return load(scenario, echo).run()


def _normalize(line: str) -> str:
    return " ".join(line.split())


@dataclass
class Comparison:
    matched: bool
    diff: str
    log: str


def compare(scenario: Path | str) -> Comparison:
    """Run a scenario and diff its log against ``log.expect`` (column padding ignored)."""
    d = Path(scenario)
    log = run(d)
    want = [_normalize(x) for x in (d / "log.expect").read_text().splitlines() if x.strip()]
    got = [_normalize(x) for x in log.splitlines() if x.strip()]
    diff = "".join(
        f"{line}\n"
        for line in difflib.unified_diff(want, got, "log.expect", "hafence", lineterm="")
    )
    return Comparison(want == got, diff, log)
