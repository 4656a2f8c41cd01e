"""Cutting a node's power kills its processes before its BMC answers "off".

The harnesses' watchers poll each BMC's power file every 50 ms and kill what ran on a
node that went off. On a loaded machine that thread can lag by a second or more, while
the master confirms the power-off and starts the service elsewhere within a few hundred
milliseconds: the old copy is then still alive, a double run that real power loss never
allows and the product did not cause. The simulated BMC's chassis program runs an
off-hook after a power-off and before it answers (hafence.simdevices), so the death is
ordered before any confirmation, as in hafence lab.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from hafence.simdevices.ipmi_sim import IpmiSim


def install(sim: IpmiSim, pid_files: str, unless: Path | None = None) -> None:
    """On power-off, SIGKILL every process named in the files matching the shell glob
    ``pid_files`` (first word of each line) that is still a hafence daemon or service
    (pids are checked against their command line, as they may have been reused); not
    while the file ``unless`` exists (a BMC that lies: it says off, the node runs on)."""
    hook = sim.power_file.with_name(sim.power_file.name + ".off-hook")
    hook.parent.mkdir(parents=True, exist_ok=True)
    skip = f"[ -e {shlex.quote(str(unless))} ] && exit 0\n" if unless else ""
    hook.write_text(
        "#!/bin/sh\n" + skip + f"for f in {pid_files}; do\n"
        '  [ -f "$f" ] || continue\n'
        '  while read -r p _ || [ -n "$p" ]; do\n'  # a pid file may lack its newline
        '    case "$(tr "\\0" " " 2>/dev/null < "/proc/$p/cmdline")" in\n'
        '      "hafence-dummy "*|*hafence.daemons*) kill -9 "$p" && echo "$p" >> "$0.killed" ;;\n'
        "    esac\n"
        '  done < "$f"\n'
        "done\n"
        "exit 0\n"
    )
    hook.chmod(0o700)


def killed(sim: IpmiSim) -> list[int]:
    """The pids the power cuts of ``sim`` killed so far."""
    path = sim.power_file.with_name(sim.power_file.name + ".off-hook.killed")
    try:
        return [int(w) for w in path.read_text().split()]
    except FileNotFoundError:
        return []
