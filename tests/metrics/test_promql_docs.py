"""Every PromQL query in docs/operators.md parses (Prometheus' grammar) and uses only
metrics the daemons export."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser

from hafence.metrics import Metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "operators.md"
_NAME = re.compile(r"\bhafence_[a-z_]+\b")


def queries() -> list[str]:
    blocks = re.findall(r"```promql\n(.*?)```", DOC.read_text(), re.S)
    return [ln for b in blocks for ln in b.splitlines() if ln.strip() and not ln.startswith("#")]


def test_doc_queries_parse_and_name_real_metrics() -> None:
    exported = set()
    for family in Metrics("n", "crm").registry.collect():
        exported |= {family.name, f"{family.name}_total"}
        exported |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
    qs = queries()
    assert len(qs) >= 8
    for q in qs:
        promql_parser.parse(q)  # raises ValueError on a syntax error
        unknown = set(_NAME.findall(q)) - exported
        assert not unknown, f"{q}: no such metric {unknown}"
