"""`nser cache verify`: schema, table/array consistency, and every chunk's CRC32C, mapped to utterances."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from pipeline.cache.reader import CacheReader
from pipeline.cache.schema import layer_array_name, table_columns
from pipeline.errors import CacheError


@dataclass
class VerifyReport:
    path: str
    n_utterances: int
    problems: list[str] = field(default_factory=list)
    affected: dict[str, list[str]] = field(default_factory=dict)  # utt_id -> what is wrong
    chunks_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "n_utterances": self.n_utterances,
                "chunks_checked": self.chunks_checked, "problems": self.problems,
                "affected_utterances": self.affected}


def verify_cache(path: str) -> VerifyReport:
    try:
        reader = CacheReader(path)
    except CacheError as exc:
        return VerifyReport(str(path), 0, [f"schema: {exc}"])
    rep = VerifyReport(str(path), reader.n)
    _check_table(reader, rep)
    arrays = [("encoder", i) for i in range(reader.n_encoder_states)] + \
             [("decoder", i) for i in range(reader.n_decoder_states)]
    for stack, i in arrays:
        _check_array(reader, reader.array(stack, i), layer_array_name(stack, i), stack, rep)
    _check_array(reader, reader.group["decoder/tokens"], "decoder/tokens", "decoder", rep)
    return rep


def _check_table(reader: CacheReader, rep: VerifyReport) -> None:
    t, n = reader.table, reader.n
    ids = list(t["utt_id"])
    if len(set(ids)) != n:
        rep.problems.append("table: duplicate utterance ids")
    for stack, off, cnt in (("encoder", "frame_offset", "n_frames"), ("decoder", "token_offset", "n_tokens")):
        expected = np.concatenate([[0], np.cumsum(t[cnt])[:-1]]) if n else np.array([])
        bad = np.flatnonzero(t[off] != expected)
        for k in bad:
            rep.affected.setdefault(ids[k], []).append(f"{off} is {t[off][k]}, expected {expected[k]}")
        if len(bad):
            rep.problems.append(f"table: {len(bad)} utterances with inconsistent {off}")
        rows = int(t[off][-1] + t[cnt][-1]) if n else 0
        name = layer_array_name(stack, 0)
        if reader.group[name].shape[0] < rows:
            rep.problems.append(f"{name}: {reader.group[name].shape[0]} rows, table needs {rows}")
    unknown = sorted(set(map(str, t["label"])) - set(reader.classes))
    if unknown:
        rep.problems.append(f"table: labels {unknown} not in the class list {reader.classes}")
    for col in table_columns():
        if len(t[col]) != n:
            rep.problems.append(f"table: column {col} has {len(t[col])} rows, {n} committed")


def _check_array(reader: CacheReader, arr: zarr.Array, name: str, stack: str, rep: VerifyReport) -> None:
    """Read every inner chunk covering committed rows; a checksum or decode failure marks its rows."""
    t = reader.table
    off, cnt = ("frame_offset", "n_frames") if stack == "encoder" else ("token_offset", "n_tokens")
    rows = int(t[off][-1] + t[cnt][-1]) if reader.n else 0
    chunk = arr.chunks[0]
    shard = arr.shards[0] if arr.shards else chunk
    bad_ranges = []
    for s0 in range(0, rows, shard):
        if not _shard_exists(reader, arr, s0 // shard):
            bad_ranges.append((s0, min(rows, s0 + shard), "shard file missing"))
            continue
        for c0 in range(s0, min(rows, s0 + shard), chunk):
            c1 = min(rows, c0 + chunk)
            rep.chunks_checked += 1
            try:
                arr[c0:c1]
            except Exception as exc:  # zarr raises ValueError for checksum mismatches, others for decoding
                bad_ranges.append((c0, c1, f"{type(exc).__name__}: {str(exc)[:80]}"))
    for lo, hi, why in bad_ranges:
        rep.problems.append(f"{name}: rows {lo}-{hi}: {why}")
        hit = np.flatnonzero((t[off] < hi) & (t[off] + t[cnt] > lo))
        for k in hit:
            rep.affected.setdefault(str(t["utt_id"][k]), []).append(f"{name} rows {lo}-{hi}")


def _shard_exists(reader: CacheReader, arr: zarr.Array, index: int) -> bool:
    if reader.path is None:
        return True
    key = "/".join([arr.path, "c", str(index)] + (["0"] if arr.ndim == 2 else []))
    return (reader.path / key).is_file()
