"""The vendor's path end to end: a FRESH virtual environment pip-installs the example
plugin next to hafence (a regular, non-editable install of a copy of its directory),
``hafence plugins list`` shows it, ``hafence device`` drives it against its test peer,
and the plugin's own tests (the conformance kit) pass there.

The venv uses --system-site-packages for hafence's dependencies, sees the hafence of the
interpreter running this test (its site-packages, ahead of the base interpreter's, which
may hold another checkout's hafence), and builds offline (--no-build-isolation
--no-index): no network needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.testing.netutil import closed_tcp_port

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "hafence-example-pdu"
PASSWORD = "Venv-pdu!s3cret"
HAFENCE = "import sys; from hafence.cli.main import cli; sys.argv[0] = 'hafence'; cli()"

pytest.importorskip("wheel", reason="pip install -e '.[test]' (builds the plugin offline)")


def run(*argv: str | Path, **kw) -> subprocess.CompletedProcess[str]:
    kw.setdefault("timeout", 300)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the example plugin installed from a copy of its directory."""
    base = tmp_path_factory.mktemp("vendor")
    src = base / "hafence-example-pdu"
    shutil.copytree(
        PLUGIN,
        src,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    env_dir = base / "venv"
    r = run(sys.executable, "-m", "venv", "--system-site-packages", env_dir)
    assert r.returncode == 0, r.stderr
    py = env_dir / "bin" / "python"
    # The hafence under test is this interpreter's (e.g. an editable install of this
    # checkout): its site-packages go before the base interpreter's in the new venv.
    r = run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    assert r.returncode == 0, r.stderr
    here = sysconfig.get_paths()["purelib"]
    pth = Path(r.stdout.strip()) / "_hafence_under_test.pth"
    pth.write_text(f"import site; site.addsitedir({here!r})\n")
    r = run(py, "-m", "pip", "install", "--no-build-isolation", "--no-index", "-q",
            "--disable-pip-version-check", src)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return env_dir


def hafence(venv: Path, *args: str, env: dict[str, str] | None = None):
    return run(venv / "bin" / "python", "-c", HAFENCE, *args, env=env)


def test_installed_in_the_venv(venv: Path) -> None:
    code = (
        "import importlib.metadata as m, hafence_example_pdu as p; "
        "print(p.__file__); print(m.version('hafence-example-pdu'))"
    )
    r = run(venv / "bin" / "python", "-c", code)
    assert r.returncode == 0, r.stderr
    path, version = r.stdout.split()
    assert Path(path).is_relative_to(venv), f"imported from {path}, not the venv"
    assert version == "0.1.0"


def test_plugins_list_shows_it(venv: Path) -> None:
    r = hafence(venv, "plugins", "list")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("example_pdu "))
    assert row.split()[1:] == ["hafence-example-pdu", "0.1.0", "hafence_example_pdu",
                               "fence:example_pdu", "ok"]  # fmt: skip
    r = hafence(venv, "driver", "metadata", "example_pdu", "--format", "json")
    assert r.returncode == 0, r.stderr
    params = {p["name"]: p for p in json.loads(r.stdout)["parameters"]}
    assert params["password"]["secret"] and params["password"]["default"] is None


@pytest.fixture
def peer(venv: Path) -> Iterator[int]:
    """The plugin's simulated PDU, run from the venv as a vendor would run it."""
    port = closed_tcp_port()
    env = {**os.environ, "EXAMPLE_PDU_PASSWORD": PASSWORD}
    proc = subprocess.Popen(
        [venv / "bin" / "python", "-m", "hafence_example_pdu.peer", "--port", str(port)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"listening on 127.0.0.1:{port}" in line, line
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_hafence_drives_it_against_its_peer(venv: Path, peer: int, tmp_path: Path) -> None:
    env = {**os.environ, "PDU_PW": PASSWORD, "HAFENCE_STATE_DIR": str(tmp_path)}
    device = ["--driver", "example_pdu", "-o", "ip=127.0.0.1", "-o", f"ipport={peer}",
              "-o", "plug=2", "--password-env", "PDU_PW"]  # fmt: skip

    def act(action: str, *extra: str) -> dict:
        r = hafence(venv, "--output", "json", "device", action, *device, *extra, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert PASSWORD not in r.stdout + r.stderr
        return json.loads(r.stdout)

    assert act("status")["state"] == "on"
    off = act("off", "--yes")
    assert off["ok"] and off["state"] == "off"  # confirmed by the fencer's status polls
    assert act("status")["state"] == "off"
    assert act("on")["state"] == "on"
    ports = act("list")["ports"]
    assert [p["id"] for p in ports][:2] == ["1", "2"]
    history = (tmp_path / "fence-history.jsonl").read_text()
    assert '"example_pdu"' in history and PASSWORD not in history


def test_plugin_tests_pass_in_the_venv(venv: Path) -> None:
    """The vendor's own test run: the conformance kit from the installed hafence."""
    src = venv.parent / "hafence-example-pdu"
    r = run(venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
            src / "tests", cwd=src)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "failed" not in r.stdout
