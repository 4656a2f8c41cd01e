"""The lab's etcd cluster: one member per node, inside the node's namespace.

Members listen on the node's address (client :2379, peer :2380) and keep their data in
the node's state directory, so a node that boots again restarts its member from its
own data and it rejoins. Compaction and quota follow docs/daemons.md: revisions older
than the retention are compacted automatically, and the backend quota is explicit, so
a lab that writes too much fails loudly ("database space exceeded") instead of
filling the disk. Pre-vote is on (see :func:`member_argv`).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from hafence.lab.layout import Layout
from hafence.lab.timings import LabTimings

AUTO_COMPACTION = ("periodic", "5m")
QUOTA_BYTES = 512 * 1024 * 1024


def data_dir(layout: Layout, node: str) -> Path:
    return layout.node_dir(node) / "etcd"


def member_argv(layout: Layout, node: str, timings: LabTimings) -> list[str]:
    addr = layout.node_addr(node)
    cluster = ",".join(f"{n}=http://{layout.node_addr(n)}:2380" for n in layout.nodes)
    return [
        "etcd",
        f"--name={node}",
        f"--data-dir={data_dir(layout, node)}",
        f"--listen-client-urls=http://{addr}:2379",
        f"--advertise-client-urls=http://{addr}:2379",
        f"--listen-peer-urls=http://{addr}:2380",
        f"--initial-advertise-peer-urls=http://{addr}:2380",
        f"--initial-cluster={cluster}",
        f"--initial-cluster-token={layout.prefix}",
        "--initial-cluster-state=new",  # ignored once the data dir exists (a reboot)
        f"--heartbeat-interval={timings.etcd_heartbeat_ms}",
        f"--election-timeout={timings.etcd_election_ms}",
        f"--auto-compaction-mode={AUTO_COMPACTION[0]}",
        f"--auto-compaction-retention={AUTO_COMPACTION[1]}",
        f"--quota-backend-bytes={QUOTA_BYTES}",
        # A member cut off keeps campaigning and raising its term; without pre-vote its
        # return deposes the leader and the cluster has no leader for seconds - long
        # enough for every node's store calls to outlast the watchdog (etcd 3.4 default:
        # off; 3.5: on).
        "--pre-vote=true",
        "--snapshot-count=10000",  # bounds the raft log a member keeps in memory
        "--logger=zap",
    ]


def member_health(layout: Layout, node: str, timeout: float = 1.0) -> bool:
    """Whether the node's member answers and sees a leader (etcd's /health)."""
    url = f"http://{layout.node_addr(node)}:2379/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read()).get("health") == "true"
    except (OSError, ValueError):
        return False


def leader(layout: Layout, timeout: float = 1.0) -> str | None:
    """The node whose etcd member says it leads (etcd's maintenance status); None when
    none does."""
    for node in layout.nodes:
        url = f"http://{layout.node_addr(node)}:2379/v3/maintenance/status"
        try:
            req = urllib.request.Request(url, data=b"{}", method="POST")
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                st = json.loads(resp.read())
        except (OSError, ValueError):
            continue
        if st.get("leader") and st.get("leader") == st.get("header", {}).get("member_id"):
            return node
    return None
