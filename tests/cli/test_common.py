"""The shared error path, registry choices and shared options."""

import click
import pytest
from click.testing import CliRunner

from pipeline.cli.common import NserCommand, NserGroup, RegistryChoice, storage_options_option
from pipeline.errors import CacheError


def test_nser_error_is_a_message_and_exit_1():
    @click.group(cls=NserGroup)
    def group():
        """Group."""

    @group.group("inner")
    def inner():
        """Subgroup."""

    @inner.command("fail")
    def fail():
        """Fails."""
        raise CacheError("the cache is gone")

    assert isinstance(inner, NserGroup) and isinstance(fail, NserCommand)
    res = CliRunner().invoke(group, ["inner", "fail"])
    assert res.exit_code == 1 and "Error: the cache is gone" in res.output and "Traceback" not in res.output


def test_other_exceptions_keep_their_traceback():
    @click.command(cls=NserCommand)
    def broken():
        """A bug, not a user's mistake."""
        raise KeyError("bug")

    res = CliRunner().invoke(broken, [])
    assert res.exit_code == 1 and isinstance(res.exception, KeyError)


def test_registry_choice_reads_the_registry_only_when_used():
    registry: dict[str, object] = {}
    calls = []

    def names():
        calls.append(1)
        return registry

    @click.command(cls=NserCommand)
    @click.option("--kind", type=RegistryChoice(names), required=True, help="A registered kind.")
    def cmd(kind):
        """Echo the kind."""
        click.echo(kind)

    assert calls == []  # building the command did not read it
    registry.update(early=object(), late=object())  # registered after the command was built: still choices
    assert CliRunner().invoke(cmd, ["--kind", "late"]).output == "late\n"
    res = CliRunner().invoke(cmd, ["--kind", "other"])
    assert res.exit_code == 2 and "'other' is not one of 'early', 'late'" in res.output


@pytest.mark.parametrize("value, expected", [
    ('{"anon": true}', {"anon": True}),
    ("[1]", "must be a JSON object"),
    ("{anon", "not JSON"),
])
def test_storage_options(value, expected):
    @click.command(cls=NserCommand)
    @storage_options_option
    def cmd(storage_options):
        """Echo the options."""
        click.echo(repr(storage_options))

    res = CliRunner().invoke(cmd, ["--storage-options", value])
    if isinstance(expected, dict):
        assert res.exit_code == 0 and res.output == f"{expected!r}\n"
    else:
        assert res.exit_code == 2 and expected in res.output
