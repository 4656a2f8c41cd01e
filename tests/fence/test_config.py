"""fence.cfg parsing, error reporting, the atomic 0600 writer, and driver building."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
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


# -- every value checked (issue 12) -------------------------------------------------------
@pytest.mark.parametrize(
    ("arg", "field", "says"),
    [
        ("timeout=inf", "timeout", "expected a finite number of seconds, got 'inf'"),
        ("timeout=nan", "timeout", "finite number"),
        ("timeout=1e309", "timeout", "finite number"),
        ("timeout=-1", "timeout", "out of range (0.01..3600)"),
        ("timeout=0", "timeout", "out of range"),
        ("timeout=99999", "timeout", "out of range"),
        ("power_timeout=-0.5", "power_timeout", "out of range (0..3600)"),
        ("delay=-5", "delay", "out of range"),
        ("delay_max=nan", "delay_max", "finite"),
        ("poll_interval=0", "poll_interval", "out of range (0.01..60)"),
        ("timeout=1_0", "timeout", "expected a finite number"),
        ("timeout", "timeout", "needs a value (timeout=VALUE), not a bare flag"),
        ("password", "password", "needs a value"),
        ("password=", "password", "is empty"),
        ("action=bogus", "action", "must be one of off, reboot"),
        ("action", "action", "must be one of off, reboot"),
        ("device=", "device", "must not be empty (it is required)"),
    ],
)
def test_bad_values_name_line_and_field(lab, arg: str, field: str, says: str) -> None:
    text = f"device a model device=a\nconnect a node=n1 {arg}\n"
    with pytest.raises(FenceConfigErrors) as info:
        check_drivers(parse_fence_config(text, "/etc/hafence/fence.cfg"), lab.registry)
    (err,) = info.value.errors
    assert (err.file, err.line, err.field) == ("/etc/hafence/fence.cfg", 2, field)
    assert says in err.message


@pytest.mark.parametrize(
    ("arg", "says"),
    [
        ("port=-1", "-1 out of range (1..65535)"),
        ("port=70000", "70000 out of range (1..65535)"),
        ("port=0x10000", "out of range"),
        ("port=99999999999999999999999", "expected integer"),
        ("port=623.0", "expected integer"),
        ("lanplus=maybe", "expected boolean"),
        ("lanplus", None),  # a bare flag is a boolean's True
        ("port=0x26f", None),
        ("username=a\\tb", None),  # a tab is fine
    ],
)
def test_ipmi_port_and_flags(arg: str, says: str | None) -> None:
    text = f"device bmc ipmi ip=10.0.0.1 password=pw {arg}\nconnect bmc node=n1\n"
    cfg = parse_fence_config(text, "f.cfg")
    if says is None:
        check_drivers(cfg)
        return
    with pytest.raises(FenceConfigErrors) as info:
        check_drivers(cfg)
    assert says in str(info.value) and info.value.errors[0].line == 1


def test_password_file_problems_are_clear(lab, tmp_path: Path) -> None:
    files = {
        "nul": b"pw\x00rest\n",
        "latin1": b"caf\xe9\n",
        "empty": b"",
        "blank-first-line": b"\nsecond\n",
        "cr": b"pw\r\n",  # a Windows line ending is fine
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "dir").mkdir()
    cases = {
        "": "no file name given",
        str(tmp_path / "missing"): "No such file or directory",
        str(tmp_path / "dir"): "a directory",
        "/dev/zero": "not a regular file",
        str(tmp_path / "nul"): "holds a NUL byte",
        str(tmp_path / "latin1"): "is not UTF-8 text",
        str(tmp_path / "empty"): "is empty",
        str(tmp_path / "blank-first-line"): "is empty",
    }
    for path, says in cases.items():
        text = f"device a model device=a password_file='{path}'\nconnect a node=n1\n"
        with pytest.raises(FenceConfigErrors) as info:
            check_drivers(parse_fence_config(text, "/etc/hafence/fence.cfg"), lab.registry)
        (err,) = info.value.errors
        assert (err.line, err.field) == (1, "password_file"), path
        assert says in err.message, (path, err.message)
        assert "caf" not in str(info.value) and "rest" not in str(info.value)
    text = f"device a model device=a password_file={tmp_path / 'cr'}\nconnect a node=n1\n"
    spec = parse_fence_config(text).chain("n1")[0].devices[0]
    assert build_driver(spec, lab.registry).options["password"].reveal() == "pw"


def test_password_env_and_script(lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAFENCE_TEST_PW", "from-env")
    monkeypatch.setenv("HAFENCE_TEST_EMPTY", "")
    script = tmp_path / "pw.sh"
    script.write_text("#!/bin/sh\necho from-script\necho second-line\n")
    script.chmod(0o700)
    good = {"password_env=HAFENCE_TEST_PW": "from-env", f"password_script={script}": "from-script"}
    for arg, value in good.items():
        spec = parse_fence_config(f"device a model device=a {arg}\nconnect a node=n1\n")
        driver = build_driver(spec.chain("n1")[0].devices[0], lab.registry)
        assert driver.options["password"].reveal() == value
    bad = {
        "password_env=HAFENCE_TEST_UNSET_X": "environment variable HAFENCE_TEST_UNSET_X is not set",
        "password_env=HAFENCE_TEST_EMPTY": "is empty",
        "password_env='A B'": "not an environment variable name",
        "password_script=false": "exited with status 1",
        f"password_script={tmp_path / 'nope'}": "cannot run script",
        "password_script='sh -c \"sleep 30\"'": None,  # bounded: see the timeout test
    }
    for arg, says in bad.items():
        if says is None:
            continue
        text = f"device a model device=a {arg}\nconnect a node=n1\n"
        with pytest.raises(FenceConfigErrors) as info:
            check_drivers(parse_fence_config(text, "f.cfg"), lab.registry)
        (err,) = info.value.errors
        assert err.field == arg.partition("=")[0] and says in err.message, err


def test_key_twice_on_a_line_and_override_from_connect(lab) -> None:
    with pytest.raises(FenceConfigErrors) as info:
        parse_fence_config("device a model device=a device=b\n", "f.cfg")
    assert (info.value.errors[0].line, info.value.errors[0].field) == (1, "device")
    cfg = parse_fence_config("device a model device=a timeout=5\nconnect a node=n1 timeout=7\n")
    driver = build_driver(cfg.chain("n1")[0].devices[0], lab.registry)
    assert driver.options["timeout"] == 7.0  # the connect line's value wins, as in Proxmox


def test_device_connected_to_no_node_is_checked_too(lab) -> None:
    with pytest.raises(FenceConfigErrors) as info:
        check_drivers(parse_fence_config("device a model timeout=inf\n", "f.cfg"), lab.registry)
    assert [(e.line, e.field) for e in info.value.errors] == [(1, "timeout")]
    # a required option may still come with its connect lines: not an error yet
    assert check_drivers(parse_fence_config("device a model timeout=5\n"), lab.registry) == []


def test_non_utf8_and_control_characters_anywhere(tmp_path: Path) -> None:
    cases = {
        b"device a model device=a\n# caf\xe9 comment\n": (2, "not UTF-8 text (byte 0xe9"),
        b"device a model device=a\x00\n": (1, "NUL byte at column 24"),
        b"# ok\n\x1b[31m\n": (2, "control character U+001B"),
        "device a model comment=\u2028x\n".encode(): (1, "control character U+2028"),
    }
    for data, (line, says) in cases.items():
        path = tmp_path / "fence.cfg"
        path.write_bytes(data)
        with pytest.raises(FenceConfigErrors) as info:
            load_fence_config(path)
        (err,) = info.value.errors
        assert (err.file, err.line) == (str(path), line) and says in err.message


def test_crm_daemon_refuses_a_broken_fence_config(tmp_path: Path) -> None:
    """``hafence-crm --fence-config BROKEN``: exit 2 naming file and line, no traceback,
    before it touches the store."""
    exe = Path(sys.executable).with_name("hafence-crm")
    if not exe.exists():
        pytest.skip("the hafence-crm console script is not installed")
    (tmp_path / "nul.pw").write_bytes(b"p\x00w\n")
    cases = {
        "device b ipmi ip=h password_file=" + str(tmp_path / "nul.pw") + "\nconnect b node=n1\n":
            "line 1: password_file: file",
        "device b ipmi ip=h password=x timeout=inf\nconnect b node=n1\n": "line 1: timeout:",
        "# caf\xe9\n": "line 1: not UTF-8 text",
    }  # fmt: skip
    store = tmp_path / "store"
    for text, says in cases.items():
        cfg = tmp_path / "fence.cfg"
        cfg.write_bytes(text.encode("latin-1") if "\xe9" in text else text.encode())
        p = subprocess.run(
            [str(exe), "--fence-config", str(cfg), "--store", str(store), "--no-watchdog"],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert p.returncode == 2, p.stderr
        assert str(cfg) in p.stderr and says in p.stderr and "Traceback" not in p.stderr
    assert not store.exists()
