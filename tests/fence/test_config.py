"""fence.cfg parsing, error reporting, the atomic 0600 writer, and driver building."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hafence.errors import ConfigError
from hafence.fence import (
    FenceConfig,
    FenceConfigErrors,
    build_driver,
    check_drivers,
    load_fence_config,
    parse_fence_config,
    write_fence_config,
)
from hafence.fence.config import parse_args, shell_quote
from hafence.secrets import Secret

GOOD = """\
# two levels for node1: dual PSU first, then a switch port
device psu:1 model device=a password=pw1
device psu:2 model device=b password="p w\\"2"
connect psu:1 node=node1
connect psu:2 node=node1

device sw model device=c
connect sw node=node1 delay=0.5
connect sw node=node2
"""


def test_levels_and_subdevices() -> None:
    cfg = parse_fence_config(GOOD, "fence.cfg")
    assert cfg.nodes() == ["node1", "node2"]
    chain = cfg.chain("node1")
    assert [(lv.number, lv.name) for lv in chain] == [(1, "psu"), (2, "sw")]
    assert [d.label for d in chain[0].devices] == ["psu:1", "psu:2"]
    assert chain[0].devices[1].options() == {"device": "b", "password": 'p w"2'}
    assert chain[1].devices[0].label == "sw"
    assert chain[1].devices[0].connect_line == 8
    # node2 is only on the switch: its first (and only) level is 'sw'
    assert [(lv.number, lv.name) for lv in cfg.chain("node2")] == [(1, "sw")]
    assert cfg.chain("node9") == []


def test_errors_collected_in_one_pass_with_line_and_field() -> None:
    text = (
        "device ok model device=a\n"  # 1
        "bogus line here\n"  # 2
        'device q model password="unterminated\n'  # 3
        "connect ok nodes=node1\n"  # 4
        "connect ok:2 node=node1\n"  # 5
        "device bad!name model x=1\n"  # 6
        "connect ok node=n1 =value\n"  # 7
    )
    with pytest.raises(FenceConfigErrors) as info:
        parse_fence_config(text, "/etc/hafence/fence.cfg")
    errs = info.value.errors
    assert [e.line for e in errs] == [2, 3, 4, 5, 6, 7]
    assert all(e.file == "/etc/hafence/fence.cfg" for e in errs)
    assert errs[2].field == "node"
    assert errs[4].field == "device"
    text_report = str(info.value)
    assert text_report.splitlines()[0] == (
        "[FenceConfig] Encountered error(s) on parsing '/etc/hafence/fence.cfg':"
    )
    assert "line 5: No parallel device 'ok:2' found" in text_report
    assert "line 3: bad argument quoting" in text_report


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_fence_config(tmp_path / "missing.cfg")
    assert info.value.file == str(tmp_path / "missing.cfg")
    bad = tmp_path / "latin1.cfg"
    bad.write_bytes(b"# ok\ndevice a model device=\xe9\n")
    with pytest.raises(FenceConfigErrors) as many:
        load_fence_config(bad)
    (err,) = many.value.errors
    assert (err.file, err.line) == (str(bad), 2)
    assert "not UTF-8 text (byte 0xe9 at column 23)" in str(many.value)
    with pytest.raises(ConfigError, match="a directory"):
        load_fence_config(tmp_path)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_fence_config("/dev/zero")  # would never end


def test_round_trip_and_writer_is_atomic_0600(tmp_path: Path) -> None:
    cfg = parse_fence_config(GOOD, "x")
    path = tmp_path / "etc" / "fence.cfg"
    write_fence_config(cfg, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_fence_config(path)
    assert again == cfg
    assert again.to_text() == cfg.to_text()
    # no temp files left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["fence.cfg"]


def test_writer_refuses_unreadable_result_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "fence.cfg"
    cfg = parse_fence_config(GOOD, str(path))
    write_fence_config(cfg, path)
    before = path.read_bytes()
    cfg.devices["sw"].subdevices[1].driver = "two words"  # would not parse back
    with pytest.raises(ConfigError, match="read back"):
        write_fence_config(cfg, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fence.cfg"]


def test_edit_api_keeps_parser_rules() -> None:
    cfg = FenceConfig()
    cfg.add_device("pdu:1", "model", [("device", "a")])
    cfg.connect("pdu:1", "node1", [("plug", "3")])
    with pytest.raises(ConfigError, match="already declared"):
        cfg.add_device("pdu", "model")
    with pytest.raises(ConfigError, match="already connected"):
        cfg.connect("pdu", "node1")
    with pytest.raises(ConfigError, match="must be declared"):
        cfg.connect("nope", "node1")
    assert parse_fence_config(cfg.to_text()) == cfg


_value = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)
_key = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@given(
    st.lists(st.tuples(_key, st.one_of(st.none(), _value)), max_size=6, unique_by=lambda a: a[0])
)
def test_args_round_trip_any_value(args: list[tuple[str, str | None]]) -> None:
    cfg = FenceConfig()
    cfg.add_device("d", "model", args)
    cfg.connect("d", "n1", args)
    back = parse_fence_config(cfg.to_text())
    assert back.devices["d"].subdevices[1].args == args
    assert back.devices["d"].subdevices[1].connections["n1"].args == args


def test_parse_args_and_shell_quote() -> None:
    assert parse_args('a=1 b="x y" c=\'q"\' flag d="12\\"345"') == [
        ("a", "1"),
        ("b", "x y"),
        ("c", 'q"'),
        ("flag", None),
        ("d", '12"345'),
    ]
    assert shell_quote("192.168.1.1") == "192.168.1.1"
    assert shell_quote('12"345') == "'12\"345'"
    assert shell_quote("it's") == "'it'\\''s'"
    assert shell_quote("") == "''"


# -- building drivers -------------------------------------------------------------------
def test_build_driver_validates_against_schema(lab, tmp_path: Path) -> None:
    pwfile = tmp_path / "pw"
    pwfile.write_text("from-file\n")
    text = (
        "device a model device=a password_file=" + str(pwfile) + " action=off\n"  # 1
        "connect a node=n1 timeout=2.5\n"  # 2
        "device b model device=b\n"  # 3
        "connect b node=n1 timeout=soon\n"  # 4
        "device c model device=c colour=red\n"  # 5
        "connect c node=n1\n"  # 6
        "device d nosuchdriver x=1\n"  # 7
        "connect d node=n1\n"  # 8
        "device e fence_nosuchagent x=1\n"  # 9
        "connect e node=n1\n"  # 10
    )
    cfg = parse_fence_config(text, "/etc/fence.cfg")
    a, b, c, d, e = (lv.devices[0] for lv in cfg.chain("n1"))
    drv = build_driver(a, lab.registry)
    assert isinstance(drv.options["password"], Secret)
    assert drv.options["password"].reveal() == "from-file"
    assert drv.options["timeout"] == 2.5
    assert "from-file" not in repr(drv)
    with pytest.raises(ConfigError) as info:
        build_driver(b, lab.registry)
    assert (info.value.file, info.value.line, info.value.field) == ("/etc/fence.cfg", 4, "timeout")
    with pytest.raises(ConfigError) as info:
        build_driver(c, lab.registry)
    assert (info.value.line, info.value.field) == (5, "colour")
    with pytest.raises(ConfigError) as info:
        build_driver(d, lab.registry)
    assert (info.value.line, info.value.field) == (7, "driver")
    assert "nosuchdriver" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_driver(e, lab.registry)
    assert (info.value.line, info.value.field) == (9, "driver")


def test_check_drivers_reports_every_option_error(lab) -> None:
    text = (
        "device a model device=a\nconnect a node=n1\nconnect a node=n2 timeout=x\n"
        "device b model\nconnect b node=n1\n"
        "device c model device=c\nconnect c node=n1\n"
    )
    with pytest.raises(FenceConfigErrors) as info:
        check_drivers(parse_fence_config(text, "f.cfg"), lab.registry)
    assert [(e.line, e.field) for e in info.value.errors] == [(3, "timeout"), (4, "device")]
    check_drivers(parse_fence_config("device c model device=c\nconnect c node=n1\n"), lab.registry)


def test_reprs_mask_credentials() -> None:
    cfg = parse_fence_config(
        "device a fence_x ip=1.2.3.4 password=TopSecret1 community=Pub2\n"
        "connect a node=n1 passwd=TopSecret3\n"
    )
    shown = repr(cfg) + repr(cfg.chain("n1")) + repr(cfg.devices["a"].subdevices[1].connections)
    for secret in ("TopSecret1", "Pub2", "TopSecret3"):
        assert secret not in shown
    assert "1.2.3.4" in shown
