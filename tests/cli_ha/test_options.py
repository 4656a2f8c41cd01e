"""``ha-manager options``: the datacenter options, checked whole before they are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hafence.store import EmbeddedStore
from tests.cli_ha.test_ha_manager import files, run


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ha"
    s = EmbeddedStore(d)
    s.write_text("datacenter.cfg", '{"ha": {"shutdown_policy": "migrate"}}\n')
    with s.locked():  # a used store has its (empty) lock file; it is not state
        pass
    return d


def test_set_show_and_delete(store_dir: Path) -> None:
    r = run(store_dir, "options", "set", "crs.ha=static", "crs.ha-auto-rebalance=1",
            "crs.ha-auto-rebalance-method=topsis")  # fmt: skip
    assert r.exit_code == 0, r.output
    shown = json.loads(run(store_dir, "options", "show").output)
    assert shown["crs"] == {"ha": "static", "ha-auto-rebalance": 1,
                            "ha-auto-rebalance-method": "topsis"}  # fmt: skip
    assert shown["ha"]["shutdown_policy"] == "migrate"
    assert run(store_dir, "options", "set", "--delete", "crs.ha").exit_code == 0
    assert "ha" not in json.loads((store_dir / "datacenter.cfg").read_text())["crs"]


@pytest.mark.parametrize(
    "args,message",
    [
        (("crs.ha=bogus",), 'crs.ha: invalid value "bogus" (one of basic, static, dynamic)'),
        (("crs.ha-auto-rebalance-margin=2",), "a number from 0 to 1"),
        (("crs.nope=1",), "crs.nope: unknown crs option"),
        (("ha",), "'ha': expected SECTION.KEY=VALUE"),
        (("--delete", "crs.ha"), "--delete: 'crs.ha' is not set"),
    ],
)
def test_a_bad_option_changes_nothing(store_dir: Path, args: tuple[str, ...], message: str) -> None:
    before = files(store_dir)
    r = run(store_dir, "options", "set", *args)
    assert r.exit_code == 1 and message in r.output, r.output
    assert files(store_dir) == before
