"""Helpers the driver test suites share: a Fencer over fence.cfg text, cfg arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hafence.fence import FenceHistory, Fencer, parse_fence_config
from hafence.plugins import PluginRegistry


def make_fencer(registry: PluginRegistry, text: str, tmp_path: Path, **kw: Any) -> Fencer:
    """A Fencer (no retries unless asked) over ``text``, history in ``tmp_path``."""
    cfg = parse_fence_config(text, str(tmp_path / "fence.cfg"))
    kw.setdefault("retries", 0)
    return Fencer(cfg, registry, FenceHistory(tmp_path / "history.jsonl"), actor="nodeA", **kw)


def cfg_args(options: dict[str, str]) -> str:
    """fence.cfg key=value arguments, every value single-quoted."""
    return " ".join(f"{k}='{v}'" for k, v in options.items())
