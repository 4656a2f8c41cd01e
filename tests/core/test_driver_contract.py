"""The driver contract: parameter validation, secrets, metadata export."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from hafence.errors import ParamError
from hafence.fence.driver import FenceDriver, Param, PowerState
from hafence.fence.metadata import driver_metadata, driver_metadata_xml
from hafence.secrets import MASK, Secret


class Dummy(FenceDriver):
    name = "dummy"
    description = "test driver"
    params = (
        Param("ip", str, required=True, aliases=("ipaddr",), help="address"),
        Param("port", int, default=623),
        Param("password", str, secret=True, help="password"),
        Param("lanplus", bool, default=True),
        Param(
            "privlvl", str, default="administrator", choices=("user", "operator", "administrator")
        ),
    )

    async def status(self) -> PowerState:
        return PowerState.ON

    async def off(self) -> None: ...

    async def on(self) -> None: ...


def test_coerces_types_and_aliases() -> None:
    d = Dummy({"ipaddr": "127.0.0.1", "port": "6230", "lanplus": "0"})
    assert d.options["ip"] == "127.0.0.1"
    assert d.options["port"] == 6230
    assert d.options["lanplus"] is False
    assert d.options["timeout"] == 10.0  # common params are there with defaults


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        ({}, "ip"),
        ({"ip": "x", "port": "abc"}, "port"),
        ({"ip": "x", "bogus": "1"}, "bogus"),
        ({"ip": "x", "privlvl": "root"}, "privlvl"),
        ({"ip": "x", "ipaddr": "y"}, "ipaddr"),
        ({"ip": "x", "lanplus": "maybe"}, "lanplus"),
    ],
)
def test_bad_options_name_the_field(opts: dict, field: str) -> None:
    with pytest.raises(ParamError) as exc:
        Dummy(opts)
    assert exc.value.field == field


def test_secret_never_shows(tmp_path, monkeypatch) -> None:
    d = Dummy({"ip": "h", "password": "hunter2"})
    assert isinstance(d.options["password"], Secret)
    assert d.options["password"].reveal() == "hunter2"
    for text in (
        repr(d),
        str(d.options),
        f"{d.options['password']}",
        json.dumps(d.public_options()),
    ):
        assert "hunter2" not in text
    assert d.public_options()["password"] == MASK

    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    assert Dummy({"ip": "h", "password_file": str(pw)}).options["password"].reveal() == "from-file"
    monkeypatch.setenv("BMC_PW", "from-env")
    assert Dummy({"ip": "h", "password_env": "BMC_PW"}).options["password"].reveal() == "from-env"
    with pytest.raises(ParamError, match="NOPE"):
        Dummy({"ip": "h", "password_env": "NOPE"})
    with pytest.raises(ParamError) as exc:
        Dummy({"ip": "h", "port_file": str(pw)})  # only secrets may come from files
    assert exc.value.field == "port_file"


def test_metadata_json_and_xml() -> None:
    meta = driver_metadata(Dummy)
    names = [p["name"] for p in meta["parameters"]]
    assert names[:5] == ["ip", "port", "password", "lanplus", "privlvl"]
    assert "timeout" in names and "delay" in names
    assert set(meta["actions"]) >= {"status", "off", "on", "reboot", "monitor"}
    root = ET.fromstring(driver_metadata_xml(Dummy))
    assert root.tag == "resource-agent" and root.get("name") == "dummy"
    ip = root.find("parameters/parameter[@name='ip']")
    assert ip is not None and ip.get("required") == "1" and ip.get("obsoletes") == "ipaddr"
    priv = root.find("parameters/parameter[@name='privlvl']/content")
    assert priv is not None and priv.get("type") == "select"
    assert {o.get("value") for o in priv.findall("option")} == {"user", "operator", "administrator"}
    assert {a.get("name") for a in root.findall("actions/action")} >= {"off", "metadata"}
