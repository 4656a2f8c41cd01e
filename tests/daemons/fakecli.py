"""Fake ``systemctl``/``qm``/``pct`` on PATH: the seam is the process boundary.

The script logs its argv to STATE/calls and answers from STATE/<id>: ``running``,
``stopped`` or anything else (``activating``, ``paused``: a state that is neither).
Ids listed in STATE/fail fail start/stop/shutdown/migrate; ids in STATE/missing do not
exist; ids in STATE/statusfail make every status query fail; ids in STATE/respawn come
back ``activating`` after a stop (systemd restarting a crash-looping unit); ids in
STATE/enabled are enabled at boot (``is-enabled``; for qm/pct ``onboot: 1`` in config).
STATE/<id>.conf adds lines to ``config``; STATE/<id>.verbose to ``status --verbose``;
STATE/<id>.props answers ``systemctl show --property=...`` (KEY=VALUE lines).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

FAKE = r"""#!/bin/sh
D="@STATE@"
echo "$(basename "$0") $*" >> "$D/calls"
[ "$1" = is-system-running ] && { echo "${FAKE_SYSTEM_STATE:-running}"; exit 0; }
sub="$1"; shift
id=""
for a in "$@"; do case "$a" in -*) ;; *) id="$a"; break;; esac; done
listed() { grep -qx "$id" "$D/$1" 2>/dev/null; }
if listed missing; then
  case "$sub" in show) echo not-found; exit 0;; *) echo "no such $id" >&2; exit 2;; esac
fi
case "$sub" in start|stop|shutdown|migrate)
  if listed fail; then echo "$sub $id: something broke" >&2; exit 1; fi
esac
case "$sub" in status|is-active)
  if listed statusfail; then echo "$sub $id: status unavailable" >&2; exit 1; fi
esac
case "$sub" in
  show) case "$*" in *--property=LoadState*|*--value*) echo loaded ;;
     *) cat "$D/$id.props" 2>/dev/null || true ;; esac ;;
  config) echo "name: x"; if listed enabled; then echo "onboot: 1"; fi
     cat "$D/$id.conf" 2>/dev/null || true ;;
  is-enabled) if listed enabled; then echo enabled; else echo disabled; exit 1; fi ;;
  status) echo "status: $(cat "$D/$id" 2>/dev/null || echo stopped)"
     case "$*" in *--verbose*) cat "$D/$id.verbose" 2>/dev/null || true ;; esac ;;
  is-active) s=$(cat "$D/$id" 2>/dev/null || echo stopped)
     case "$s" in running) echo active; exit 0;; stopped) echo inactive; exit 3;;
       *) echo "$s"; exit 3;; esac ;;
  start) echo running > "$D/$id" ;;
  stop|shutdown|migrate) if listed respawn; then echo activating > "$D/$id";
     else echo stopped > "$D/$id"; fi ;;
  *) echo "unknown $sub" >&2; exit 1 ;;
esac
"""


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the fake commands first on PATH; returns the state directory."""
    state = tmp_path / "fake-state"
    state.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("systemctl", "qm", "pct"):
        p = bindir / name
        p.write_text(FAKE.replace("@STATE@", str(state)))
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return state


def calls(state: Path) -> list[str]:
    path = state / "calls"
    return path.read_text().splitlines() if path.exists() else []


def put(state: Path, listname: str, *ids: str) -> None:
    """Add ids to one of the lists (fail, missing, statusfail, respawn, enabled)."""
    with open(state / listname, "a") as f:
        f.writelines(f"{i}\n" for i in ids)
