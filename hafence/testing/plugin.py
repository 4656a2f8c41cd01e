"""pytest plugin shipped with hafence (entry point ``pytest11``): the conformance kit.

Loaded in every pytest run where hafence is installed, so it stays cheap: it marks the
kit's modules for assertion rewriting, adds the ``conformance`` marker to every check
of a :class:`hafence.testing.DriverConformance` subclass (``pytest -m conformance``)
and provides loopback fixtures for the time-out checks:

``closed_tcp_port``   a TCP port on 127.0.0.1 nobody listens on (connection refused)
``closed_udp_port``   a UDP port on 127.0.0.1 nobody listens on (silence)
``silent_tcp_port``   a TCP port on 127.0.0.1 that accepts connections and never answers
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("hafence.testing.conformance")

from hafence.testing.netutil import SilentTcpServer, closed_tcp_port, closed_udp_port  # noqa: E402

MARKER = "conformance"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: a hafence driver conformance check (hafence.testing)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and any(
            base.__module__ == "hafence.testing.conformance"
            and base.__name__ == "DriverConformance"
            for base in cls.__mro__
        ):
            item.add_marker(MARKER)


@pytest.fixture(name="closed_tcp_port")
def _closed_tcp_port() -> int:
    return closed_tcp_port()


@pytest.fixture(name="closed_udp_port")
def _closed_udp_port() -> int:
    return closed_udp_port()


@pytest.fixture(name="silent_tcp_port")
def _silent_tcp_port() -> Iterator[int]:
    with SilentTcpServer() as server:
        yield server.port
