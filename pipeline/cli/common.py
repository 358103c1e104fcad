"""What every command shares: the error-to-message path, choices read from registries, and the
options that mean the same wherever they appear.

Heavy libraries (torch, transformers, dask, pandas, matplotlib) are imported inside the command
functions, at their top, and inside the registry loaders, never at module level: building the
command tree for `nser --help` must stay fast."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

import click

from pipeline.errors import NserError


class NserCommand(click.Command):
    """Every command's class: an NserError (input, configuration or cache state) ends the command
    with its message and exit status 1 (or the error class's own `exit_code`, e.g. 3 for a model
    that cannot be had), without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NserError as exc:
            err = click.ClickException(str(exc))
            err.exit_code = getattr(exc, "exit_code", 1)
            raise err from exc


class NserGroup(click.Group):
    """Command groups: their commands are NserCommands and their subgroups NserGroups."""

    command_class = NserCommand
    group_class = type  # click: subgroups get this group's own class


class RegistryChoice(click.Choice):
    """A Choice whose names are the keys of a registry, read on first use, so that building the
    command tree does not import the registry's module (torch for the fusions)."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    @choices.setter
    def choices(self, _value) -> None:
        """click.Choice.__init__ assigns the (empty) choices; the registry is the source."""


def _parse_storage_options(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg}): {value!r}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"must be a JSON object, e.g. '{{\"anon\": true}}', not {value!r}")
    return parsed


storage_options_option = click.option(
    "--storage-options", callback=_parse_storage_options, metavar="JSON",
    help="fsspec options for a cache given as a URL (s3://, gs://, https://, ...), as a JSON object, "
         "e.g. '{\"anon\": true}' or credentials. Remote caches are read-only.")

cache_option = click.option("--cache", "cache", required=True,
                            help="Cache made by nser-extract: a path, or a URL (read-only).")

quiet_option = click.option("--quiet", is_flag=True, help="No progress bar.")


def seed_option(help: str) -> Callable:
    """The seed of a learner (trainer, probe): any value numpy and torch both accept."""
    return click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help=help)


def layers_option(help: str, default: str = "enc:all,dec:all") -> Callable:
    return click.option("--layers", default=default, show_default=True, help=help)


def json_option(help: str = "One JSON object.") -> Callable:
    return click.option("--json", "as_json", is_flag=True, help=help)
