"""resources.cfg / groups.cfg / datacenter.cfg: parsing, writing, round trips and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hafence.errors import ConfigErrors
from hafence.ha import config as hacfg

SCENARIOS = Path(__file__).parents[1] / "ha" / "scenarios"
if not SCENARIOS.is_dir():  # the shared copy; a checkout elsewhere may lack it
    pytest.skip("pve-ha-tests scenarios not available", allow_module_level=True)

GROUP_FILES = sorted(SCENARIOS.glob("*/groups"))
SERVICE_CONFIGS = sorted(SCENARIOS.glob("*/service_config"))
DATACENTER_FILES = sorted(SCENARIOS.glob("*/datacenter.cfg"))
TYPES = {"vm", "ct", "fa"}  # the scenarios use fa:NNN (a simulated "fail" type)


def errors_of(exc: pytest.ExceptionInfo[ConfigErrors]) -> list[tuple[int | None, str | None]]:
    return [(e.line, e.field) for e in exc.value.errors]


def test_scenario_files_exist() -> None:
    assert GROUP_FILES and SERVICE_CONFIGS and DATACENTER_FILES


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: p.parent.name)
def test_groups_round_trip_byte_identical(path: Path) -> None:
    text = path.read_text()
    groups = hacfg.parse_groups(text, str(path))
    assert groups["group2"]["nodes"] == {"node2": 2, "node3": 0}
    assert groups["group1"]["restricted"] is True
    assert groups["group2"]["nofailback"] is True
    assert hacfg.format_groups(groups) == text


@pytest.mark.parametrize("path", SERVICE_CONFIGS, ids=lambda p: p.parent.name)
def test_resources_from_every_scenario_round_trip(path: Path) -> None:
    resources = hacfg.resources_from_service_config(json.loads(path.read_text()), types=TYPES)
    assert all(c["node"] for c in resources.values())
    text = hacfg.format_resources(resources)
    parsed = hacfg.parse_resources(text, types=TYPES)
    assert parsed == resources
    assert hacfg.format_resources(parsed) == text


@pytest.mark.parametrize("path", DATACENTER_FILES, ids=lambda p: p.parent.name)
def test_scenario_datacenter_files_parse(path: Path) -> None:
    dc = hacfg.parse_datacenter(path.read_text(), str(path))
    raw = json.loads(path.read_text())
    assert dc["ha"]["max_worker"] == raw.get("ha", {}).get("max_worker", 4)
    assert dc["ha"]["shutdown_policy"] in hacfg.SHUTDOWN_POLICIES
    for key in raw:  # crs and friends are kept for the scheduler
        if key != "ha":
            assert dc[key] == raw[key]
    again = hacfg.parse_datacenter(hacfg.format_datacenter(dc))
    assert again == dc


node_names = st.from_regex(r"\Anode[1-9][0-9]?\Z")
comments = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
).map(lambda s: s.replace("#", "x"))
resource_conf = st.fixed_dictionaries(
    {
        "node": st.one_of(st.none(), node_names),
        "state": st.sampled_from(hacfg.SERVICE_STATES),
        "group": st.one_of(st.none(), st.from_regex(r"\A[a-z][a-z0-9_-]{0,8}\Z")),
        "max_restart": st.integers(0, 10),
        "max_relocate": st.integers(0, 10),
        "failback": st.booleans(),
        "comment": st.one_of(st.none(), comments),
    }
)
sids = st.builds(
    lambda t, n: f"{t}:{n}", st.sampled_from(["vm", "ct"]), st.integers(100, 999999999)
)


SLOW_OK = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW_OK
@given(st.dictionaries(sids, resource_conf, max_size=6))
def test_generated_resources_round_trip(resources: dict) -> None:
    text = hacfg.format_resources(resources)
    parsed = hacfg.parse_resources(text, types={"vm", "ct"})
    assert parsed == resources
    assert hacfg.format_resources(parsed) == text


group_conf = st.fixed_dictionaries(
    {
        "nodes": st.dictionaries(node_names, st.integers(0, 1000), min_size=1, max_size=4),
        "restricted": st.booleans(),
        "nofailback": st.booleans(),
        "comment": st.one_of(st.none(), comments),
    }
)


@SLOW_OK
@given(st.dictionaries(st.from_regex(r"\A[a-z][a-z0-9_-]{0,8}\Z"), group_conf, max_size=4))
def test_generated_groups_round_trip(groups: dict) -> None:
    text = hacfg.format_groups(groups)
    assert hacfg.parse_groups(text) == groups
    assert hacfg.format_groups(hacfg.parse_groups(text)) == text


def test_resources_defaults_alias_comments_and_spaces() -> None:
    text = "# managed by hand\nvm: 100\n    state enabled\n\t# not a property\n\nct: 101\n"
    r = hacfg.parse_resources(text, types={"vm", "ct"})
    assert r["vm:100"]["state"] == "started"
    assert r["ct:101"] == hacfg.default_resource()
    assert "comment lives here" in hacfg.format_resources(
        {"vm:100": {**r["vm:100"], "comment": "comment lives here"}}
    )


def test_resource_errors_name_file_line_and_property() -> None:
    text = (
        "vm: 100\n"  # 1
        "\tstate bogus\n"  # 2
        "\tcolour red\n"  # 3
        "\tmax_restart eleven\n"  # 4
        "\tmax_restart 2\n"  # 5 duplicate property
        "\n"  # 6
        "vm: 100\n"  # 7 duplicate section
        "\n"  # 8
        "xx: 5\n"  # 9 unknown type
        "\tstate started\n"  # 10 (skipped: its section was rejected)
        "vm: 42\n"  # 11 bad ID
        "group: g\n"  # 12 groups do not belong here
        "\tmax_relocate 99\n"  # 13 (skipped)
        "not a header\n"  # 14
        "\tnode node1\n"  # 15 (skipped)
        "ct: 102\n"  # 16
        "\tnode bad_node!\n"  # 17
        "\tgroup\n"  # 18 missing value
    )
    with pytest.raises(ConfigErrors) as exc:
        hacfg.parse_resources(text, "/etc/hafence/ha/resources.cfg", types={"vm", "ct"})
    assert errors_of(exc) == [
        (2, "state"),
        (3, "colour"),
        (4, "max_restart"),
        (5, "max_restart"),
        (7, "section"),
        (9, "section"),
        (11, "section"),
        (12, "section"),
        (14, "section"),
        (17, "node"),
        (18, "group"),
    ]
    msg = str(exc.value)
    assert "/etc/hafence/ha/resources.cfg:3: colour: unknown property in section 'vm:100'" in msg
    assert "resources.cfg:2: state: invalid state 'bogus'" in msg
    assert "resources.cfg:9: section: unknown resource type 'xx'" in msg
    assert exc.value.errors[0].file == "/etc/hafence/ha/resources.cfg"


def test_property_before_any_section() -> None:
    with pytest.raises(ConfigErrors) as exc:
        hacfg.parse_resources("\tstate started\n", "r.cfg", types={"vm"})
    assert "r.cfg:1: state: property outside of a section" in str(exc.value)


def test_group_errors() -> None:
    text = (
        "group: g1\n"  # 1
        "\trestricted maybe\n"  # 2 -> also lacks nodes (reported at line 1)
        "\n"
        "group: g2\n"  # 4
        "\tnodes node1:x,node2\n"  # 5
        "\n"
        "group: g3\n"  # 7
        "\tnodes node1,node1\n"  # 8
        "\n"
        "vm: 100\n"  # 10
        "\n"
        "group: 9bad\n"  # 12
        "\n"
        "group: g4\n"  # 14
        "\tnodes node1:1001\n"  # 15
    )
    with pytest.raises(ConfigErrors) as exc:
        hacfg.parse_groups(text, "groups.cfg")
    assert errors_of(exc) == [
        (2, "restricted"),
        (1, "nodes"),
        (5, "nodes"),
        (8, "nodes"),
        (10, "section"),
        (12, "section"),
        (15, "nodes"),
    ]
    assert "groups.cfg:1: nodes: section 'g1' lacks required property" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "sid"),
    [
        ("100", "vm:100"),
        ("vm:100", "vm:100"),
        ("ct:101", "ct:101"),
        (" 999999999 ", "vm:999999999"),
    ],
)
def test_parse_sid_ok(text: str, sid: str) -> None:
    assert hacfg.parse_sid(text, {"vm", "ct"}) == sid


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("99", "invalid service ID"),
        ("abc", "invalid service ID"),
        ("vm:abc", "invalid vm ID"),
        ("vm:0100", "invalid vm ID"),
        ("ct:", "invalid ct ID"),
        ("qemu:100", "unknown resource type 'qemu'"),
        ("vm:1000000000", "invalid vm ID"),
    ],
)
def test_parse_sid_rejects(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        hacfg.parse_sid(text, {"vm", "ct"})


def test_plugin_resource_types_are_known() -> None:
    assert {"vm", "ct"} <= hacfg.known_resource_types()


def test_datacenter_defaults_and_errors() -> None:
    assert hacfg.parse_datacenter("")["ha"] == {"shutdown_policy": "conditional", "max_worker": 4}
    ok = hacfg.parse_datacenter('{"ha": {"shutdown_policy": "migrate", "max_worker": 8}}')
    assert ok["ha"] == {"shutdown_policy": "migrate", "max_worker": 8}
    text = (
        '{\n  "ha": {\n    "shutdown_policy": "failback",\n    "max_worker": 0,\n    "x": 1\n  }\n}'
    )
    with pytest.raises(ConfigErrors) as exc:
        hacfg.parse_datacenter(text, "datacenter.cfg")
    assert errors_of(exc) == [(3, "ha.shutdown_policy"), (4, "ha.max_worker"), (5, "ha.x")]
    with pytest.raises(ConfigErrors) as exc:
        hacfg.parse_datacenter('{\n "ha": {,}\n}', "dc.cfg")
    assert exc.value.errors[0].line == 2
    assert "dc.cfg:2: invalid JSON" in str(exc.value)
    with pytest.raises(ConfigErrors):
        hacfg.parse_datacenter('{"ha": {"max_worker": true}}')


def test_check_references() -> None:
    res = {"vm:100": {**hacfg.default_resource(), "group": "nope"}}
    with pytest.raises(ConfigErrors, match="unknown group 'nope'"):
        hacfg.check_references(res, {})
    hacfg.check_references(res, {"nope": hacfg.default_group()})


def test_comment_must_be_single_line() -> None:
    with pytest.raises(ValueError):
        hacfg.parse_comment("a\nb")


def test_writer_refuses_values_that_would_corrupt_the_file() -> None:
    inject = {"vm:100": {**hacfg.default_resource(), "comment": "x\n\tstate stopped"}}
    with pytest.raises(ValueError, match="vm:100"):
        hacfg.format_resources(inject)
    with pytest.raises(ValueError, match="invalid"):
        hacfg.format_resources({"vm:100": {**hacfg.default_resource(), "node": "a b"}})
    with pytest.raises(ValueError):
        hacfg.format_resources({"vm:abc": hacfg.default_resource()})
    with pytest.raises(ValueError):
        hacfg.format_groups({"g": {**hacfg.default_group(), "nodes": {"n1": -1}}})
    with pytest.raises(ValueError):
        hacfg.format_groups({"g": {**hacfg.default_group(), "nodes": {}}})
    # partial dicts are completed with defaults, aliases normalised
    text = hacfg.format_resources({"vm:100": {"state": "enabled"}})
    assert text == "vm: 100\n\tstate started\n"


@SLOW_OK
@given(st.text(alphabet="vmctgroup:0123456789 \t\n#xnodesatr,", max_size=200))
def test_parsers_fail_only_with_config_errors(text: str) -> None:
    for parse in (hacfg.parse_groups, lambda t: hacfg.parse_resources(t, types={"vm", "ct"})):
        try:
            parse(text)
        except ConfigErrors as exc:
            assert all(e.line is not None for e in exc.errors)


def test_service_config_json_conversion() -> None:
    got = hacfg.resources_from_service_config(
        {"vm:101": {"node": "node1", "state": "enabled", "max_relocate": "3", "failback": 0}},
        types={"vm"},
    )
    assert got["vm:101"] == {**hacfg.default_resource(), "node": "node1", "max_relocate": 3,
                             "failback": False}  # fmt: skip
    with pytest.raises(ConfigErrors) as exc:
        hacfg.resources_from_service_config(
            {"vm:1": {}, "vm:102": {"state": "on", "speed": 1}}, "sc.json", types={"vm"}
        )
    assert [e.field for e in exc.value.errors] == ["vm:1", "vm:102.state", "vm:102.speed"]


# -- damaged input (issue 12) --------------------------------------------------------------
@pytest.mark.parametrize("parse", ["resources", "groups", "rules", "datacenter"])
def test_bytes_that_are_not_utf8_name_file_and_line(parse: str) -> None:
    good = {
        "resources": b"vm: 100\n\tstate started\n",
        "groups": b"group: g\n\tnodes node1\n",
        "rules": b"node-affinity: r1\n\tresources vm:100\n\tnodes node1\n",
        "datacenter": b'{\n "ha": {"max_worker": 2}\n}\n',
    }[parse]
    fn = getattr(hacfg, f"parse_{parse}")
    fn(good, "/etc/hafence/ha/x.cfg")  # the bytes themselves parse
    bad = good + b"# caf\xe9 in a comment\n"
    with pytest.raises(ConfigErrors) as exc:
        fn(bad, "/etc/hafence/ha/x.cfg")
    (err,) = exc.value.errors
    assert (err.file, err.line) == ("/etc/hafence/ha/x.cfg", good.count(b"\n") + 1)
    assert "not UTF-8 text (byte 0xe9 at column 6)" in err.message
    for junk in (b"\x00", b"\x1b", "\u2028".encode(), b"\x0c"):
        with pytest.raises(ConfigErrors, match=r"x\.cfg:2: "):
            fn(good.replace(b"\n", b"\n" + junk, 1), "/etc/hafence/ha/x.cfg")


def test_every_resources_error_names_file_line_and_field() -> None:
    text = (
        "vm: 100\n"  # 1
        "\t\u00a0state started\n"  # 2: a no-break space is not a separator
        "\tmax_restart 1_0\n"  # 3
        "\tmax_restart\n"  # 4 (also a duplicate: reported once, as missing value)
        "ct: 101\n"  # 5
        "\tcomment " + "x" * 5000 + "\n"  # 6
        "\tnode " + "n" * 64 + "\n"  # 7
        "group: g\n"  # 8
        "\tnodes node1:-1\n"  # 9
    )
    with pytest.raises(ConfigErrors) as exc:
        hacfg.parse_resources(text, "/etc/hafence/ha/resources.cfg", types={"vm", "ct"})
    assert all(e.file == "/etc/hafence/ha/resources.cfg" for e in exc.value.errors)
    assert all(e.line and e.field for e in exc.value.errors), exc.value
    with pytest.raises(ConfigErrors) as exc:
        hacfg.parse_groups("group: g\n\tnodes node1:-1,node2:٣\n", "groups.cfg")
    assert errors_of(exc) == [(2, "nodes")]


def test_datacenter_unknown_repeated_and_odd_numbers() -> None:
    text = (
        "{\n"  # 1
        '  "ha": {"shutdown_policy": "migrate"},\n'  # 2
        '  "crs": {\n'  # 3
        '    "ha": "static",\n'  # 4
        '    "ha": "basic",\n'  # 5 repeated
        '    "ha-rebalance-on-start": 2,\n'  # 6
        '    "colour": "red"\n'  # 7 unknown
        "  },\n"  # 8
        '  "keyboard": "de"\n'  # 9 unknown section
        "}\n"
    )
    with pytest.raises(ConfigErrors) as exc:
        hacfg.parse_datacenter(text, "/etc/hafence/ha/datacenter.cfg")
    assert errors_of(exc) == [
        (5, "crs.ha"),
        (6, "crs.ha-rebalance-on-start"),
        (7, "crs.colour"),
        (9, "keyboard"),
    ]
    assert "datacenter.cfg:5: crs.ha: given twice" in str(exc.value)
    for value, says in (
        ("NaN", "NaN is not a JSON number"),
        ("Infinity", "Infinity is not a JSON number"),
        ("1e999", "is not finite"),
        ("9" * 5000, "is too big"),
    ):
        with pytest.raises(ConfigErrors, match=says):
            hacfg.parse_datacenter('{"ha": {"max_worker": ' + value + "}}", "dc.cfg")
    with pytest.raises(ConfigErrors, match="nested too deeply"):
        hacfg.parse_datacenter("[" * 100_000, "dc.cfg")
    dc = hacfg.parse_datacenter('{"crs": {"ha": "dynamic", "ha-auto-rebalance": true}}')
    assert dc["crs"] == {"ha": "dynamic", "ha-auto-rebalance": True}


def test_rules_validated_per_type() -> None:
    text = (
        "node-affinity: no-nodes\n"  # 1
        "\tresources vm:100\n"  # 2
        "\n"
        "resource-affinity: no-kind\n"  # 4
        "\tresources vm:100,vm:101\n"  # 5
        "\n"
        "resource-affinity: mixed\n"  # 7
        "\tresources vm:100,vm:101\n"  # 8
        "\taffinity positive\n"  # 9
        "\tnodes node1\n"  # 10 belongs to node-affinity only
        "\n"
        "node-affinity: empty\n"  # 12
        "\tresources ,\n"  # 13
        "\tnodes node1\n"  # 14
        "\n"
        "node-affinity: twice\n"  # 16
        "\tresources vm:100,vm:100\n"  # 17
        "\tnodes node1\n"  # 18
        "\tstrict 2\n"  # 19
        "\n"
        "node-affinity: x\n"  # 21 an ID needs two characters
        "\n"
        "node-affinity: guest\n"  # 23
        "\tresources vm:42\n"  # 24
        "\tnodes node1\n"  # 25
    )
    with pytest.raises(ConfigErrors) as exc:
        hacfg.parse_rules(text, "/etc/hafence/ha/rules.cfg")
    assert errors_of(exc) == [
        (1, "nodes"),
        (4, "affinity"),
        (10, "nodes"),
        (13, "resources"),
        (17, "resources"),
        (19, "strict"),
        (21, "section"),
        (24, "resources"),
    ]
    ok = hacfg.parse_rules(
        "resource-affinity: apart\n\tresources vm:100,dummy:a\n\taffinity negative\n"
    )
    assert ok["apart"] == {
        "type": "resource-affinity",
        "resources": ["vm:100", "dummy:a"],
        "affinity": "negative",
    }


def test_store_names_the_file_of_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    from hafence.store.embedded import EmbeddedStore

    store = EmbeddedStore(tmp_path / "ha")
    store.write_resources({"vm:100": hacfg.default_resource()})
    path = tmp_path / "ha" / "resources.cfg"
    path.write_bytes(path.read_bytes() + b"# \xff\n")
    with pytest.raises(ConfigErrors) as exc:
        store.read_resources()
    (err,) = exc.value.errors
    assert (err.file, err.line) == (str(path), 3)
    (tmp_path / "ha" / "rules.cfg").write_bytes(b"\xfe")
    with pytest.raises(ConfigErrors, match=r"rules\.cfg:1: not UTF-8"):
        store.read_text("rules.cfg")
