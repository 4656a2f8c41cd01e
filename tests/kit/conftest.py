"""Peers for running the conformance kit against the first-party drivers: one real
ipmi_sim BMC and one snmpsim switch per test class (the kit sets the power state it
needs before each check), each stopped at teardown."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from hafence.simdevices.ipmi_sim import IpmiSim
from hafence.simdevices.ipmi_sim import available as ipmi_sim_available
from hafence.simdevices.snmp_agent import SnmpAgent, snmp_agent

IPMI_PASSWORD = "Kit-ipmi!s3cret"


@pytest.fixture(scope="class")
def bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpmiSim]:
    if not ipmi_sim_available():
        pytest.skip("OpenIPMI ipmi_sim not installed (scripts/install.sh installs it)")
    sim = IpmiSim(password=IPMI_PASSWORD, workdir=tmp_path_factory.mktemp("bmc"))
    try:
        yield sim.start()
    finally:
        sim.stop()


@pytest.fixture(scope="class")
def switch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnmpAgent]:
    if not shutil.which("snmpsim-command-responder"):
        pytest.skip("snmpsim not installed (pip install -e '.[test]')")
    with snmp_agent(workdir=tmp_path_factory.mktemp("snmpsim")) as agent:
        yield agent


def fence_agent_installed(name: str) -> bool:
    return any(os.path.exists(f"{d}/{name}") for d in ("/usr/sbin", "/sbin", "/usr/bin"))
