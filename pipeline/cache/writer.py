"""CacheWriter: appends utterances' hidden states to a Zarr v3 cache and commits them in batches.

Rows are buffered and written about one shard at a time because a shard is rewritten whole on
every write touching it; committing at least a shard's worth keeps that rewrite cost below 2x.
The attribute `n_committed` moves only after a batch's arrays and table rows are all written, and
zarr's local store replaces every file atomically, so a crash at any point leaves the previous
commit intact and a rerun resumes from it. Every inner chunk carries a CRC32C checksum that
zarr verifies on read (`nser cache verify` reads them all). One writer at a time: a lock held
for the writer's lifetime, released by the OS if the process dies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from pipeline.cache.schema import (ATTR_KEY, column_dtype, layer_array_name, schema_version,
                                   table_columns, validate_attributes, validate_group)
from pipeline.cache.lock import WriterLock
from pipeline.errors import CacheError
from pipeline.failpoints import failpoint


@dataclass(frozen=True)
class CacheLayout:
    encoder_chunk_frames: int = 64    # ~1.3 s: one utterance reads at most ~2 chunks beyond itself
    encoder_shard_frames: int = 4096  # one file per ~82 s of audio per layer
    decoder_chunk_tokens: int = 16
    decoder_shard_tokens: int = 1024


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class CacheWriter:
    def __init__(self, path: str | Path, attrs: dict[str, Any], *, layout: CacheLayout = CacheLayout(),
                 overwrite: bool = False, commit_frames: int | None = None):
        """`attrs` holds everything of the schema's attributes but n_committed, layout and schema_version."""
        self.path = Path(path)
        attrs = dict(attrs, schema_version=schema_version(), n_committed=0, layout=vars(layout).copy())
        attrs["identity_hash"] = identity_hash(attrs["identity"])
        validate_attributes(attrs, str(self.path))
        model = attrs["model"]
        self.n_enc, self.n_dec, self.d = model["n_encoder_states"], model["n_decoder_states"], model["d_model"]
        self.lock = WriterLock(self.path)
        self.lock.acquire()
        try:
            self._open_or_create(attrs, layout, overwrite)
        except BaseException:
            self.lock.release()
            raise
        table = self.group["utterances"]
        n = self.attrs["n_committed"]
        self.done_ids: set[str] = set(table["utt_id"][:n].tolist()) if n else set()
        self.n_frames_total, self.n_tokens_total = _committed_rows(table, n)
        self._rows: list[dict[str, Any]] = []
        self._enc: list[list[np.ndarray]] = [[] for _ in range(self.n_enc)]
        self._dec: list[list[np.ndarray]] = [[] for _ in range(self.n_dec)]
        self._tokens: list[np.ndarray] = []
        self._buffered_frames = 0
        self.commit_frames = commit_frames or layout.encoder_shard_frames

    def _open_or_create(self, attrs: dict[str, Any], layout: CacheLayout, overwrite: bool) -> None:
        if self.path.exists() and overwrite:
            shutil.rmtree(self.path)
        if self.path.exists():
            self.group = zarr.open_group(str(self.path), mode="r+")
            existing = validate_group(self.group, str(self.path))
            if existing["identity_hash"] != attrs["identity_hash"]:
                raise CacheError(
                    f"{self.path} holds a cache made with other settings "
                    f"({_identity_diff(existing['identity'], attrs['identity'])}); "
                    "choose another --out or pass --overwrite")
            self.attrs = existing
            # What the manifest holds is not identity (the class map's exclusions can change it
            # without changing any stored value): the current run's count wins, from the next commit.
            if "n_manifest" in attrs:
                self.attrs["n_manifest"] = attrs["n_manifest"]
            self._truncate_to_commit()
            return
        # Built beside the target and renamed into place: a crash never leaves a half-made group.
        staging = self.path.with_name(f".{self.path.name}.creating")
        if staging.exists():
            shutil.rmtree(staging)
        self.group = zarr.open_group(str(staging), mode="w", zarr_format=3)
        self.attrs = attrs
        self._create_arrays(layout)
        self.group.attrs[ATTR_KEY] = self.attrs
        validate_group(self.group, str(staging))
        os.replace(staging, self.path)
        self.group = zarr.open_group(str(self.path), mode="r+")

    def _create_arrays(self, layout: CacheLayout) -> None:
        for stack, count, chunk, shard in (
            ("encoder", self.n_enc, layout.encoder_chunk_frames, layout.encoder_shard_frames),
            ("decoder", self.n_dec, layout.decoder_chunk_tokens, layout.decoder_shard_tokens),
        ):
            for i in range(count):
                # Uncompressed: Whisper states compress to only ~0.88 of raw (docs/cache.md).
                self.group.create_array(layer_array_name(stack, i), shape=(0, self.d), dtype="float16",
                                        chunks=(chunk, self.d), shards=(shard, self.d),
                                        compressors=[Crc32cCodec()], fill_value=0)
        self.group.create_array("decoder/tokens", shape=(0,), dtype="int32", chunks=(4096,), fill_value=0,
                                compressors=[Crc32cCodec()])
        for col, kind in table_columns().items():
            self.group.create_array(f"utterances/{col}", shape=(0,), dtype=column_dtype(kind), chunks=(8192,),
                                    compressors=[Crc32cCodec()])

    def _truncate_to_commit(self) -> None:
        """Drop rows written after the last commit (a crash between array writes and commit)."""
        n = self.attrs["n_committed"]
        table = self.group["utterances"]
        frames, tokens = _committed_rows(table, n)
        for i in range(self.n_enc):
            self.group[layer_array_name("encoder", i)].resize((frames, self.d))
        for i in range(self.n_dec):
            self.group[layer_array_name("decoder", i)].resize((tokens, self.d))
        self.group["decoder/tokens"].resize((tokens,))
        for col in table_columns():
            table[col].resize((n,))

    def add(self, row: dict[str, Any], encoder_states: list[np.ndarray], decoder_states: list[np.ndarray],
            tokens: np.ndarray) -> None:
        if row["utt_id"] in self.done_ids:
            raise CacheError(f"utterance {row['utt_id']} is already in {self.path}")
        if len(encoder_states) != self.n_enc or len(decoder_states) != self.n_dec:
            raise CacheError(f"expected {self.n_enc} encoder and {self.n_dec} decoder states, got "
                             f"{len(encoder_states)} and {len(decoder_states)}")
        n_frames, n_tokens = encoder_states[0].shape[0], decoder_states[0].shape[0]
        if len(tokens) != n_tokens:
            raise CacheError(f"{row['utt_id']}: {len(tokens)} tokens but {n_tokens} decoder positions")
        row = dict(row, n_frames=n_frames, n_tokens=n_tokens,
                   frame_offset=self.n_frames_total + self._buffered_frames,
                   token_offset=self.n_tokens_total + sum(len(t) for t in self._tokens))
        missing = set(table_columns()) - set(row)
        if missing:
            raise CacheError(f"{row['utt_id']}: table row lacks {sorted(missing)}")
        for buf, st in zip(self._enc, encoder_states):
            buf.append(np.asarray(st, dtype=np.float16))
        for buf, st in zip(self._dec, decoder_states):
            buf.append(np.asarray(st, dtype=np.float16))
        self._tokens.append(np.asarray(tokens, dtype=np.int32))
        self._rows.append(row)
        self.done_ids.add(row["utt_id"])
        self._buffered_frames += n_frames

    def commit_if_due(self) -> None:
        """Commit once enough is buffered; callers call it between batches so that what is committed
        is always whole batches, and a resumed run recomputes the rest with the same batching."""
        if self._buffered_frames >= self.commit_frames:
            self.commit()

    def commit(self) -> None:
        if not self._rows:
            return
        f0, t0 = self.n_frames_total, self.n_tokens_total
        f1 = f0 + self._buffered_frames
        t1 = t0 + sum(len(t) for t in self._tokens)
        for stack, bufs, lo, hi in (("encoder", self._enc, f0, f1), ("decoder", self._dec, t0, t1)):
            for i, buf in enumerate(bufs):
                arr = self.group[layer_array_name(stack, i)]
                arr.resize((hi, self.d))
                arr[lo:hi] = np.concatenate(buf, axis=0)
        tok = self.group["decoder/tokens"]
        tok.resize((t1,))
        tok[t0:t1] = np.concatenate(self._tokens)
        failpoint("commit:arrays-written")
        n0 = self.attrs["n_committed"]
        n1 = n0 + len(self._rows)
        table = self.group["utterances"]
        for col, kind in table_columns().items():
            values = [r[col] for r in self._rows]
            arr = table[col]
            arr.resize((n1,))
            arr[n0:n1] = np.array(values, dtype=column_dtype(kind) if kind != "str" else object).astype(
                np.dtypes.StringDType() if kind == "str" else kind)
        failpoint("commit:table-written")
        self.attrs["n_committed"] = n1
        self.group.attrs[ATTR_KEY] = self.attrs  # the commit point
        failpoint("commit:done")
        self.n_frames_total, self.n_tokens_total = f1, t1
        self._rows.clear()
        self._tokens.clear()
        for buf in self._enc + self._dec:
            buf.clear()
        self._buffered_frames = 0

    def set_errors(self, errors: list[dict[str, str]]) -> None:
        """Per-file failures of this run (retried on every rerun, so older ones are superseded)."""
        validate_attributes(dict(self.attrs, errors=errors), str(self.path))  # before anything lands
        self.attrs["errors"] = errors
        self.group.attrs[ATTR_KEY] = self.attrs

    def close(self) -> None:
        try:
            self.commit()
            validate_group(self.group, str(self.path))
        finally:
            self.lock.release()

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Commit what is complete even on an error, so a rerun does not redo it.
        if exc_type is None:
            self.close()
        else:
            try:
                self.commit()
            finally:
                self.lock.release()


def _committed_rows(table: zarr.Group, n: int) -> tuple[int, int]:
    """Encoder frames and decoder tokens held by the first n utterances of the table."""
    if not n:
        return 0, 0
    return (int(table["frame_offset"][n - 1] + table["n_frames"][n - 1]),
            int(table["token_offset"][n - 1] + table["n_tokens"][n - 1]))


def _identity_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4]) or "same keys"
