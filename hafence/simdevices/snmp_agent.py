"""A real SNMP agent on loopback with a writable IF-MIB ``ifAdminStatus``, for tests.

Why snmpsim (PyPI ``snmpsim``) and not net-snmp ``snmpd`` in a network namespace:

* snmpsim is a real SNMP engine (pysnmp's agent side): v1/v2c communities, a USM
  user with authPriv, report PDUs for wrong keys, GETBULK, noSuchInstance... so the
  driver meets the same protocol a switch speaks. Its ``writecache`` variation keeps
  SETs of ``ifAdminStatus`` in memory (no gdbm needed: without a ``file`` option the
  cache is a dict), and a ``vlist`` rejects values outside up/down/testing with
  ``wrongValue`` as an agent would.
* snmpd's IF-MIB mirrors the kernel's links, so a test would need its own network
  namespace with throw-away links: CAP_SYS_ADMIN (root only) and kernel modules. On
  the development machine ``ip link add d0 type dummy`` already fails ("Unknown
  device type": no dummy module; veth works). snmpsim needs nothing but a free UDP
  port and runs the same as root or not, so every engineer's test run can use it.
* Running as root: snmpsim drops to ``--process-user``, but under pyenv the
  interpreter lives in /root (mode 0700), so the dropped process can no longer import
  its lazily-loaded modules (dbm.dumb for the data index first). The agent listens
  on 127.0.0.1 (or the private address ``SnmpAgent(host=...)`` is given, as hafence
  lab's switch does), so it runs with ``SNMPSIM_ALLOW_ROOT=true`` instead.

Addressing: v1/v2c requests select the data file by community (``<community>.snmprec``).
v3 requests carry a context name, which real switches leave empty; snmpsim unregisters
pysnmp's default empty context and only serves it from a file named ``self.snmprec``,
so the same table is written there too (side effect: v2c with an empty community is
answered as well). The writecache is module-global and keyed by OID, so a SET made
through v2c is seen through v3 and the other way round.

Each agent is one process with its own state: a new agent starts from the port table
it is given. :func:`snmp_agent` always stops the process, also when the body raises,
and the process gets SIGTERM if its parent dies (PR_SET_PDEATHSIG).

API::

    with snmp_agent(ports=DEFAULT_PORTS, community="hafence-rw", ipv6=False) as agent:
        agent.host, agent.port                  # 127.0.0.1 and a free UDP port
        agent.driver_options("Gi1/0/1", version="2c" | "1" | "3")  # snmp_ifmib options
        agent.driver_options(1, read_only=True) # the read-only community (SET: noAccess)
        agent.driver_options(1, ipv6=True)      # over [::1]:agent.port6 (ipv6=True)
        agent.driver_options(1, version="3", user=EXTRA_V3_USERS[0])  # other USM users
        agent.cfg_args(version="3")             # fence.cfg "device" arguments
        agent.get_admin_status(1)               # 1 up / 2 down, read with a raw GET
        agent.set_requests()                    # [(oid, value)] of every SET received
        agent.restart(ports=...)                # a switch reboot (state reset)

``python -m hafence.simdevices.snmp_agent`` runs one until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api

HOST = "127.0.0.1"
HOST6 = "::1"
# snmpsim serves the empty SNMPv3 context (what switches use) from this file only.
V3_DATA_FILE = "self.snmprec"

SYS_DESCR = "hafence simulated switch (snmpsim)"
SYS_DESCR_OID = "1.3.6.1.2.1.1.1.0"
IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"

# snmpsim's log of a SET: "Request var-binds: OID=<value>, OID=<value>, flags: EXACT, SET"
_SET_LINE = re.compile(r"Request var-binds: (.*), flags: \w+, SET\s*$")
_BIND = re.compile(r"([\d.]+)=<([^>]*)>")

# snmprec type tags
_INT, _STR, _OID, _TICKS, _GAUGE = "2", "4", "6", "67", "66"


@dataclass(frozen=True)
class V3User:
    """An extra SNMPv3 USM user; no auth key means noAuthNoPriv, no priv key authNoPriv."""

    name: str
    auth_proto: str = "NONE"
    auth_key: str | None = None
    priv_proto: str = "NONE"
    priv_key: str | None = None

    @property
    def level(self) -> str:
        if self.priv_key:
            return "authPriv"
        return "authNoPriv" if self.auth_key else "noAuthNoPriv"

    def args(self) -> list[str]:
        out = [f"--v3-user={self.name}"]
        if self.auth_key:
            out += [f"--v3-auth-key={self.auth_key}", f"--v3-auth-proto={self.auth_proto}"]
        if self.priv_key:
            out += [f"--v3-priv-key={self.priv_key}", f"--v3-priv-proto={self.priv_proto}"]
        return out


# Besides the main authPriv user (SHA/AES): other protocols and security levels.
EXTRA_V3_USERS: tuple[V3User, ...] = (
    V3User("fence-sha256", "SHA256", "sha256-auth-key"),  # authNoPriv
    V3User("fence-sha512", "SHA512", "sha512-auth-key", "AES256", "aes256-priv-key"),
    V3User("fence-md5", "MD5", "md5-auth-key1", "DES", "des-priv-key1"),
    V3User("fence-noauth"),  # noAuthNoPriv
)


@dataclass(frozen=True)
class SimPort:
    """One interface of the simulated switch."""

    index: int
    descr: str
    name: str
    alias: str = ""
    admin: int = 1  # ifAdminStatus at start: 1 up, 2 down, 3 testing
    writable: bool = True  # False: a SET of ifAdminStatus gets notWritable


DEFAULT_PORTS: tuple[SimPort, ...] = (
    SimPort(1, "GigabitEthernet1/0/1", "Gi1/0/1", "node1"),
    SimPort(2, "GigabitEthernet1/0/2", "Gi1/0/2", "node2"),
    SimPort(3, "GigabitEthernet1/0/3", "Gi1/0/3", "node3", admin=2),
    SimPort(10, "Port-channel10", "Po10", "lab trunk", admin=3),
    SimPort(24, "GigabitEthernet1/0/24", "Gi1/0/24", "uplink (locked)", writable=False),
)


def snmprec(ports: Sequence[SimPort], *, read_only: bool = False) -> str:
    """The snmpsim data file for a switch with these ports (records sorted by OID).

    ``read_only``: the view of a read-only community - the same (shared) values, but
    every SET of ifAdminStatus is answered with noAccess.
    """
    rows: list[tuple[str, str, str]] = [
        ("1.3.6.1.2.1.1.1.0", _STR, SYS_DESCR),
        ("1.3.6.1.2.1.1.2.0", _OID, "1.3.6.1.4.1.8072.3.2.10"),
        ("1.3.6.1.2.1.1.3.0", _TICKS, "4242"),
        ("1.3.6.1.2.1.1.5.0", _STR, "hafence-sim-switch"),
        ("1.3.6.1.2.1.2.1.0", _INT, str(len(ports))),
    ]
    admin_tag = _INT + ":writecache"
    # writecache checks vlist before it stores a value: "< 1 or > 3" is wrongValue for
    # the writable view, every value noAccess for the read-only one and notWritable
    # for a locked port.
    refuse = {
        "read_only": "lt:99:noaccess:gt:0:noaccess",
        "locked": "lt:99:notwritable:gt:0:notwritable",
        "rw": "lt:1:wrongvalue:gt:3:wrongvalue",
    }
    for p in ports:
        i = p.index
        rows += [
            (f"1.3.6.1.2.1.2.2.1.1.{i}", _INT, str(i)),
            (f"1.3.6.1.2.1.2.2.1.2.{i}", _STR, p.descr),
            (f"1.3.6.1.2.1.2.2.1.3.{i}", _INT, "6"),  # ethernetCsmacd
            (f"1.3.6.1.2.1.2.2.1.5.{i}", _GAUGE, "1000000000"),
            (
                f"{IF_ADMIN_STATUS}.{i}",
                admin_tag,
                f"value={p.admin},vlist="
                + refuse["read_only" if read_only else "rw" if p.writable else "locked"],
            ),
            (f"1.3.6.1.2.1.2.2.1.8.{i}", _INT, "1" if p.admin == 1 else "2"),
            (f"1.3.6.1.2.1.31.1.1.1.1.{i}", _STR, p.name),
            (f"1.3.6.1.2.1.31.1.1.1.18.{i}", _STR, p.alias),
        ]
    rows.sort(key=lambda r: tuple(int(x) for x in r[0].split(".")))
    return "".join(f"{oid}|{tag}|{value}\n" for oid, tag, value in rows)


@dataclass
class SnmpAgent:
    """A simulated switch (one snmpsim process). ``driver_options()`` gives snmp_ifmib
    options to reach it; :meth:`restart` simulates a switch reboot."""

    community: str
    ro_community: str
    v3_user: str
    v3_auth_key: str
    v3_priv_key: str
    v3_auth_proto: str
    v3_priv_proto: str
    ports: tuple[SimPort, ...]
    workdir: Path
    start_timeout: float = 30.0
    host: str = HOST
    port: int = 0
    ipv6: bool = False  # also listen on [::1]:port6
    port6: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    def log_text(self) -> str:
        """What the agent logged: every request's var-binds, GET or SET."""
        return self.log_path.read_text(errors="replace")

    def set_requests(self) -> list[tuple[str, str]]:
        """(oid, value) of every SET the agent received, in order (from its log)."""
        out = []
        for line in self.log_text().splitlines():
            m = _SET_LINE.match(line)
            if m:
                out += [(oid, value) for oid, value in _BIND.findall(m.group(1))]
        return out

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, port: int | None = None, port6: int | None = None) -> None:
        """Start snmpsim on ``port`` (and ``port6`` with ipv6; default: free ones, retried
        if another process takes one first). The port table is written afresh: SET
        state starts over."""
        data_dir, cache_dir = self.workdir / "data", self.workdir / "cache"
        data_dir.mkdir(parents=True, exist_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        table = snmprec(self.ports)
        (data_dir / f"{self.community}.snmprec").write_text(table)
        (data_dir / V3_DATA_FILE).write_text(table)
        (data_dir / f"{self.ro_community}.snmprec").write_text(snmprec(self.ports, read_only=True))
        # unbuffered: snmpsim logs to stdout, and set_requests() reads that log at once
        env = dict(os.environ, SNMPSIM_ALLOW_ROOT="true", PYTHONUNBUFFERED="1")
        exe = _responder_exe()
        for _attempt in range(1 if port else 5):
            candidate = port or free_udp_port(self.host)
            candidate6 = (port6 or free_udp_port(HOST6)) if self.ipv6 else None
            with open(self.log_path, "ab") as log:
                proc = subprocess.Popen(
                    _command(exe, data_dir, cache_dir, candidate, candidate6, self),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            self.process = proc  # set before waiting, so stop() always finds it
            # snmpsim binds every endpoint before it serves any: IPv4 answering is enough
            if _wait_ready(proc, self.host, candidate, self.community, self.start_timeout):
                self.port, self.port6 = candidate, candidate6 or 0
                return
            self.stop()
        tail = self.log_text()[-2000:]
        raise RuntimeError(f"snmpsim did not start; log tail:\n{tail}")

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def restart(self, ports: Sequence[SimPort] | None = None) -> None:
        """A switch reboot: same address, state reset, optionally a new port table
        (e.g. re-numbered interfaces)."""
        if ports is not None:
            self.ports = tuple(ports)
        self.stop()
        self.start(self.port, self.port6 or None)

    def driver_options(
        self,
        plug: str | int,
        *,
        version: str = "2c",
        ipv6: bool = False,
        read_only: bool = False,
        user: V3User | None = None,
    ) -> dict[str, str]:
        """Options for the ``snmp_ifmib`` driver to reach this agent (v1, 2c or 3),
        over ::1 with ``ipv6`` (the agent must have been started with ipv6=True), with
        the read-only community with ``read_only``, as one of EXTRA_V3_USERS with
        ``user`` (version 3; the security level is then left to the driver)."""
        if ipv6 and not self.port6:
            raise ValueError("this agent does not listen on IPv6 (snmp_agent(ipv6=True))")
        host, port = (HOST6, self.port6) if ipv6 else (self.host, self.port)
        opts = {"ip": host, "ipport": str(port), "plug": str(plug)}
        if version == "3" and user is not None:
            opts |= {"snmp_version": "3", "username": user.name}
            if user.auth_key:
                opts |= {"password": user.auth_key, "snmp_auth_prot": user.auth_proto}
            if user.priv_key:
                opts |= {"snmp_priv_passwd": user.priv_key, "snmp_priv_prot": user.priv_proto}
        elif version == "3":
            opts |= {
                "snmp_version": "3",
                "username": self.v3_user,
                "password": self.v3_auth_key,
                "snmp_auth_prot": self.v3_auth_proto,
                "snmp_priv_prot": self.v3_priv_proto,
                "snmp_priv_passwd": self.v3_priv_key,
                "snmp_sec_level": "authPriv",
            }
        else:
            community = self.ro_community if read_only else self.community
            opts |= {"snmp_version": version, "community": community}
        return opts

    def cfg_args(self, *, version: str = "2c") -> str:
        """fence.cfg ``device`` arguments for this agent (the plug goes on ``connect``)."""
        opts = self.driver_options("", version=version)
        del opts["plug"]
        return " ".join(f"{k}='{v}'" for k, v in opts.items())

    def get_admin_status(self, index: int, timeout: float = 2.0) -> int | None:
        """Read ifAdminStatus.index with a plain v2c GET (independent of the driver)."""
        value = _raw_get(
            self.host, self.port, self.community, f"{IF_ADMIN_STATUS}.{index}", timeout
        )
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):  # noSuchInstance and friends
            return None


def free_udp_port(host: str = HOST) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _raw_get(host: str, port: int, community: str, oid: str, timeout: float) -> object | None:
    """One v2c GET over a plain socket; None when nothing answers within ``timeout``."""
    p = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    pdu = p.GetRequestPDU()
    p.apiPDU.set_defaults(pdu)
    p.apiPDU.set_varbinds(pdu, [(p.ObjectIdentifier(oid), p.Null(""))])
    msg = p.Message()
    p.apiMessage.set_defaults(msg)
    p.apiMessage.set_community(msg, community)
    p.apiMessage.set_pdu(msg, pdu)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(encoder.encode(msg), (host, port))
        try:
            data, _ = s.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
    rsp, _ = decoder.decode(data, asn1Spec=p.Message())
    binds = p.apiPDU.get_varbinds(p.apiMessage.get_pdu(rsp))
    return binds[0][1] if binds else None


def _command(
    exe: str, data_dir: Path, cache_dir: Path, port: int, port6: int | None, agent: SnmpAgent
) -> list[str]:
    # Engine options follow --v3-engine-id: snmpsim starts a new engine config at it.
    v6 = [f"--agent-udpv6-endpoint=[{HOST6}]:{port6}"] if port6 else []
    return [
        exe,
        f"--cache-dir={cache_dir}",
        "--log-level=info",
        "--v3-engine-id=auto",
        f"--data-dir={data_dir}",
        f"--agent-udpv4-endpoint={agent.host}:{port}",
        *v6,
        f"--v3-user={agent.v3_user}",
        f"--v3-auth-key={agent.v3_auth_key}",
        f"--v3-auth-proto={agent.v3_auth_proto}",
        f"--v3-priv-key={agent.v3_priv_key}",
        f"--v3-priv-proto={agent.v3_priv_proto}",
        *[arg for user in EXTRA_V3_USERS for arg in user.args()],
    ]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the process that started us dies (Linux), so a
    crashed or killed test run leaves no agent behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _responder_exe() -> str:
    exe = shutil.which("snmpsim-command-responder")
    if exe:
        return exe
    beside = Path(sys.executable).with_name("snmpsim-command-responder")
    if beside.exists():
        return str(beside)
    raise RuntimeError("snmpsim-command-responder not found: pip install snmpsim pysmi")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextlib.contextmanager
def snmp_agent(
    *,
    ports: Sequence[SimPort] = DEFAULT_PORTS,
    community: str = "hafence-rw",
    ro_community: str = "hafence-ro",
    v3_user: str = "fenceadmin",
    v3_auth_key: str = "auth-secret-42",
    v3_priv_key: str = "priv-secret-42",
    v3_auth_proto: str = "SHA",
    v3_priv_proto: str = "AES",
    workdir: str | os.PathLike[str] | None = None,
    start_timeout: float = 30.0,
    ipv6: bool = False,
) -> Iterator[SnmpAgent]:
    """Start a simulated switch on 127.0.0.1 at a free UDP port (and on ::1 too with
    ``ipv6``); stop it on exit.

    ``workdir`` keeps data, index and log there (e.g. pytest's ``tmp_path``); by
    default a temporary directory is used and removed afterwards.
    """
    own_dir = workdir is None
    base = Path(tempfile.mkdtemp(prefix="hafence-snmpsim-") if own_dir else workdir)
    base.mkdir(parents=True, exist_ok=True)
    agent = SnmpAgent(
        community=community,
        ro_community=ro_community,
        v3_user=v3_user,
        v3_auth_key=v3_auth_key,
        v3_priv_key=v3_priv_key,
        v3_auth_proto=v3_auth_proto,
        v3_priv_proto=v3_priv_proto,
        ports=tuple(ports),
        workdir=base,
        start_timeout=start_timeout,
        ipv6=ipv6,
    )
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)


def _wait_ready(
    proc: subprocess.Popen[bytes], host: str, port: int, community: str, bound: float
) -> bool:
    """Poll with GET sysDescr until the agent answers; False if it exits or never answers."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if _raw_get(host, port, community, SYS_DESCR_OID, 0.2) is not None:
                return True
        except OSError:
            pass
    return False


if __name__ == "__main__":  # manual use: python -m hafence.simdevices.snmp_agent
    # SIGTERM as Ctrl-C, so the agent process is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with snmp_agent() as agent:
        print(
            f"snmpsim on {agent.host}:{agent.port} community={agent.community} "
            f"v3 user={agent.v3_user}; Ctrl-C stops it",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            assert agent.process is not None
            agent.process.wait()
