"""``hafence lab down``'s sweep: remove everything a lab made, also after a crash.

Found by name, not only by the state file, so a supervisor that died mid-build leaves
nothing behind either: processes inside the lab's namespaces or naming its
directories on their command line, namespaces and links named ``<prefix>-*``, their
mounts under /run/netns, the runtime directory and the state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

from hafence.lab.layout import RUN_ROOT, STATE_FILE, prefix_for
from hafence.lab.network import ns_inode, pids_in_netns, sh

SUPERVISOR_MODULE = "hafence.lab.supervisor"
ORPHAN_HINT = "state-dir"  # in a lab's runtime directory: its state directory
_PREFIX = re.compile(r"^(hl[0-9a-f]{4})(?:-|$)")


def _ancestors() -> set[int]:
    """This process and its parents: never swept (their argv may name the lab)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def _naming(markers: list[str]) -> dict[int, str]:
    """Processes whose command line or environment contains one of ``markers`` (a
    node's processes, services included, inherit the lab's HAFENCE_WRITER_DIR)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
            env = Path(f"/proc/{entry.name}/environ").read_bytes()
        except OSError:
            continue
        text = cmd.decode(errors="replace")
        if any(m in text or m.encode() in env for m in markers):
            found[int(entry.name)] = text.strip()
    return found


def _namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    try:
        links = json.loads(sh("ip", "-j", "link", "show", check=False) or "[]")
    except ValueError:
        return []
    return [name for ln in links if (name := ln.get("ifname", ""))]


def lab_namespaces(prefix: str) -> list[str]:
    return [n for n in _namespaces() if n.startswith(f"{prefix}-")]


def lab_links(prefix: str) -> list[str]:
    return [n for n in _links() if n.startswith(f"{prefix}-")]


def lab_mounts(prefix: str) -> list[str]:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    return [f.split()[1] for f in lines if f.split()[1].startswith(f"/run/netns/{prefix}-")]


def sweep(state_dir: Path, prefix: str, *, keep_state: bool = False) -> list[str]:
    """Remove every trace of the lab; what was found (empty: nothing was left)."""
    found: list[str] = []
    namespaces = lab_namespaces(prefix)
    inodes = [i for ns in namespaces if (i := ns_inode(f"/run/netns/{ns}")) is not None]
    markers = [str(state_dir.resolve()) + "/", str(RUN_ROOT / prefix) + "/"]
    protect = _ancestors()
    reported: set[int] = set()
    for _ in range(50):
        victims = {p: "" for pids in pids_in_netns(inodes).values() for p in pids}
        victims.update(_naming(markers))
        for pid in protect:
            victims.pop(pid, None)
        if not victims:
            break
        for pid, cmd in victims.items():
            if pid not in reported:
                reported.add(pid)
                found.append(f"process {pid} {cmd[:100]}".rstrip())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    for ns in namespaces:
        found.append(f"netns {ns}")
        sh("ip", "netns", "del", ns, check=False)
    for link in lab_links(prefix):
        found.append(f"link {link}")
        sh("ip", "link", "del", link, check=False)
    for mnt in lab_mounts(prefix):
        found.append(f"mount {mnt}")
        sh("umount", "-l", mnt, check=False)
        with contextlib.suppress(OSError):
            os.unlink(mnt)
    run_dir = RUN_ROOT / prefix
    if run_dir.exists():
        found.append(f"dir {run_dir}")
        shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        RUN_ROOT.rmdir()  # only when no other lab uses it
    # only a lab's own directory (lab.json is the first thing a lab writes there): a
    # mistyped --dir must never cost anyone their files
    if not keep_state and (state_dir / STATE_FILE).exists():
        shutil.rmtree(state_dir, ignore_errors=True)
    return found


def leftovers(state_dir: Path, prefix: str) -> list[str]:
    """What of the lab still exists (``down`` checks it is nothing)."""
    out = [f"netns {n}" for n in lab_namespaces(prefix)]
    out += [f"link {n}" for n in lab_links(prefix)]
    out += [f"mount {m}" for m in lab_mounts(prefix)]
    markers = [str(state_dir.resolve()) + "/", str(RUN_ROOT / prefix) + "/"]
    protect = _ancestors()
    out += [f"process {p} {c[:100]}" for p, c in _naming(markers).items() if p not in protect]
    if (RUN_ROOT / prefix).exists():
        out.append(f"dir {RUN_ROOT / prefix}")
    return out


def live_prefixes() -> set[str]:
    """The labs whose supervisor runs (``python -m hafence.lab.supervisor STATE_DIR``)."""
    out = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        words = argv.split("\0")
        if SUPERVISOR_MODULE not in words[:-1]:
            continue
        state_dir = Path(words[words.index(SUPERVISOR_MODULE) + 1])
        if not state_dir.is_absolute():
            with contextlib.suppress(OSError):
                state_dir = Path(os.readlink(f"/proc/{entry.name}/cwd")) / state_dir
        out.add(prefix_for(state_dir))
    return out


def orphans() -> list[str]:
    """Labs whose supervisor is gone (killed with its test, say) that left namespaces,
    links or a runtime directory behind."""
    names = [p.name for p in RUN_ROOT.iterdir()] if RUN_ROOT.is_dir() else []
    names += _namespaces() + _links()
    found = {m.group(1) for n in names if (m := _PREFIX.match(n))}
    return sorted(found - live_prefixes())


def sweep_orphan(prefix: str) -> list[str]:
    """Sweep a lab whose supervisor is gone: by its names, and by its state directory
    where its runtime directory still says which (its devices' processes name it)."""
    if prefix in live_prefixes():
        return []  # came back to life (or was only starting): its supervisor tears it down
    # unknown state directory: the runtime directory's own markers only
    return sweep(orphan_state_dir(prefix) or RUN_ROOT / prefix, prefix)


def orphan_state_dir(prefix: str) -> Path | None:
    """The state directory a lab's runtime directory names, if it still does."""
    try:
        hint = Path((RUN_ROOT / prefix / ORPHAN_HINT).read_text().strip())
    except OSError:
        return None
    return hint if hint.is_absolute() and prefix_for(hint) == prefix else None
