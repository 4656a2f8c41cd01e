"""The CLI runtime: a command's secrets are masked in everything it prints, and only
there: commands run in one process (tests, embedding) never mask each other's words."""

from __future__ import annotations

import click
from click.testing import CliRunner

from hafence.cli import output as out


@click.command()
@out.command_body
def uses_a_secret() -> None:
    out.register_secret("false")  # a password may be any word
    out.echo('{"password": "false"}')


@click.command()
@out.command_body
def prints_a_word() -> None:
    out.echo('{"watchdog_caused_last_boot": false}')


def test_a_commands_secret_is_masked_in_its_own_output_only() -> None:
    r = CliRunner().invoke(uses_a_secret)
    assert r.exit_code == 0 and r.output == '{"password": "******"}\n', r.output
    r = CliRunner().invoke(prints_a_word)
    assert r.output == '{"watchdog_caused_last_boot": false}\n', r.output
