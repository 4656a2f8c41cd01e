"""docs/writing-plugins.md stays true: its code blocks are the example plugin's code,
and it names every hook, error class, common parameter, kit check and fixture there is."""

from __future__ import annotations

import dataclasses
import inspect
import re
import shlex
import textwrap
from pathlib import Path

import pytest

from hafence import hookspecs
from hafence.errors import FENCE_ERROR_KINDS
from hafence.fence.driver import COMMON_PARAMS, Param
from hafence.testing import CHECKS, DriverConformance

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "writing-plugins.md"
PLUGIN = REPO / "plugins" / "hafence-example-pdu"
SNIPPET = re.compile(r"<!-- snippet: (\S+) -->\n```\w*\n(.*?)```\n", re.DOTALL)
REGION = re.compile(r"^\s*# \[guide:([\w-]+)\]\s*$", re.MULTILINE)


def guide() -> str:
    return GUIDE.read_text()


def region(path: Path, name: str) -> str:
    lines = path.read_text().splitlines(keepends=True)
    marks = [i for i, ln in enumerate(lines) if ln.strip() in (f"# [guide:{name}]",
                                                               f"# [/guide:{name}]")]  # fmt: skip
    assert len(marks) == 2, f"{path}: region '{name}' needs one start and one end marker"
    return textwrap.dedent("".join(lines[marks[0] + 1 : marks[1]]))


def snippets() -> list[tuple[str, str]]:
    found = SNIPPET.findall(guide())
    assert len(found) >= 6, "the guide lost its code snippets"
    return found


@pytest.mark.parametrize("ref", [ref for ref, _ in snippets()])
def test_snippet_is_the_plugin_code(ref: str) -> None:
    shown = dict(snippets())[ref]
    path, _, name = ref.partition("#")
    file = REPO / path
    assert file.is_file(), f"the guide shows {path}, which does not exist"
    actual = region(file, name) if name else file.read_text()
    assert shown == actual, f"the guide's copy of {ref} differs from the file"


def test_every_marked_region_is_in_the_guide() -> None:
    shown = {ref for ref, _ in snippets()}
    for file in sorted(PLUGIN.rglob("*.py")):
        rel = file.relative_to(REPO)
        for name in REGION.findall(file.read_text()):
            assert f"{rel}#{name}" in shown, f"{rel} region '{name}' is not in the guide"


def test_guide_names_every_contract_item() -> None:
    text = guide()
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if n.startswith("hafence_")]  # fmt: skip
    assert len(hooks) >= 4
    names = [*hooks, *(p.name for p in COMMON_PARAMS), *CHECKS]
    names += [f.name for f in dataclasses.fields(Param)]
    for kind, cls in FENCE_ERROR_KINDS.items():
        names += [cls.__name__, kind]
    fixtures = ["device_options", "device_power", "unreachable_options",
                "wrong_credentials_options", "silent_tcp_port", "closed_tcp_port",
                "closed_udp_port"]  # fmt: skip
    attrs = ["unreachable_timeout", "timeout_margin", "max_loop_stall", "skip_checks"]
    for attr in attrs:
        assert hasattr(DriverConformance, attr)
    missing = [n for n in [*names, *fixtures, *attrs] if f"`{n}" not in text and n not in text]
    assert not missing, f"the guide does not mention {missing}"


def test_guide_commands_exist() -> None:
    import click

    from hafence.cli.main import cli

    commands = [ln[2:] for ln in guide().splitlines() if ln.startswith("$ hafence ")]
    assert len(commands) >= 4
    for line in commands:
        words = [w for w in shlex.split(line.rstrip("\\").split("#")[0]) if w != "\\"][1:]
        group: click.Command = cli
        ctx = click.Context(cli)
        for word in words:
            if not isinstance(group, click.Group) or word.startswith("-"):
                break
            sub = group.get_command(ctx, word)
            assert sub is not None, f"guide: 'hafence ... {word}' is not a command ({line})"
            group = sub


def update() -> None:
    """Rewrite the guide's snippets from the files (after changing the example)."""

    def fill(m: re.Match[str]) -> str:
        ref = m.group(1)
        path, _, name = ref.partition("#")
        code = region(REPO / path, name) if name else (REPO / path).read_text()
        lang = {"py": "python", "toml": "toml"}.get(path.rsplit(".", 1)[-1], "")
        return f"<!-- snippet: {ref} -->\n```{lang}\n{code}```\n"

    GUIDE.write_text(SNIPPET.sub(fill, guide()))


if __name__ == "__main__":  # python tests/kit/test_guide.py: refresh the snippets
    update()
