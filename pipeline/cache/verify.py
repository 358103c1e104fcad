"""`nser cache verify`: schema, table/array consistency, every stored object's presence, every chunk's
CRC32C and every value's finiteness, mapped to utterances."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from pipeline.cache.chunks import missing_objects
from pipeline.cache.reader import CacheReader
from pipeline.cache.schema import SPAN_COLUMNS, committed_rows, layer_array_name, table_columns
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


def verify_cache(path: str, storage_options: dict[str, Any] | None = None) -> VerifyReport:
    try:
        reader = CacheReader(path, storage_options)
    except CacheError as exc:
        return VerifyReport(str(path), 0, [f"schema: {exc}"])
    with reader:
        rep = VerifyReport(str(path), reader.n)
        _check_table(reader, rep)
        arrays = [layer_array_name("encoder", i) for i in range(reader.n_encoder_states)] + \
                 [layer_array_name("decoder", i) for i in range(reader.n_decoder_states)] + ["decoder/tokens"]
        for name in arrays:
            # The raw array, not reader.array(): that refuses a missing shard, this reports it.
            _check_array(reader, reader.group[name], name, name.split("/")[0], rep)
    return rep


def _check_table(reader: CacheReader, rep: VerifyReport) -> None:
    t, n = reader.table, reader.n
    ids = list(t["utt_id"])
    if len(set(ids)) != n:
        rep.problems.append("table: duplicate utterance ids")
    for stack, (off, _) in SPAN_COLUMNS.items():
        starts, counts = reader.spans(stack)
        expected = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n else np.array([])
        bad = np.flatnonzero(starts != expected)
        for k in bad:
            rep.affected.setdefault(ids[k], []).append(f"{off} is {starts[k]}, expected {expected[k]}")
        if len(bad):
            rep.problems.append(f"table: {len(bad)} utterances with inconsistent {off}")
        rows = committed_rows(reader.table, stack, reader.n)
        if stack == "decoder" and not reader.n_decoder_states and rows:  # an encoder-only source
            rep.problems.append(f"table: {rows} decoder positions, but the {reader.source} source has no decoder")
        # arrays shorter than `rows`: _check_array, array by array
    unknown = sorted(set(map(str, t["label"])) - set(reader.classes))
    if unknown:
        rep.problems.append(f"table: labels {unknown} not in the class list {reader.classes}")
    for col in table_columns():
        if len(t[col]) != n:
            rep.problems.append(f"table: column {col} has {len(t[col])} rows, {n} committed")
    # realized_snr_db is NaN for clean audio by design; Inf is never a measured SNR.
    for col, bad in (("duration", ~np.isfinite(t["duration"])), ("truncated_s", ~np.isfinite(t["truncated_s"])),
                     ("realized_snr_db", np.isinf(t["realized_snr_db"]))):
        for k in np.flatnonzero(bad):
            rep.affected.setdefault(ids[k], []).append(f"table column {col} is {t[col][k]}")
        if bad.any():
            rep.problems.append(f"table: {int(bad.sum())} utterances with a non-finite {col}")


def _check_array(reader: CacheReader, arr: zarr.Array, name: str, stack: str, rep: VerifyReport) -> None:
    """Read every inner chunk covering committed rows; an absent stored object, a checksum or
    decode failure, or a non-finite value marks its rows."""
    starts, counts = reader.spans(stack)
    rows = committed_rows(reader.table, stack, reader.n)
    if arr.shape[0] < rows:  # metadata from an earlier commit than the table: the rest reads as nothing
        short = np.flatnonzero(starts + counts > arr.shape[0])
        rep.problems.append(f"{name}: {arr.shape[0]} rows, the committed utterances need {rows}")
        for k in short:
            rep.affected.setdefault(str(reader.table["utt_id"][k]), []).append(
                f"{name} ends at row {arr.shape[0]}, before this utterance's rows")
        rows = int(arr.shape[0])
    chunk = arr.chunks[0]
    missing = missing_objects(arr, rows)
    bad_ranges = [(m.lo, m.hi, f"stored file missing ({m.key}), would read as zeros") for m in missing]
    absent = [(m.lo, m.hi) for m in missing]
    for c0 in range(0, rows, chunk):
        if any(lo <= c0 < hi for lo, hi in absent):
            continue
        c1 = min(rows, c0 + chunk)
        rep.chunks_checked += 1
        try:
            values = arr[c0:c1]
        except Exception as exc:  # zarr raises ValueError for checksum mismatches, others for decoding
            bad_ranges.append((c0, c1, f"{type(exc).__name__}: {str(exc)[:80]}"))
            continue
        if values.dtype.kind == "f":
            finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
            for r in np.flatnonzero(~finite):
                bad_ranges.append((c0 + int(r), c0 + int(r) + 1, "non-finite values (NaN or Inf)"))
    for lo, hi, why in _merged(bad_ranges):
        rep.problems.append(f"{name}: rows {lo}-{hi}: {why}")
        hit = np.flatnonzero((starts < hi) & (starts + counts > lo))
        for k in hit:
            rep.affected.setdefault(str(reader.table["utt_id"][k]), []).append(f"{name} rows {lo}-{hi}: {why}")


def _merged(ranges: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Adjacent row ranges with the same reason as one (a NaN-filled utterance is one problem, not
    one per row)."""
    out: list[tuple[int, int, str]] = []
    for lo, hi, why in sorted(ranges):
        if out and out[-1][2] == why and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi, why)
        else:
            out.append((lo, hi, why))
    return out
