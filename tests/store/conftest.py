"""Store test fixtures: a real etcd (one member, or three) and both backends by spec."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.store import Store, open_store
from tests.store.etcd_peer import etcd3, etcd_url

__all__ = ["etcd3", "etcd_url"]


@pytest.fixture(params=["embedded", pytest.param("etcd", marks=pytest.mark.peer("etcd"))])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """How to open the store: a directory, or an etcd URL with a cluster name of its own."""
    if request.param == "embedded":
        return str(tmp_path / "ha")
    url = request.getfixturevalue("etcd_url")
    return f"{url.replace('http://', 'etcd://')}/t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(spec: str) -> Iterator[Store]:
    s = open_store(spec)
    try:
        yield s
    finally:
        s.close()
