"""Secrets from files, the environment and scripts: clear errors, never the content,
never an unbounded wait or read."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hafence.errors import SecretError
from hafence.secrets import (
    MASK,
    Secret,
    secret_from_env,
    secret_from_file,
    secret_from_script,
    secret_from_source,
)


def test_file_first_line(tmp_path: Path) -> None:
    p = tmp_path / "pw"
    p.write_bytes(b"Sup3r S3cret!\r\nsecond line\n")
    s = secret_from_file(p)
    assert s.reveal() == "Sup3r S3cret!" and str(s) == MASK and "S3cret" not in repr(s)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is empty"),
        (b"\nafter a blank first line\n", "is empty"),
        (b"pw\x00tail\n", "holds a NUL byte"),
        (b"p\xe9w\n", "is not UTF-8 text"),
        (b"p\x1bw\n", "holds control character U+001B"),
        (b"x" * (70 << 10), "too big"),
    ],
)
def test_file_content_refused(tmp_path: Path, content: bytes, says: str) -> None:
    p = tmp_path / "pw"
    p.write_bytes(content)
    with pytest.raises(SecretError) as info:
        secret_from_file(p)
    assert says in str(info.value) and str(p) in str(info.value)
    assert "tail" not in str(info.value) and "p\\xe9w" not in str(info.value)


def test_file_name_refused(tmp_path: Path) -> None:
    cases = {"": "no file name", "a\x00b": "a NUL byte", "/dev/zero": "not a regular file"}
    cases[str(tmp_path)] = "a directory"
    for name, says in cases.items():
        with pytest.raises(SecretError, match=says):
            secret_from_file(name)
    with pytest.raises(SecretError, match="expected file name"):
        secret_from_source("file", 42)


def test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAFENCE_T_PW", "from-env\nignored")
    monkeypatch.setenv("HAFENCE_T_EMPTY", "")
    assert secret_from_env("HAFENCE_T_PW").reveal() == "from-env"
    cases = {"HAFENCE_T_EMPTY": "is empty", "HAFENCE_T_NOPE": "is not set"}
    cases |= {"1BAD": "not an environment variable name", "": "no variable"}
    for name, says in cases.items():
        with pytest.raises(SecretError, match=says):
            secret_from_env(name)


def test_script_first_line_without_a_shell(tmp_path: Path) -> None:
    assert secret_from_script("printf 'a b\\nc'").reveal() == "a b"
    marker = tmp_path / "not-created"
    got = secret_from_script(f"echo x; touch {marker}")  # no shell: ';' is echo's argument
    assert got.reveal() == f"x; touch {marker}" and not marker.exists()


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("false", "exited with status 1"),
        ("true", "is empty"),
        ("/nonexistent-hafence-script", "cannot run script"),
        ("'unbalanced", "cannot split the command"),
        ("yes", "printed more than"),  # never stops printing: cut off, not read to the end
    ],
)
def test_script_failures(command: str, says: str) -> None:
    with pytest.raises(SecretError, match=says):
        secret_from_script(command, timeout=10)


def test_script_is_bounded_and_its_children_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "hang.sh"
    script.write_text(f"#!/bin/sh\nsleep 600 &\necho $! > {pidfile}\nwait\n")
    script.chmod(0o700)
    with pytest.raises(SecretError, match=r"gave no answer within 0\.5s"):
        secret_from_script(str(script), timeout=0.5)
    # it returned long before the child's sleep could end: the child was killed, not
    # waited for (it holds the pipe open, so waiting would last 600 s)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_secret_never_pickled() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Secret("x"))
    assert os.environ.get("HAFENCE_T_PW") is None
