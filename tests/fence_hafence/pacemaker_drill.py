"""Pacemaker's own fencer runs fence_hafence against a real BMC (ipmi_sim).

Run as root inside private mount, network and pid namespaces (``unshare --fork --pid
--kill-child --mount-proc -m -n python -m tests.fence_hafence.pacemaker_drill WORKDIR
AGENT``), so nothing leaks to the machine, even when the drill is killed:

* loopback of the new network namespace up; ipmi_sim listens there;
* ``/usr/sbin`` overlaid with a directory holding ``fence_hafence`` (Pacemaker looks for
  fence agents only there), visible to this process tree alone;
* ``pacemaker-fenced --stand-alone`` (no cluster, no CIB) and ``stonith_admin`` to
  register a device, query it and fence a node, exactly as a cluster would call the agent.

Prints one JSON object with what happened; the test asserts on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hafence.simdevices.ipmi_sim import IpmiSim

FENCED = "/usr/lib/pacemaker/pacemaker-fenced"


def _run(*argv: str, timeout: float = 120) -> dict[str, object]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    return {"rc": p.returncode, "out": p.stdout, "err": p.stderr}


def _wait_fenced(log: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the fencer answers on its IPC (stonith_admin -L succeeds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pacemaker-fenced exited: {log.read_text(errors='replace')}")
        if _run("stonith_admin", "-L", timeout=30)["rc"] == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("pacemaker-fenced did not answer")


def main(workdir: Path, agent: str) -> dict[str, object]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    sbin = workdir / "sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    wrapper = sbin / "fence_hafence"
    wrapper.write_text(f'#!/bin/sh\nexec {agent} "$@"\n')
    wrapper.chmod(0o755)
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={sbin}:/usr/sbin", "/usr/sbin"],
        check=True,
    )
    result: dict[str, object] = {}
    with IpmiSim(workdir=workdir / "bmc") as bmc:
        pw = workdir / "bmc.pw"
        pw.write_text(bmc.password + "\n")
        pw.chmod(0o600)
        log = workdir / "fenced.log"
        fenced = subprocess.Popen([FENCED, "--stand-alone", "-l", str(log)])
        try:
            _wait_fenced(log, fenced)
            result["metadata"] = _run("stonith_admin", "--metadata", "-a", "fence_hafence")
            opts = ["driver=ipmi", f"ip={bmc.host}", f"ipport={bmc.port}",
                    f"username={bmc.user}", f"password_file={pw}", "power_timeout=10"]  # fmt: skip
            o_args = [a for o in opts for a in ("-o", o)]
            result["validate"] = _run("stonith_admin", "--validate", "-a", "fence_hafence",
                                      *o_args)  # fmt: skip
            result["validate_bad"] = _run("stonith_admin", "--validate", "-a", "fence_hafence",
                                          *o_args, "-o", "lanplus=maybe")  # fmt: skip
            result["register"] = _run("stonith_admin", "-R", "bmc1", "-a", "fence_hafence",
                                      *o_args, "-o", "pcmk_host_list=node1")  # fmt: skip
            result["query_on"] = _run("stonith_admin", "-Q", "bmc1")
            result["power_before"] = bmc.power
            t0 = time.monotonic()
            result["fence"] = _run("stonith_admin", "-F", "node1", "--timeout", "60")
            result["fence_seconds"] = round(time.monotonic() - t0, 2)
            result["power_after"] = bmc.power
            result["power_calls"] = bmc.power_calls()
            result["history"] = _run("stonith_admin", "-H", "node1")
            result["unfence"] = _run("stonith_admin", "-U", "node1", "--timeout", "60")
            result["power_unfenced"] = bmc.power
            result["password"] = bmc.password
        finally:
            fenced.terminate()
            fenced.wait(timeout=30)
        result["fenced_log"] = log.read_text(errors="replace")
    return result


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("must run as root inside 'unshare -m -n'")
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2])))
