"""Where everything of one lab lives: names, addresses and paths.

A lab is identified by its state directory. Everything global it creates carries a
short prefix derived from that directory (``hl`` + 4 hex digits of a hash of its real
path): network namespaces ``<prefix>-node1``, links ``<prefix>-br`` / ``<prefix>-n1``,
the runtime directory ``/run/hafence-lab/<prefix>``. Two labs (two state directories)
never share a name, and a lab that crashed is found again by the same prefix.

Addresses, on the lab's own /24 (chosen free at ``up``, kept in ``lab.json``)::

    .1        the bridge: the host side, where the lab itself runs
    .2        the switch (an SNMP agent; one port per node, ifIndex = node number)
    .10+i     node i (its network namespace, its etcd member on :2379/:2380)
    .100+i    node i's BMC (ipmi_sim; outside the node, so a power-off cannot kill it)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hafence.errors import HafenceError
from hafence.store.atomic import write_atomic

MIN_NODES, MAX_NODES = 3, 7
RUN_ROOT = Path("/run/hafence-lab")
DEFAULT_DIR = Path("/var/lib/hafence/lab")
STATE_FILE = "lab.json"


class LabError(HafenceError):
    """The lab cannot do what was asked (missing tool, no lab, bad node...)."""


def default_state_dir() -> Path:
    return Path(os.environ.get("HAFENCE_LAB_DIR", DEFAULT_DIR))


def prefix_for(state_dir: Path) -> str:
    digest = hashlib.sha1(str(Path(state_dir).resolve()).encode()).hexdigest()
    return f"hl{digest[:4]}"


@dataclass(frozen=True)
class Layout:
    state_dir: Path
    prefix: str
    subnet: str  # the first three octets of the lab's /24, e.g. "10.231.7"
    nodes: tuple[str, ...]
    timings: str = "fast"
    cluster: str = "lab"  # the etcd key prefix of the HA state

    # -- persistence ---------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state_dir"] = str(self.state_dir)
        d["nodes"] = list(self.nodes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        return cls(**{**d, "state_dir": Path(d["state_dir"]), "nodes": tuple(d["nodes"])})

    @classmethod
    def load(cls, state_dir: Path) -> Layout:
        try:
            raw = json.loads((Path(state_dir) / STATE_FILE).read_text())
        except FileNotFoundError:
            raise LabError(f"no lab in {state_dir} (hafence lab up)") from None
        except ValueError as exc:
            raise LabError(f"{Path(state_dir) / STATE_FILE}: unreadable: {exc}") from None
        return cls.from_dict(raw["layout"])

    def save(self, **runtime: Any) -> None:
        """Write ``lab.json``: the layout and what the supervisor adds (pids, ports)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {"layout": self.to_dict(), **runtime}
        write_atomic(self.state_file, json.dumps(data, indent=1) + "\n", mode=0o644)

    def runtime(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        raw.pop("layout", None)
        return raw

    # -- names -----------------------------------------------------------------------------
    def index(self, node: str) -> int:
        try:
            return self.nodes.index(node) + 1
        except ValueError:
            known = ", ".join(self.nodes)
            raise LabError(f"no node '{node}' in this lab (nodes: {known})") from None

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    def netns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def veth(self, node: str) -> str:
        """The node's cable: the host end of its veth pair, a port of the bridge."""
        return f"{self.prefix}-n{self.index(node)}"

    # -- addresses ---------------------------------------------------------------------------
    @property
    def host_addr(self) -> str:
        return f"{self.subnet}.1"

    @property
    def switch_addr(self) -> str:
        return f"{self.subnet}.2"

    def node_addr(self, node: str) -> str:
        return f"{self.subnet}.{10 + self.index(node)}"

    def bmc_addr(self, node: str) -> str:  # 100 + index: below the service address
        return f"{self.subnet}.{100 + self.index(node)}"

    def etcd_endpoints(self, first: str | None = None) -> list[str]:
        order = sorted(self.nodes, key=lambda n: n != first)
        return [f"{self.node_addr(n)}:2379" for n in order]

    def store_url(self, first: str | None = None) -> str:
        """The HA store of the lab; a node's daemons ask their own member first."""
        return f"etcd://{','.join(self.etcd_endpoints(first))}/{self.cluster}"

    # -- paths ---------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """Runtime files (sockets): short paths, on /run like a real node's."""
        return RUN_ROOT / self.prefix

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    def node_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node

    def node_run_dir(self, node: str) -> Path:
        """The node's /run: emptied at every boot."""
        return self.run_dir / node

    def log_dir(self, node: str) -> Path:
        return self.node_dir(node) / "log"

    def mux_socket(self, node: str) -> Path:
        return self.node_run_dir(node) / "watchdog-mux.sock"

    def watchdog_state(self, node: str) -> Path:
        """The node's fake watchdog hardware (hafence.watchdog.fake state file)."""
        return self.node_run_dir(node) / "watchdog.json"

    def bmc_dir(self, node: str) -> Path:
        return self.state_dir / "bmc" / node

    @property
    def switch_dir(self) -> Path:
        return self.state_dir / "switch"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def fence_cfg(self) -> Path:
        return self.state_dir / "fence.cfg"

    @property
    def ocf_cfg(self) -> Path:
        """``ocf.cfg`` of every node: ``ocf:vip`` is IPaddr2 with :attr:`vip_addr`."""
        return self.state_dir / "ocf.cfg"

    @property
    def vip_addr(self) -> str:
        """The service address of ``ocf:vip``: it answers from the node that runs it."""
        return f"{self.subnet}.200"

    @property
    def writer_dir(self) -> Path:
        """The 'shared storage' of ``writer:`` services: outside every namespace."""
        return self.state_dir / "shared"

    @property
    def events_file(self) -> Path:
        return self.state_dir / "events.jsonl"

    @property
    def supervisor_log(self) -> Path:
        return self.state_dir / "supervisor.log"


VIP_SERVICE = "ocf:vip"


def ocf_cfg(layout: Layout) -> str:
    """The lab's ocf.cfg: ``ocf:vip``, a service address through resource-agents' IPaddr2."""
    return (
        f"ocf: {VIP_SERVICE.split(':', 1)[1]}\n\tagent heartbeat:IPaddr2\n"
        f"\tip {layout.vip_addr}\n\tcidr_netmask 24\n\tnic eth0\n"
    )
