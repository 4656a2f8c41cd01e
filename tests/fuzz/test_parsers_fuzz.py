"""Property tests: every parser, fed mutations of our own example files, either returns a
result that keeps the file format's rules or raises a hafence error naming the file and
the line; never any other exception (see tests/fuzz/targets.py for the rules).

Bounded and deadline-free so the module adds seconds, not minutes; the large campaign is
``scripts/fuzz_parsers.py``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hafence.errors import ConfigError, ConfigErrors
from tests.fuzz import mutate as mu
from tests.fuzz import targets as tg

EXAMPLES = {
    "fence.cfg": 150,
    "datacenter.cfg": 150,
    "resources.cfg": 150,
    "groups.cfg": 100,
    "rules.cfg": 150,
    "fence history": 100,
    "hardware.toml": 100,
    "password_file": 60,
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tg.Lab:
    return tg.Lab(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def all_targets(lab: tg.Lab) -> dict[str, tuple[tg.Target, list[bytes]]]:
    return {name: (t, t.seeds(lab)) for name, t in tg.targets(lab).items()}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_seeds_are_handled(name: str, lab: tg.Lab, all_targets) -> None:
    """The unmutated seeds: no problem, and several of them valid (so mutations start from
    files the parser accepts; Proxmox's fence_cfgs cases are meant to fail)."""
    target, seeds = all_targets[name]
    outcomes = [target.run(lab, seed) for seed in seeds]
    assert [o.problems for o in outcomes if o.problems] == []
    assert sum(o.accepted for o in outcomes) >= len(seeds) / 3


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_mutated_files(name: str, lab: tg.Lab, all_targets) -> None:
    target, seeds = all_targets[name]

    @settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(st.integers(0, len(seeds) - 1), st.randoms(use_true_random=False))
    def check(index: int, rnd: random.Random) -> None:
        data = mu.mutate(seeds[index], rnd, target.syntax)
        outcome = target.run(lab, data)  # anything but a hafence error fails the test
        assert outcome.problems == [], data

    check()


# -- the oracles themselves can fail ---------------------------------------------------
def test_oracles_catch_invalid_results(lab: tg.Lab) -> None:
    from hafence.fence import driver_class

    ipmi = driver_class("ipmi", lab.registry)
    good = ipmi({"ip": "h", "password": "pw"}).options
    assert tg.option_problems(ipmi, good) == []
    for key, bad in (("timeout", math.inf), ("timeout", -1.0), ("port", 70000), ("lanplus", 1)):
        assert tg.option_problems(ipmi, {**good, key: bad}), (key, bad)
    assert tg.option_problems(ipmi, {**good, "username": "a\nb"})
    assert tg.option_problems(ipmi, {**good, "cipher": "99"})
    assert tg.option_problems(ipmi, {**good, "bogus": "1"})

    res = {"vm:100": {**tg.hacfg.default_resource(), "max_restart": 11}}
    assert tg._resource_problems(lab, res)
    assert tg._resource_problems(lab, {"vm:1": tg.hacfg.default_resource()})
    assert tg._nodes_problems({"node_1": 0}) and tg._nodes_problems({})

    nameless = ConfigErrors("x", [ConfigError("bad", line=1, field="f")])
    assert tg.error_problems(nameless, "/etc/x.cfg", data=b"a")
    lineless = ConfigErrors("/etc/x.cfg", [ConfigError("bad", file="/etc/x.cfg", field="f")])
    assert tg.error_problems(lineless, "/etc/x.cfg", data=b"a")
    fieldless = ConfigErrors("/etc/x.cfg", [ConfigError("bad", file="/etc/x.cfg", line=1)])
    assert tg.error_problems(fieldless, "/etc/x.cfg", need_field=True, data=b"a")


def test_history_oracle_counts_every_line(lab: tg.Lab, tmp_path: Path) -> None:
    (seed,) = tg._history_seeds(lab)
    assert tg._run_history(lab, seed).problems == []
    torn = seed + b'{"actor": "x"'
    out = tg._run_history(lab, torn)
    assert out.problems == [] and not out.accepted  # the torn line is reported, not lost


def test_mutations_change_the_input() -> None:
    syntax = mu.Syntax(tg.re.compile(mu.FENCE), " {k}={v}", "{k}={v}")
    seed = b"device bmc ipmi ip=10.0.0.1 timeout=5\nconnect bmc node=n1\n"
    rnd = random.Random(7)
    outs = {mu.mutate(seed, rnd, syntax) for _ in range(2000)}
    assert len(outs) > 1000
    assert any(b"timeout=inf" in o or b"timeout=nan" in o or b"timeout=-1" in o for o in outs)
    assert any(not _utf8(o) for o in outs)
    assert any(b"\x00" in o for o in outs)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
