"""Real etcd members on loopback for tests and benchmarks: 1..N members, optional TLS.

:func:`etcd_cluster` starts the members (Debian's ``etcd`` binary, free ports, data dirs
under the given directory), waits until every member answers, yields an
:class:`EtcdCluster` and kills them all afterwards, also when the test fails. A member can
be paused (SIGSTOP: the kernel still accepts connections, nothing answers: a hung
member), resumed, or killed (a dead member).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hafence.simdevices.procs import stop_group
from hafence.testing.netutil import closed_tcp_port

HOST = "127.0.0.1"


def available() -> bool:
    return shutil.which("etcd") is not None


@dataclass
class Tls:
    """Files for a TLS cluster: the CA, the server pair, and (when clients must show a
    certificate signed by the CA) a client pair for the readiness checks."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    scheme: str = "http"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"


@dataclass
class EtcdCluster:
    members: list[Member]
    tls: Tls | None = None
    paused: set[int] = field(default_factory=set)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def url(self, cluster: str, order: Sequence[int] | None = None) -> str:
        """``etcd://h:p,h:p/cluster`` (``etcds://`` with TLS), members in ``order``."""
        idx = range(len(self.members)) if order is None else order
        scheme = "etcds" if self.tls else "etcd"
        hosts = ",".join(f"{HOST}:{self.members[i].client_port}" for i in idx)
        return f"{scheme}://{hosts}/{cluster}"

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i``: connections are accepted, nothing is answered."""
        assert self.members[i].proc is not None
        os.kill(self.members[i].proc.pid, signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        assert self.members[i].proc is not None
        os.kill(self.members[i].proc.pid, signal.SIGCONT)
        self.paused.discard(i)

    def kill(self, i: int) -> None:
        proc = self.members[i].proc
        assert proc is not None
        if i in self.paused:
            self.resume(i)
        proc.kill()
        proc.wait()

    def leader(self) -> int:
        """Index of the member that leads now."""
        for i, m in enumerate(self.members):
            if i in self.paused or m.proc is None or m.proc.poll() is not None:
                continue
            try:
                st = _post(m.client_url + "/v3/maintenance/status", {}, self.tls, 2)
            except OSError:
                continue
            if st.get("leader") and st.get("leader") == st["header"].get("member_id"):
                return i
        raise RuntimeError("no etcd member leads")


def _ssl(tls: Tls | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    if tls.client_cert is not None:
        ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    return ctx


def _post(url: str, body: dict, tls: Tls | None, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=timeout, context=_ssl(tls)) as resp:
        return json.loads(resp.read() or b"{}")


def _start(m: Member, initial: str, token: str, tls: Tls | None, extra: Sequence[str]) -> None:
    # setpriv (util-linux, essential on Debian): the member dies with the test process,
    # even when that is killed and cannot run its clean-up
    death = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
    argv = [
        *death,
        "etcd",
        f"--name={m.name}",
        f"--data-dir={m.data_dir}",
        f"--listen-client-urls={m.client_url}",
        f"--advertise-client-urls={m.client_url}",
        f"--listen-peer-urls={m.peer_url}",
        f"--initial-advertise-peer-urls={m.peer_url}",
        f"--initial-cluster={initial}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={token}",  # the same for all: one cluster ID
        *extra,
    ]
    if tls is not None:
        argv += [f"--cert-file={tls.cert}", f"--key-file={tls.key}"]
        if tls.client_cert is not None:
            argv += ["--client-cert-auth", f"--trusted-ca-file={tls.ca}"]
    with open(m.log_path, "ab") as log:
        m.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _ready(cluster: EtcdCluster, deadline: float) -> bool:
    pending = list(cluster.members)
    while pending and time.monotonic() < deadline:
        m = pending[0]
        if m.proc is None or m.proc.poll() is not None:
            return False
        try:
            _post(m.client_url + "/v3/kv/range", {"key": "AA=="}, cluster.tls, 2)
            pending.pop(0)
        except OSError:
            time.sleep(0.1)
    return not pending


@contextlib.contextmanager
def etcd_cluster(
    tmp: Path,
    members: int = 1,
    *,
    tls: Tls | None = None,
    extra_args: Sequence[str] = (),
    start_timeout: float = 60.0,
) -> Iterator[EtcdCluster]:
    """Start ``members`` etcd members on loopback, yield the cluster, kill it afterwards."""
    if not available():
        raise RuntimeError("etcd binary not installed (apt install etcd-server)")
    last_log = ""
    for attempt in range(3):  # a port picked free can be taken by another test meanwhile
        ms = [
            Member(
                f"m{i}",
                closed_tcp_port(),
                closed_tcp_port(),
                tmp / f"etcd-{attempt}-{i}",
                tmp / f"etcd-{attempt}-{i}.log",
                "https" if tls else "http",
            )
            for i in range(members)
        ]
        cluster = EtcdCluster(ms, tls)
        initial = ",".join(f"{m.name}={m.peer_url}" for m in ms)
        try:
            for m in ms:
                _start(m, initial, f"hafence-test-{ms[0].client_port}", tls, extra_args)
            if _ready(cluster, time.monotonic() + start_timeout):
                yield cluster
                return
            last_log = "\n".join(m.log_path.read_text(errors="replace")[-1500:] for m in ms)
        finally:
            for i, m in enumerate(ms):
                if m.proc is not None:
                    if i in cluster.paused:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(m.proc.pid, signal.SIGCONT)
                    stop_group(m.proc, 0, None)
            for m in ms:
                shutil.rmtree(m.data_dir, ignore_errors=True)
    raise RuntimeError(f"etcd did not start:\n{last_log}")
