"""Defective drivers for the kit's own test (test_kit_catches.py runs this module in a
pytest subprocess; its name keeps it out of normal collection).

Each class breaks one rule of the driver contract on top of the example PDU driver and
runs only the checks that rule concerns; every one of them must FAIL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from hafence_example_pdu.driver import ExamplePduDriver
from hafence_example_pdu.peer import PduServer

from hafence.errors import AuthError, DeviceError
from hafence.fence.driver import Param, PowerState
from hafence.testing import CHECKS, DriverConformance

PASSWORD = "Case-s3cret!pw"
log = logging.getLogger("kit_cases")


def only(*names: str) -> dict[str, str]:
    return {c: "not what this case breaks" for c in CHECKS if c not in names}


class Base(DriverConformance):
    timeout_margin = 2.0

    @pytest.fixture
    def pdu(self) -> Iterator[PduServer]:
        with PduServer(password=PASSWORD, outlets=2) as server:
            yield server

    @pytest.fixture
    def device_options(self, pdu: PduServer) -> dict[str, Any]:
        return pdu.driver_options(outlet=1, power_timeout=0.5)

    @pytest.fixture
    def device_power(self, pdu: PduServer):
        return lambda: pdu.power(1)

    @pytest.fixture
    def unreachable_options(self, pdu: PduServer, silent_tcp_port: int) -> dict[str, Any]:
        return pdu.driver_options(outlet=1, ipport=silent_tcp_port)


# -- secrets --------------------------------------------------------------------------
class LeakyErrorDriver(ExamplePduDriver):
    async def status(self) -> PowerState:
        try:
            return await super().status()
        except AuthError:
            raise AuthError(f"login refused with {self.options['password'].reveal()}") from None


class TestLeakyError(Base):
    driver = LeakyErrorDriver
    skip_checks = only("credentials")


class LeakyLogDriver(ExamplePduDriver):
    async def status(self) -> PowerState:
        log.debug("status as %s/%s", self.options["username"], self.options["password"].reveal())
        return await super().status()


class TestLeakyLog(Base):
    driver = LeakyLogDriver
    skip_checks = only("status")


class LeakyReprDriver(ExamplePduDriver):
    def __repr__(self) -> str:
        return f"<pdu {self.options['ip']} pw={self.options['password'].reveal()}>"


class TestLeakyRepr(Base):
    driver = LeakyReprDriver
    skip_checks = only("secrets")


# -- errors and time-outs -----------------------------------------------------------------
class WrongErrorDriver(ExamplePduDriver):
    async def status(self) -> PowerState:
        try:
            return await super().status()
        except AuthError as exc:
            raise DeviceError(str(exc)) from None


class TestWrongError(Base):
    driver = WrongErrorDriver
    skip_checks = only("credentials")


class RawOSErrorDriver(ExamplePduDriver):
    async def status(self) -> PowerState:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.options["ip"], self.options["ipport"]), 1
        )
        try:  # the raw TimeoutError escapes instead of a FenceTimeoutError
            await asyncio.wait_for(reader.readline(), self.options["timeout"])
        finally:
            writer.close()
        raise AssertionError("the silent port answered")


class TestRawOSError(Base):
    driver = RawOSErrorDriver
    skip_checks = only("unreachable")


class NoTimeoutDriver(ExamplePduDriver):
    async def status(self) -> PowerState:
        await asyncio.sleep(self.options["timeout"] + 3.0)  # past timeout + margin
        return await super().status()


class TestNoTimeout(Base):
    driver = NoTimeoutDriver
    skip_checks = only("unreachable")


class BlockingDriver(ExamplePduDriver):
    async def status(self) -> PowerState:
        time.sleep(1.5)  # noqa: ASYNC251 - the defect: blocks the event loop
        return await super().status()


class TestBlocking(Base):
    driver = BlockingDriver
    skip_checks = only("status")


# -- power --------------------------------------------------------------------------
class LyingOffDriver(ExamplePduDriver):
    async def off(self) -> None:
        return None  # "done", without asking the PDU


class TestLyingOff(Base):
    driver = LyingOffDriver
    skip_checks = only("power", "fence_cfg")


class CachedStatusDriver(ExamplePduDriver):
    _state: ClassVar[dict[int, PowerState]] = {}

    async def status(self) -> PowerState:
        return self._state.get(self.options["plug"]) or await super().status()

    async def off(self) -> None:
        self._state[self.options["plug"]] = PowerState.OFF  # believes, never asks

    async def on(self) -> None:
        self._state[self.options["plug"]] = PowerState.ON
        await super().on()


class TestCachedStatus(Base):
    driver = CachedStatusDriver
    skip_checks = only("power")


class BadListDriver(ExamplePduDriver):
    async def list(self) -> list[Any]:
        return [{"id": p.id} for p in await super().list()]


class TestBadList(Base):
    driver = BadListDriver
    skip_checks = only("list")


# -- schema and metadata ------------------------------------------------------------------
class NoHelpDriver(ExamplePduDriver):
    params = (*ExamplePduDriver.params, Param("vendor_mode", str, default="a"))


class TestNoHelp(Base):
    driver = NoHelpDriver
    skip_checks = only("metadata")


class SecretDefaultDriver(ExamplePduDriver):
    params = (*ExamplePduDriver.params, Param("api_key", str, secret=True, default="k3y-k3y"))


class TestSecretDefault(Base):
    driver = SecretDefaultDriver
    skip_checks = only("schema")


class AliasClashDriver(ExamplePduDriver):
    params = (*ExamplePduDriver.params, Param("community", str, aliases=("ipaddr",), help="x"))


class TestAliasClash(Base):
    driver = AliasClashDriver
    skip_checks = only("schema")


class PortMisuseDriver(ExamplePduDriver):
    """Calls its TCP port 'port', which fence-agents (and the catalogue) call the plug."""

    params = (*(p for p in ExamplePduDriver.params if p.name not in ("ipport", "plug")),
              Param("port", int, default=5024, help="PDU TCP port"),
              Param("outlet", int, required=True, help="Outlet number"))  # fmt: skip


class TestPortMisuse(Base):
    driver = PortMisuseDriver
    skip_checks = only("standard_params")


class RequiredLooseDriver(ExamplePduDriver):
    """Drops the required flag from validate(): a missing outlet reaches the device."""

    @classmethod
    def validate(cls, options: Any) -> dict[str, Any]:
        return super().validate({"plug": 1, **options})


class TestRequiredLoose(Base):
    driver = RequiredLooseDriver
    skip_checks = only("required")
