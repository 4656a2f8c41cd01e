"""ocf:heartbeat:IPaddr2 through the ocf resource type, in private namespaces.

Run as root: ``unshare --fork --pid --kill-child --mount-proc -n python -m
tests.ocf.ipaddr2_drill WORKDIR``. A veth pair in a fresh network namespace stands for
the node's NIC; the agent adds and removes the service address there. Prints JSON.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

VIP = "192.0.2.50"


def addresses() -> str:
    return subprocess.run(["ip", "-o", "addr", "show", "dev", "hf0"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


def can_bind(addr: str) -> bool:
    """Only an address of this host can be bound: proof the service address is here."""
    with socket.socket() as s:
        try:
            s.bind((addr, 0))
        except OSError:
            return False
    return True


def main(workdir: Path) -> dict[str, object]:
    for cmd in (
        "ip link set lo up",
        "ip link add hf0 type veth peer name hf1",
        "ip link set hf1 up",
        "ip link set hf0 up",
        "ip addr add 192.0.2.1/24 dev hf0",
    ):
        subprocess.run(cmd.split(), check=True)  # fmt: skip
    cfg = workdir / "ocf.cfg"
    cfg.write_text(f"ocf: vip\n\tagent heartbeat:IPaddr2\n\tip {VIP}\n\tcidr_netmask 24\n"
                   "\tnic hf0\n")  # fmt: skip
    os.environ["HAFENCE_OCF_CFG"] = str(cfg)
    from hafence.ha.resources import load_resource_types

    rt = load_resource_types("node1", workdir / "state")["ocf"]
    out: dict[str, object] = {"before": rt.status("vip"), "bind_before": can_bind(VIP)}
    rt.start("vip")
    out.update(running=rt.status("vip"), addr_up=VIP in addresses(), bind_up=can_bind(VIP))
    rt.stop("vip", 20)
    out.update(after=rt.status("vip"), addr_after=VIP in addresses(), bind_after=can_bind(VIP))
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
