"""Every Proxmox fence_cfgs reference case, compared byte for byte.

Good configs: the command each node gets on each try. Bad configs: the error report.
Only the directory prefix of the file name is normalised.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hafence.fence import FenceConfigErrors, load_fence_config

CASES = Path(__file__).parent / "fence_cfgs"
NODES = ["node1", "node2", "node3"]  # the reference test's cluster


def render(cfg_path: Path) -> str:
    try:
        cfg = load_fence_config(cfg_path)
    except FenceConfigErrors as exc:
        return str(exc).replace(str(cfg_path.parent), "fence_cfgs") + "\n"
    return cfg.render_commands(NODES, reveal_secrets=True)


def test_all_cases_present() -> None:
    names = sorted(p.name for p in CASES.glob("*.cfg"))
    assert len(names) == 6
    for name in names:
        assert (CASES / f"{name}.expect").is_file()


@pytest.mark.parametrize("cfg", sorted(CASES.glob("*.cfg")), ids=lambda p: p.stem)
def test_reference_case(cfg: Path) -> None:
    expected = (CASES / f"{cfg.name}.expect").read_bytes()
    assert render(cfg).encode("utf-8") == expected


def test_render_masks_secrets_by_default() -> None:
    cfg = load_fence_config(CASES / "complex-params-1.cfg")
    text = cfg.render_commands(NODES)
    assert '12"345' not in text and "12345" not in text
    assert "--password=******" in text
    assert "--username='fä" in text  # not a secret, shown
