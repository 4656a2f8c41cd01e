"""A real etcd on loopback for tests: free ports, a temp data dir, killed on teardown."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_etcd(tmp: Path) -> Iterator[str]:
    """Start etcd, wait until it answers, yield its client URL, kill it."""
    if not shutil.which("etcd"):
        pytest.skip("etcd binary not installed (apt install etcd-server)")
    for _attempt in range(3):  # a port picked free can be taken by another test meanwhile
        client, peer = _free_port(), _free_port()
        url = f"http://127.0.0.1:{client}"
        log = open(tmp / "etcd.log", "wb")
        proc = subprocess.Popen(
            [
                "etcd",
                "--name=t",
                f"--data-dir={tmp / 'etcd-data'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=t=http://127.0.0.1:{peer}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            up = False
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    req = urllib.request.Request(url + "/v3/kv/range", data=b'{"key":"AA=="}')
                    urllib.request.urlopen(req, timeout=1).read()
                    up = True
                    break
                except OSError:
                    time.sleep(0.1)
            if up:
                yield url
                return
        finally:
            proc.kill()
            proc.wait()
            log.close()
        shutil.rmtree(tmp / "etcd-data", ignore_errors=True)
    raise RuntimeError(f"etcd did not start: {(tmp / 'etcd.log').read_text()[-2000:]}")


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_etcd(tmp_path_factory.mktemp("etcd")) as url:
        yield url
