"""Options shared by several commands (kept apart from `pipeline.cli` so that light commands such
as `nser-probe` can use them without importing the others)."""

from __future__ import annotations

import json
from typing import Any

import click


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
