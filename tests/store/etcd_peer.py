"""Real etcd for the store tests: one member per module, or a 3-member cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers import etcd as peer


def _need_etcd() -> None:
    if not peer.available():
        pytest.skip("etcd binary not installed (apt install etcd-server)")


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One etcd member for the module (tests use cluster names of their own)."""
    _need_etcd()
    with peer.etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster.endpoints[0]


@pytest.fixture(scope="module")
def etcd3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peer.EtcdCluster]:
    """Three etcd members on loopback; a test that pauses a member resumes it."""
    _need_etcd()
    with peer.etcd_cluster(tmp_path_factory.mktemp("etcd3"), 3) as cluster:
        yield cluster
