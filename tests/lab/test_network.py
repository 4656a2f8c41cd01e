"""Reading a node's addresses survives a dump that ``ip`` cut short (no lab needed: a
stand-in ``ip`` on PATH prints what an interrupted dump prints)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hafence.lab.layout import LabError, Layout
from hafence.lab.network import DUMP_TRIES, Network

WHOLE = '[{"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet","local":"10.255.255.11",'
WHOLE += '"prefixlen":24},{"family":"inet","local":"10.255.255.100","prefixlen":24}]}]'
CUT = WHOLE[:120]  # what a dump interrupted by an address change leaves


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in ``ip`` printing ``cut`` answers (one per line of its file), then whole."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "ip"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path}/argv\n'
        f"n=$(cat {tmp_path}/calls 2>/dev/null || echo 0); echo $((n+1)) > {tmp_path}/calls\n"
        f'if [ "$n" -lt "$(cat {tmp_path}/cut)" ]; then printf %s \'{CUT}\'; exit 1; fi\n'
        f"printf %s '{WHOLE}'\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_a_dump_cut_short_is_read_again(ip: Path, tmp_path: Path) -> None:
    net = Network(Layout(tmp_path, "hlzzzz", "10.255.255", ("node1",)))
    (ip / "cut").write_text("2\n")
    assert net.addresses("node1") == ["10.255.255.11", "10.255.255.100"]
    assert (ip / "calls").read_text().strip() == "3"
    (ip / "calls").write_text("0\n")
    (ip / "cut").write_text("1\n")
    net.reset_addresses("node1")  # as a dying node's: only its own address stays
    last = (ip / "argv").read_text().splitlines()[-1]
    assert last.endswith("addr del 10.255.255.100/24 dev eth0"), last


def test_a_dump_never_whole_is_an_error_not_an_empty_node(ip: Path, tmp_path: Path) -> None:
    net = Network(Layout(tmp_path, "hlzzzz", "10.255.255", ("node1",)))
    (ip / "cut").write_text(f"{DUMP_TRIES}\n")
    with pytest.raises(LabError, match="no whole answer"):
        net.addresses("node1")
