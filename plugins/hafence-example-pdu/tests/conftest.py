"""Fixtures: a simulated Example PDU on loopback per test (stopped at teardown)."""

from collections.abc import Iterator

import pytest
from hafence_example_pdu.peer import PduServer

PASSWORD = "Pdu-s3cret!pw"


@pytest.fixture
def pdu() -> Iterator[PduServer]:
    with PduServer(password=PASSWORD, outlets=4) as server:
        yield server
