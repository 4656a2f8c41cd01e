"""The lab's network: one bridge, one namespace per node, cables, and the faults on them.

Each node is a network namespace with one interface, ``eth0``, the far end of a veth
pair whose near end (``<prefix>-nI``) is a port of the lab's bridge. The bridge holds
the host's address and, as extra addresses, the switch's and every BMC's: they live
outside the nodes, on the management side.

Faults are rendered per node, from scratch, every time one changes:

* blocked sources (partitions, also one-way): an nftables table ``inet hafence_lab`` in
  the node's namespace drops what arrives from them - silently, as a cut cable does, so
  peers see timeouts, not refusals;
* a lossy link: the same table drops a share of what leaves and arrives on ``eth0``;
* a slow link: ``tc netem`` delay on ``eth0`` where the kernel has ``sch_netem`` (not
  every kernel does: then only the loss applies, and the fault says so);
* a cable pulled (a switch port shut by ``snmp_ifmib``): the bridge port goes down.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from hafence.lab.layout import LabError, Layout

NFT_TABLE = "hafence_lab"


DUMP_TRIES = 5  # reads of a node's addresses that may be cut short in a row


def sh(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    """Run a command; its stdout. A failure raises LabError naming the command."""
    try:
        out = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from None
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {out.stderr.strip() or f'exit {out.returncode}'}")
    return out.stdout


def missing_tools(optional: bool = False) -> list[str]:
    """Commands the lab needs that are not installed (``optional``: nft too)."""
    need = ["ip", "nsenter", "etcd", "ipmi_sim", "tc"] + (["nft"] if optional else [])
    return [t for t in need if shutil.which(t) is None]


def netns_supported() -> str | None:
    """None if network namespaces can be created here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's 'ip' is not installed"
    probe = f"hlprobe{os.getpid()}"
    try:
        sh("ip", "netns", "add", probe)
    except LabError as exc:
        return f"cannot create a network namespace: {exc}"
    sh("ip", "netns", "del", probe, check=False)
    return None


def choose_subnet(prefix: str) -> str:
    """A /24 in 10.200.0.0-10.255.255.0 that no route or address of this host overlaps."""
    used = []
    for what in (["route", "show", "table", "all"], ["addr", "show"]):
        for entry in json.loads(sh("ip", "-j", "-4", *what) or "[]"):
            nets = [entry.get("dst")] + [
                f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])
            ]
            for net in nets:
                if net and net != "default":
                    used.append(ipaddress.ip_network(net, strict=False))
    start = int(prefix[2:], 16) % (56 * 256)
    for k in range(56 * 256):
        n = (start + k) % (56 * 256)
        cand = ipaddress.ip_network(f"10.{200 + n // 256}.{n % 256}.0/24")
        if not any(cand.overlaps(u) for u in used):
            return str(cand.network_address).rsplit(".", 1)[0]
    raise LabError("no free /24 in 10.200.0.0/13 for the lab")


def ns_inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_netns(inodes: Iterable[int]) -> dict[int, list[int]]:
    """``{netns inode: [pid...]}`` of every live process in those namespaces."""
    want = {f"net:[{i}]": i for i in inodes}
    found: dict[int, list[int]] = {i: [] for i in want.values()}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue  # gone, or a zombie (its namespaces are released)
        if link in want:
            found[want[link]].append(int(entry.name))
    return found


class Network:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._netem: bool | None = None

    def ns_path(self, node: str) -> str:
        return f"/run/netns/{self.layout.netns(node)}"

    def nsenter(self, node: str) -> list[str]:
        """argv prefix that runs a command inside the node's namespace."""
        return ["nsenter", f"--net={self.ns_path(node)}", "--"]

    def pids(self, node: str) -> list[int]:
        ino = ns_inode(self.ns_path(node))
        return [] if ino is None else pids_in_netns([ino])[ino]

    # -- build and tear down ---------------------------------------------------------------
    def create(self) -> None:
        lay = self.layout
        sh("ip", "link", "add", lay.bridge, "type", "bridge")
        extra = [lay.switch_addr] + [lay.bmc_addr(n) for n in lay.nodes]
        for addr in [lay.host_addr, *extra]:
            sh("ip", "addr", "add", f"{addr}/24", "dev", lay.bridge)
        sh("ip", "link", "set", lay.bridge, "up")
        for node in lay.nodes:
            ns = lay.netns(node)
            sh("ip", "netns", "add", ns)
            sh(
                "ip",
                "link",
                "add",
                lay.veth(node),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            sh("ip", "link", "set", lay.veth(node), "master", lay.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{lay.node_addr(node)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    # -- faults ------------------------------------------------------------------------------
    def _eth0_addrs(self, node: str, check: bool = True) -> list[str]:
        """The node's IPv4 addresses on eth0, as ``ADDR/PREFIXLEN``."""
        argv = ("ip", "-n", self.layout.netns(node), "-j", "-4", "addr", "show", "dev", "eth0")
        for _ in range(DUMP_TRIES):
            out = sh(*argv, check=False)  # a cut dump exits 1 too, with what it had
            if not out.strip():  # no such namespace or device: an error where it matters
                if check:
                    sh(*argv)  # raises, naming the failure
                return []
            try:
                data = json.loads(out)
            except json.JSONDecodeError:
                # a dump cut short while the node's addresses changed (an agent adding
                # one, a dying node losing them): ip prints what it had; ask again
                continue
            infos = [i for a in data for i in a.get("addr_info", [])]
            return [f"{i['local']}/{i['prefixlen']}" for i in infos]
        raise LabError(f"{' '.join(argv)}: no whole answer in {DUMP_TRIES} tries")

    def reset_addresses(self, node: str) -> None:
        """Only the node's own address on eth0, as after a boot: a dead machine answers
        for no service address (IPaddr2's) the namespace would otherwise keep."""
        own = f"{self.layout.node_addr(node)}/24"
        for addr in self._eth0_addrs(node):
            if addr != own:
                sh("ip", "-n", self.layout.netns(node), "addr", "del", addr, "dev", "eth0",
                   check=False)  # fmt: skip

    def addresses(self, node: str) -> list[str]:
        """The node's IPv4 addresses on eth0."""
        return [a.partition("/")[0] for a in self._eth0_addrs(node, check=False)]

    def set_link(self, node: str, up: bool) -> None:
        sh("ip", "link", "set", self.layout.veth(node), "up" if up else "down")

    def link_up(self, node: str) -> bool:
        out = sh("ip", "-j", "link", "show", self.layout.veth(node), check=False)
        try:
            return "UP" in json.loads(out)[0]["flags"]
        except (ValueError, IndexError, KeyError):
            return False

    def filter(self, node: str, blocked: Iterable[str], loss: int) -> None:
        """Drop what comes from ``blocked`` addresses, and ``loss`` % of eth0's traffic."""
        blocked = sorted(set(blocked))
        rules = {"input": [], "output": []}
        if blocked:
            rules["input"].append(f"ip saddr {{ {', '.join(blocked)} }} drop")
        if loss:
            rules["input"].append(f'iifname "eth0" numgen random mod 100 < {loss} drop')
            rules["output"].append(f'oifname "eth0" numgen random mod 100 < {loss} drop')
        script = f"add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
        if blocked or loss:
            script += f"table inet {NFT_TABLE} {{\n"
            for chain, body in rules.items():
                script += (
                    f"  chain {chain} {{\n    type filter hook {chain} priority 0; "
                    "policy accept;\n" + "".join(f"    {r}\n" for r in body) + "  }\n"
                )
            script += "}\n"
        if shutil.which("nft") is None:
            raise LabError("partitions and lossy links need nftables: apt install nftables")
        sh(*self.nsenter(node), "nft", "-f", "-", stdin=script)

    def netem_supported(self) -> bool:
        if self._netem is None:  # probed once, on the lab's own bridge
            try:
                sh("tc", "qdisc", "add", "dev", self.layout.bridge, "root", "netem", "delay", "1ms")
                self._netem = True
            except LabError:
                self._netem = False
            sh("tc", "qdisc", "del", "dev", self.layout.bridge, "root", check=False)
        return self._netem

    def delay(self, node: str, ms: int, jitter_ms: int = 0) -> bool:
        """netem delay on the node's eth0 (0: none); False if the kernel has no netem."""
        tc = ["tc", "-n", self.layout.netns(node), "qdisc"]
        if ms <= 0:
            sh(*tc, "del", "dev", "eth0", "root", check=False)
            return True
        if not self.netem_supported():
            return False
        sh(*tc, "replace", "dev", "eth0", "root", "netem", "delay", f"{ms}ms", f"{jitter_ms}ms")
        return True
