"""The cache contract (`cache_schema.yaml`) and its validation on write and on open."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml
import zarr

from pipeline.errors import CacheError

SCHEMA_PATH = Path(__file__).with_name("cache_schema.yaml")
ATTR_KEY = "nser"


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def schema_version() -> int:
    return int(load_schema()["schema_version"])


def table_columns() -> dict[str, str]:
    return dict(load_schema()["table"])


def column_dtype(kind: str) -> Any:
    return str if kind == "str" else np.dtype(kind)


def layer_array_name(stack: str, i: int) -> str:
    return f"{stack}/layer_{i:02d}"


# The table columns that place an utterance's rows in each stack's arrays: [offset, offset + count).
SPAN_COLUMNS = {"encoder": ("frame_offset", "n_frames"), "decoder": ("token_offset", "n_tokens")}


def committed_rows(table: Any, stack: str, n: int) -> int:
    """Rows of `stack`'s arrays held by the first `n` utterances of `table` (the reader's columns or
    the store's `utterances` group): rows are appended in table order, so the last one's end."""
    if not n:
        return 0
    off, cnt = SPAN_COLUMNS[stack]
    return int(table[off][n - 1] + table[cnt][n - 1])


def validate_attributes(attrs: dict[str, Any], where: str) -> None:
    # NaN/Inf would be written as bare NaN/Infinity tokens: not JSON, and meaningless as settings.
    try:
        # numpy scalars as their Python value (a float32 NaN is found too); the schema judges types.
        json.dumps(attrs, allow_nan=False, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    except ValueError:
        raise CacheError(f"{where}: cache attributes hold a non-finite number (NaN or Inf) at "
                         f"{_non_finite_at(attrs)}; every setting stored in a cache must be finite "
                         "(check --snr and the other numeric options; re-extract a cache that holds one)") from None
    try:
        jsonschema.validate(attrs, load_schema()["attributes"])
    except jsonschema.ValidationError as exc:
        path = "/".join(map(str, exc.absolute_path)) or "(root)"
        raise CacheError(f"{where}: cache attributes break cache_schema.yaml at {path}: {exc.message}") from None


def _non_finite_at(value: Any, path: str = "") -> str:
    """Where the first NaN/Inf sits in nested attributes, as a/b/0 (for the error message)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, sub in items:
        found = _non_finite_at(sub, f"{path}/{key}")
        if found:
            return found
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return path.lstrip("/") or "(root)"
    return ""


def validate_group(group: zarr.Group, where: str) -> dict[str, Any]:
    """Check attributes, arrays and table columns against the schema; returns the attributes."""
    if ATTR_KEY not in group.attrs:
        raise CacheError(f"{where}: not an nser-pipeline cache (no '{ATTR_KEY}' attributes)")
    attrs = dict(group.attrs[ATTR_KEY])
    found = attrs.get("schema_version")
    if found != schema_version():
        raise CacheError(f"{where}: cache schema version {found}, this code reads version "
                         f"{schema_version()}; re-extract the cache or use a matching nser-pipeline")
    validate_attributes(attrs, where)
    model = attrs["model"]
    stored = np.dtype(attrs["extraction"]["dtype"])
    n_rows = attrs["n_committed"]
    members = _array_shapes(group)
    for stack, count in (("encoder", model["n_encoder_states"]), ("decoder", model["n_decoder_states"])):
        for i in range(count):
            name = layer_array_name(stack, i)
            if name not in members:
                raise CacheError(f"{where}: missing array {name}")
            shape, dtype = members[name]
            if len(shape) != 2 or shape[1] != model["d_model"] or dtype != stored:
                raise CacheError(f"{where}: array {name} has shape {shape} dtype {dtype}, "
                                 f"expected (rows, {model['d_model']}) {stored}")
    for col, kind in table_columns().items():
        name = f"utterances/{col}"
        if name not in members:
            raise CacheError(f"{where}: missing table column {name}")
        shape, dtype = members[name]
        if shape[0] < n_rows:
            raise CacheError(f"{where}: table column {col} has {shape[0]} rows, {n_rows} committed")
        if kind != "str" and dtype != np.dtype(kind):
            raise CacheError(f"{where}: table column {col} is {dtype}, expected {kind}")
    return attrs


def _array_shapes(group: zarr.Group) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Shape and dtype of every array the contract names, opened by name: remote stores (plain
    HTTP) cannot list folders, and a listing would also read arrays nobody asked for."""
    model = dict(group.attrs[ATTR_KEY])["model"]
    names = [layer_array_name(stack, i) for stack, count in
             (("encoder", model["n_encoder_states"]), ("decoder", model["n_decoder_states"])) for i in range(count)]
    names += [f"utterances/{col}" for col in table_columns()]
    out = {}
    for name in names:
        try:
            arr = group[name]
        except KeyError:
            continue
        if isinstance(arr, zarr.Array):
            out[name] = (arr.shape, arr.dtype)
    return out
