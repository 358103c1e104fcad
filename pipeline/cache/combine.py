"""Parts of one extraction -> one ordinary cache (`nser cache combine`).

A part is an ordinary cache of a contiguous block of the manifest (pipeline/extract/parts.py) whose
identity also holds a `part` record: which part of how many, the batch size the split was cut at,
and the whole manifest's hash and entry count. The cache combined from all parts of one split is
the one a single run over the whole manifest writes: same table, same arrays, same error table,
same attributes and identity hash (only the writer's random token differs).

Written beside the target and renamed into place, under the target's writer lock: a crash leaves
either no cache at OUT or the complete one, and the next combine removes the leftovers.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cache.lock import ReadersLock, WriterLock
from pipeline.cache.reader import CacheReader
from pipeline.cache.records import CacheAttrs, ErrorRecord
from pipeline.cache.schema import table_columns
from pipeline.cache.writer import CacheLayout, CacheWriter, _identity_diff, _what_is_at, identity_hash
from pipeline.errors import CacheError

PART_KEY = "part"  # key of the part record in a part's identity


@dataclass(frozen=True)
class PartRecord:
    """Which part of a split manifest a cache holds. Kept in the part's identity, so that a part of
    another split, batch size or manifest is never resumed into or combined with this one."""
    index: int  # 0 .. count-1
    count: int
    batch_size: int  # parts are cut at whole batches of this size
    manifest_hash: str  # of the whole manifest (the part's corpus record hashes its own block)
    n_manifest: int  # entries of the whole manifest, rejected ones included

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "batch_size": self.batch_size,
                "manifest_hash": self.manifest_hash, "n_manifest": self.n_manifest}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PartRecord":
        return cls(d["index"], d["count"], d["batch_size"], d["manifest_hash"], d["n_manifest"])

    def amend(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """A part's attributes: the extraction's, with this record in the identity."""
        return dict(attrs, identity=dict(attrs["identity"], **{PART_KEY: self.to_dict()}))


def part_name(index: int, count: int) -> str:
    return f"part-{index}-of-{count}.zarr"


def whole_attrs(part_attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes a single run over the whole manifest hands its writer, from a part's."""
    record = PartRecord.from_dict(part_attrs["identity"][PART_KEY])
    attrs = CacheAttrs.from_dict(part_attrs)
    corpus = dataclasses.replace(attrs.corpus, manifest_hash=record.manifest_hash)
    identity = {k: v for k, v in attrs.identity.items() if k != PART_KEY}
    identity["corpus"] = corpus.to_dict()
    return dataclasses.replace(attrs, corpus=corpus, n_manifest=record.n_manifest, identity=identity).to_dict()


@dataclass
class CombineReport:
    path: Path
    n_parts: int
    n_utterances: int
    errors: list[ErrorRecord]
    identity_hash: str


def combine_parts(parts_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> CombineReport:
    """Write one cache at `out` from the complete parts in `parts_dir`; refuses a missing or
    incomplete part, parts of different splits or settings, overlapping utterances, and an existing
    `out` unless `overwrite`."""
    out = Path(out).resolve()
    check_combine_target(out, overwrite)
    readers = _open_parts(Path(parts_dir))
    try:
        attrs, errors = _check_parts(Path(parts_dir), readers)
        lock = WriterLock(out)  # the combine and any writer of `out` exclude each other
        lock.acquire()
        try:
            n = _write_combined(readers, attrs, errors, out, overwrite)
        finally:
            lock.release()
    finally:
        for r in readers:
            r.close()
    return CombineReport(out, len(readers), n, errors, identity_hash(attrs["identity"]))


def _open_parts(parts_dir: Path) -> list[CacheReader]:
    if not parts_dir.is_dir():
        raise CacheError(f"no parts folder at {parts_dir}")
    paths = sorted(parts_dir.glob("part-*-of-*.zarr"))
    if not paths:
        raise CacheError(f"{parts_dir} holds no part caches (part-K-of-N.zarr, written by nser-extract --parts)")
    readers: list[CacheReader] = []
    try:
        for p in paths:
            r = CacheReader(p)
            readers.append(r)
            if PART_KEY not in r.attrs["identity"]:
                raise CacheError(f"{p} is a whole cache, not a part (nser-extract --parts N --part K)")
    except BaseException:
        for r in readers:
            r.close()
        raise
    return sorted(readers, key=lambda r: r.attrs["identity"][PART_KEY]["index"])


def _check_parts(parts_dir: Path, readers: list[CacheReader]) -> tuple[dict[str, Any], list[ErrorRecord]]:
    """The combined cache's attributes and error table, once the parts are known to fit together."""
    records = [PartRecord.from_dict(r.attrs["identity"][PART_KEY]) for r in readers]
    counts = sorted({p.count for p in records})
    if len(counts) > 1:
        raise CacheError(f"{parts_dir} mixes parts of splits into {counts} parts; keep one split's parts")
    count = counts[0]
    missing = sorted(set(range(count)) - {p.index for p in records})
    if missing:
        raise CacheError(f"{parts_dir}: part(s) {missing} of {count} are missing; run nser-extract --parts {count} "
                         f"--part K for each (or rerun nser-extract --workers)")
    attrs = whole_attrs(readers[0].attrs)
    want = identity_hash(attrs["identity"])
    for r, p in zip(readers, records):
        mine = whole_attrs(r.attrs)
        if identity_hash(mine["identity"]) != want or p.batch_size != records[0].batch_size:
            diff = (f"batch size: {records[0].batch_size} -> {p.batch_size}" if p.batch_size != records[0].batch_size
                    else _identity_diff(attrs["identity"], mine["identity"]))
            raise CacheError(f"{r.path}: part {p.index} was extracted with other settings than part 0 ({diff}); "
                             "re-extract it with the same options as the other parts")
        if r.attrs["layout"] != readers[0].attrs["layout"]:
            raise CacheError(f"{r.path}: part {p.index} has another chunk layout than part 0")
        if not r.complete:
            raise CacheError(f"{r.path}: part {p.index} is incomplete ({r.n} cached + {len(r.errors)} failed of "
                             f"{r.meta.n_manifest} entries); rerun its extraction to finish it")
    seen: dict[str, int] = {}
    for r, p in zip(readers, records):
        for utt in [*map(str, r.table["utt_id"]), *(e.utt_id for e in r.errors)]:
            if utt in seen:
                raise CacheError(f"utterance {utt} is in part {seen[utt]} and part {p.index}; parts must not overlap")
            seen[utt] = p.index
    if len(seen) != attrs["n_manifest"]:
        raise CacheError(f"{parts_dir}: the parts account for {len(seen)} entries, the manifest has "
                         f"{attrs['n_manifest']}")
    # In part order: part 0 holds the corpus reader's rejections first, then failures in manifest
    # order, as a single run records them.
    errors = [e for r in readers for e in r.errors]
    return attrs, errors


def _write_combined(readers: list[CacheReader], attrs: dict[str, Any], errors: list[ErrorRecord], out: Path,
                    overwrite: bool) -> int:
    staging = out.with_name(f".{out.name}.combining")
    trash = out.with_name(f".{out.name}.replaced")
    for leftover in (staging, trash):  # of a combine that crashed; the lock says none is running
        if leftover.exists():
            shutil.rmtree(leftover)
    layout = CacheLayout(**readers[0].attrs["layout"])
    try:
        writer = CacheWriter(staging, attrs, layout=layout)
        with writer:
            for r in readers:
                _copy_rows(r, writer, layout.encoder_shard_frames)
            writer.set_errors(errors)
        n = len(writer.done_ids)
        if check_combine_target(out, overwrite) == "cache":  # again: something may have appeared meanwhile
            _replace(out, staging, trash)
        else:
            os.replace(staging, out)  # onto nothing, or onto an empty folder
    finally:
        staging.with_name(f".{staging.name}.nser-lock").unlink(missing_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
    return n


def check_combine_target(out: Path, overwrite: bool) -> str:
    """What is at `out` ("absent", "empty" or "cache"), if the combined cache may go there."""
    found = _what_is_at(out)
    if found == "cache" and not overwrite:
        raise CacheError(f"{out} already exists; pass --overwrite to replace it with the combined parts")
    if found not in ("absent", "empty", "cache"):
        raise CacheError(f"{out} {found}, not an nser-pipeline cache; nothing was changed. Choose another --out")
    return found


def _replace(out: Path, staging: Path, trash: Path) -> None:
    """Swap the new cache in, as the writer's --overwrite does: refused while anything reads `out`."""
    readers = ReadersLock(out)
    readers.exclude()
    try:
        os.replace(out, trash)
        os.replace(staging, out)
    finally:
        readers.release()
    shutil.rmtree(trash)


def _copy_rows(reader: CacheReader, writer: CacheWriter, block_frames: int) -> None:
    """Every utterance of `reader`, in table order, read about `block_frames` encoder frames at a
    time (one read per layer and block, not per utterance)."""
    enc_lo, enc_n = reader.spans("encoder")
    dec_lo, dec_n = reader.spans("decoder")
    columns = list(table_columns())
    start = 0
    while start < reader.n:
        stop = start + 1
        while stop < reader.n and enc_lo[stop] + enc_n[stop] - enc_lo[start] <= block_frames:
            stop += 1
        e0, e1 = int(enc_lo[start]), int(enc_lo[stop - 1] + enc_n[stop - 1])
        d0, d1 = int(dec_lo[start]), int(dec_lo[stop - 1] + dec_n[stop - 1])
        enc = [reader.array("encoder", i)[e0:e1] for i in range(reader.n_encoder_states)]
        dec = [reader.array("decoder", i)[d0:d1] for i in range(reader.n_decoder_states)]
        for k in range(start, stop):
            fe = slice(int(enc_lo[k]) - e0, int(enc_lo[k] + enc_n[k]) - e0)
            fd = slice(int(dec_lo[k]) - d0, int(dec_lo[k] + dec_n[k]) - d0)
            row = {c: reader.table[c][k] for c in columns}
            writer.add(row, [a[fe] for a in enc], [a[fd] for a in dec], reader.tokens(k))
            writer.commit_if_due()
        start = stop
