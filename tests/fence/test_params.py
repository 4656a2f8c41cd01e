"""The catalogue of standard driver parameters: every driver names ip, ipport, username,
password and plug as fence-agents does, and old names keep working with a deprecation
warning (logged once, shown by ``hafence config check``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from hafence.cli.main import cli
from hafence.errors import ParamError
from hafence.fence import Param, standard
from hafence.fence.driver import FenceDriver
from hafence.fence.params import STANDARD, standard_misuse
from hafence.plugins import PluginRegistry


@pytest.fixture(scope="module")
def drivers() -> dict[str, type[FenceDriver]]:
    return PluginRegistry().fence_drivers()


def test_every_first_party_driver_uses_the_catalogue(drivers) -> None:
    assert {"ipmi", "redfish", "snmp_ifmib", "serial", "example_pdu"} <= set(drivers)
    for name, cls in drivers.items():
        assert standard_misuse(cls.all_params()) == [], name
    names = {n: {p.name for p in cls.all_params()} for n, cls in drivers.items()}
    for net in ("ipmi", "redfish", "snmp_ifmib", "example_pdu"):
        assert {"ip", "ipport", "username", "password"} <= names[net], net
        assert "port" not in names[net], net  # fence-agents' port is the plug
    for target in ("redfish", "snmp_ifmib", "serial", "example_pdu"):
        assert "plug" in names[target], target


def test_standard_takes_the_catalogue_entry_with_a_drivers_own_details() -> None:
    plug = standard("plug", int, required=True, also=("outlet",), help="Outlet number")
    assert (plug.name, plug.type, plug.required) == ("plug", int, True)
    assert plug.aliases == ("port", "outlet") and plug.help == "Outlet number"
    assert standard("password").secret and STANDARD["password"].aliases == ("passwd",)
    with pytest.raises(KeyError):
        standard("hostname")


def test_misuse_of_a_standard_name_is_found() -> None:
    found = standard_misuse((
        Param("port", int, help="TCP port"),  # the plug's name for a network port
        Param("host", str, aliases=("ipaddr",), help="x"),  # ip's alias for another name
        Param("username", str, secret=True, help="x"),  # the standard one is not secret
        Param("ipport", int, help="fine"),
    ))  # fmt: skip
    assert len(found) == 3
    assert (
        "'port' is the standard name of 'plug' (in fence-agents 'port' means the plug)"
        in (found[0])
    )
    assert "alias 'ipaddr'" in found[1] and "the standard 'username' is not secret" in found[2]


def test_an_old_name_works_and_is_warned_about_once(drivers, caplog) -> None:
    ipmi = drivers["ipmi"]
    with caplog.at_level(logging.WARNING, "hafence.fence"):
        first = ipmi({"ip": "127.0.0.1", "password": "pw", "port": "6230"}, label="bmc1")
        again = ipmi({"ip": "127.0.0.1", "password": "pw", "port": "6231"}, label="bmc2")
    assert first.options["ipport"] == 6230 and again.options["ipport"] == 6231
    assert "port" not in first.options
    says = "'port' is deprecated for driver 'ipmi', write 'ipport'"
    assert (
        first.deprecations
        == again.deprecations
        == [("port", f"{says} (in fence-agents 'port' means the plug)")]
    )
    logged = [r.getMessage() for r in caplog.records if says in r.getMessage()]
    assert len(logged) <= 1  # once per process (an earlier test may have logged it)
    assert first.config_warnings() == first.deprecations
    assert ipmi({"ip": "127.0.0.1", "password": "pw", "ipport": "1"}).deprecations == []


def test_a_bad_value_under_an_old_name_or_alias_names_the_field_as_written(drivers) -> None:
    ipmi = drivers["ipmi"]
    for key in ("port", "ipport"):
        with pytest.raises(ParamError) as err:
            ipmi({"ip": "127.0.0.1", "password": "pw", key: "70000"})
        assert err.value.field == key and "out of range" in str(err.value)
    with pytest.raises(ParamError) as err:
        ipmi({"ip": "127.0.0.1", "password": "pw", "port": "1", "ipport": "2"})
    assert "given twice" in str(err.value)


def test_config_check_shows_a_deprecated_name_with_its_line(tmp_path: Path) -> None:
    cfg = tmp_path / "fence.cfg"
    cfg.write_text(
        "device bmc ipmi ip=127.0.0.1 password=pw\n"
        "connect bmc node=node1 port=6230\n"
        "device rf redfish ip=127.0.0.1 port=8443\n"
        "connect rf node=node2\n"
    )
    r = CliRunner().invoke(cli, ["config", "check", str(cfg)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {cfg}:2: port: 'port' is deprecated for driver 'ipmi', write 'ipport' "
        "(in fence-agents 'port' means the plug)",
        f"warning: {cfg}:3: port: 'port' is deprecated for driver 'redfish', write 'ipport' "
        "(in fence-agents 'port' means the plug)",
    ]
