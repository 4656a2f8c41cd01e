"""The lab's physics log: what happened to the machines, one JSON line per event.

``{"t": <unix time>, "event": "power_off", "node": "node2", ...}``. The supervisor writes
it (boots, deaths and why, links, faults applied and healed); the chaos checker reads
it to know which node was dead, cut off or frozen when.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def records(path: Path, event: str) -> list[dict[str, Any]]:
    """Every record of one kind in the log at ``path``, oldest first."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    marker = f'"{event}"'  # most lines are other events: parse only the candidates
    out = [json.loads(line) for line in lines if marker in line]
    return [rec for rec in out if rec.get("event") == event]


class EventLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def add(self, event: str, node: str | None = None, **extra: Any) -> dict[str, Any]:
        rec = {"t": round(time.time(), 3), "event": event, "node": node, **extra}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(rec) + "\n").encode())
        finally:
            os.close(fd)
        return rec

    def read_new(self) -> list[dict[str, Any]]:
        """Events appended since the last call (whole lines only)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]
