"""example_pdu behaviour beyond the conformance kit: what this PDU's protocol can do
wrong, and how the driver reports it."""

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from hafence_example_pdu.driver import ExamplePduDriver
from hafence_example_pdu.peer import PduServer

from hafence.errors import DeviceError, UnreachableError
from hafence.fence import Fencer
from hafence.fence.driver import PowerState


def run(coro):
    return asyncio.run(coro)


def test_off_and_on_reach_the_outlet(pdu: PduServer) -> None:
    driver = ExamplePduDriver(pdu.driver_options(outlet=2))
    run(driver.off())
    assert pdu.power(2) == "off" and pdu.power(1) == "on"  # only that outlet
    assert run(driver.status()) == PowerState.OFF
    run(driver.on())
    assert pdu.power(2) == "on"
    assert pdu.requests()[:3] == ["LOGIN admin ******", "OFF 2", "QUIT"]


def test_stuck_outlet_is_never_reported_off(pdu: PduServer) -> None:
    pdu.set_stuck(1)
    driver = ExamplePduDriver(pdu.driver_options(outlet=1, power_timeout=0.5))
    res = run(Fencer(retries=0).run_device(driver, "off", record=False))
    assert not res.ok and res.error_kind == "still_on" and pdu.power(1) == "on"


def test_unknown_outlet_is_a_device_error(pdu: PduServer) -> None:
    driver = ExamplePduDriver(pdu.driver_options(outlet=9))
    with pytest.raises(DeviceError, match="ERR outlet 9"):
        run(driver.status())


def test_refused_connection_is_unreachable(pdu: PduServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = ExamplePduDriver(pdu.driver_options(ipport=port))
    with pytest.raises(UnreachableError, match="refused"):
        run(driver.status())


@pytest.fixture
def not_a_pdu() -> Iterator[int]:
    """A TCP server that greets like something else (a web server, an SSH daemon...)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


def test_wrong_device_is_named(pdu: PduServer, not_a_pdu: int) -> None:
    driver = ExamplePduDriver(pdu.driver_options(ipport=not_a_pdu))
    with pytest.raises(DeviceError, match=r"not an Example PDU: 'SSH-2\.0"):
        run(driver.status())
