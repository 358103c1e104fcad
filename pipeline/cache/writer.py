"""CacheWriter: appends utterances' hidden states to a Zarr v3 cache and commits them in batches.

Rows are buffered and written about one shard at a time because a shard is rewritten whole on
every write touching it; committing at least a shard's worth keeps that rewrite cost below 2x.
The attribute `n_committed` moves only after a batch's arrays and table rows are all written, and
zarr's local store replaces every file atomically, so a crash at any point leaves the previous
commit intact and a rerun resumes from it. A commit that fails (a full disk) leaves the writer
broken: it never commits again, and a rerun resumes from the commit point on disk. Every inner
chunk carries a CRC32C checksum that zarr verifies on read (`nser cache verify` reads them all),
and every chunk is stored, all-zero ones too, so that an absent file means damage, not zeros.

One writer at a time: a lock held for the writer's lifetime (on the resolved path, so aliases
meet), released by the OS if the process dies. Where `flock` does not exclude (some network file
systems), a random token the writer stores on opening, checked with `n_committed` before every
commit, stops a writer whose cache another writer has touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from pipeline.cache.records import ErrorRecord, ModelRecord
from pipeline.cache.schema import (ATTR_KEY, column_dtype, committed_rows, layer_array_name, schema_version,
                                   table_columns, validate_attributes, validate_group)
from pipeline.cache.lock import ReadersLock, WriterLock
from pipeline.errors import CacheError, NonFiniteStatesError
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
        # Resolved before anything else: a symlink, a/../a.zarr or a relative path must reach the
        # same locks and the same folder as every other spelling of it.
        self.path = Path(path).resolve()
        self.writer = {"token": secrets.token_hex(8), "pid": os.getpid(), "host": socket.gethostname()}
        attrs = dict(attrs, schema_version=schema_version(), n_committed=0, layout=vars(layout).copy(),
                     writer=self.writer, all_chunks_written=True)
        attrs["identity_hash"] = identity_hash(attrs["identity"])
        validate_attributes(attrs, str(self.path))
        model = ModelRecord.from_dict(attrs["model"])
        self.n_enc, self.n_dec, self.d = model.n_encoder_states, model.n_decoder_states, model.d_model
        self.dtype = np.dtype(attrs["extraction"]["dtype"])  # storage dtype of the states
        self._broken: str | None = None  # why this writer may not commit any more
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
        self.n_frames_total, self.n_tokens_total = (committed_rows(table, "encoder", n),
                                                    committed_rows(table, "decoder", n))
        self._rows: list[dict[str, Any]] = []
        self._enc: list[list[np.ndarray]] = [[] for _ in range(self.n_enc)]
        self._dec: list[list[np.ndarray]] = [[] for _ in range(self.n_dec)]
        self._tokens: list[np.ndarray] = []
        self._buffered_frames = 0
        self.commit_frames = commit_frames or layout.encoder_shard_frames

    def _open_or_create(self, attrs: dict[str, Any], layout: CacheLayout, overwrite: bool) -> None:
        # A replaced cache is renamed aside before it is deleted: a crash mid-delete must leave
        # either the old cache or none, never a folder that is neither (and that --overwrite,
        # rightly, would then refuse to delete). Leftovers of such a crash are ours to remove.
        trash = self.path.with_name(f".{self.path.name}.replaced")
        if trash.exists():
            shutil.rmtree(trash)
        found = _what_is_at(self.path)
        if found == "cache" and overwrite:
            readers = ReadersLock(self.path)
            readers.exclude()  # refused while anything reads the cache
            try:
                os.replace(self.path, trash)
                self._create(attrs, layout)
            finally:
                readers.release()
            shutil.rmtree(trash)
            return
        if found in ("absent", "empty"):
            self._create(attrs, layout)  # an empty folder is replaced by the new cache (rename onto it)
            return
        if found != "cache":
            raise CacheError(f"{self.path} {found}, not an nser-pipeline cache; nothing was changed. Choose "
                             "another --out" + (" (--overwrite replaces only a cache or an empty folder)"
                                                if overwrite else ""))
        self.group = zarr.open_group(str(self.path), mode="r+")
        existing = validate_group(self.group, str(self.path))
        if existing["identity_hash"] != attrs["identity_hash"]:
            raise CacheError(
                f"{self.path} holds a cache made with other settings "
                f"({_identity_diff(existing['identity'], attrs['identity'])}); "
                "choose another --out or pass --overwrite")
        # What the manifest holds is not identity (the class map's exclusions can change it
        # without changing any stored value): the current run's count wins.
        claimed = dict(existing, writer=self.writer)
        if "n_manifest" in attrs:
            claimed["n_manifest"] = attrs["n_manifest"]
        self._write_attrs(claimed)  # claims the cache: a writer that opened it before stops at its next commit
        self.attrs = claimed
        self._truncate_to_commit()

    def _create(self, attrs: dict[str, Any], layout: CacheLayout) -> None:
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
                self.group.create_array(layer_array_name(stack, i), shape=(0, self.d), dtype=self.dtype,
                                        chunks=(chunk, self.d), shards=(shard, self.d),
                                        compressors=[Crc32cCodec()], fill_value=0, config=_STORE_ALL)
        self.group.create_array("decoder/tokens", shape=(0,), dtype="int32", chunks=(4096,), fill_value=0,
                                compressors=[Crc32cCodec()], config=_STORE_ALL)
        for col, kind in table_columns().items():
            self.group.create_array(f"utterances/{col}", shape=(0,), dtype=column_dtype(kind), chunks=(8192,),
                                    compressors=[Crc32cCodec()], config=_STORE_ALL)

    def _array(self, name: str) -> zarr.Array:
        # write_empty_chunks is runtime configuration, not stored metadata: set on every opening.
        return self.group[name].with_config(_STORE_ALL)

    def _truncate_to_commit(self) -> None:
        """Drop rows written after the last commit (a crash between array writes and commit)."""
        n = self.attrs["n_committed"]
        table = self.group["utterances"]
        frames, tokens = committed_rows(table, "encoder", n), committed_rows(table, "decoder", n)
        for i in range(self.n_enc):
            self._array(layer_array_name("encoder", i)).resize((frames, self.d))
        for i in range(self.n_dec):
            self._array(layer_array_name("decoder", i)).resize((tokens, self.d))
        self._array("decoder/tokens").resize((tokens,))
        for col in table_columns():
            self._array(f"utterances/{col}").resize((n,))

    def add(self, row: dict[str, Any], encoder_states: list[np.ndarray], decoder_states: list[np.ndarray],
            tokens: np.ndarray) -> None:
        """Buffer one utterance. Every check comes before anything is buffered, so a refused
        utterance (NonFiniteStatesError included) leaves the writer as it was."""
        self._require_usable()
        if row["utt_id"] in self.done_ids:
            raise CacheError(f"utterance {row['utt_id']} is already in {self.path}")
        if len(encoder_states) != self.n_enc or len(decoder_states) != self.n_dec:
            raise CacheError(f"expected {self.n_enc} encoder and {self.n_dec} decoder states, got "
                             f"{len(encoder_states)} and {len(decoder_states)}")
        # Checked after the cast: values beyond float16's range (65504) become Inf there.
        with np.errstate(over="ignore"):
            enc = [np.asarray(st, dtype=self.dtype) for st in encoder_states]
            dec = [np.asarray(st, dtype=self.dtype) for st in decoder_states]
        _require_finite(row["utt_id"], enc, dec)
        # An encoder-only source has no decoder states and no tokens: 0 decoder positions.
        n_frames, n_tokens = enc[0].shape[0], (dec[0].shape[0] if dec else 0)
        if len(tokens) != n_tokens:
            raise CacheError(f"{row['utt_id']}: {len(tokens)} tokens but {n_tokens} decoder positions")
        row = dict(row, n_frames=n_frames, n_tokens=n_tokens,
                   frame_offset=self.n_frames_total + self._buffered_frames,
                   token_offset=self.n_tokens_total + sum(len(t) for t in self._tokens))
        missing = set(table_columns()) - set(row)
        if missing:
            raise CacheError(f"{row['utt_id']}: table row lacks {sorted(missing)}")
        for buf, st in zip(self._enc, enc):
            buf.append(st)
        for buf, st in zip(self._dec, dec):
            buf.append(st)
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
        self._require_usable()
        if not self._rows:
            return
        n0 = self.attrs["n_committed"]
        try:
            committed = self._write_batch()
        except BaseException as exc:
            # What this writer holds in memory no longer matches the disk: it must not commit again
            # (a retry would append the batch a second time). The disk keeps the previous commit.
            self._broken = f"a commit failed ({type(exc).__name__}: {exc})"
            if isinstance(exc, OSError):
                raise CacheError(f"{self.path}: writing a commit failed ({exc}); the cache keeps its previous "
                                 f"commit point ({n0} utterances). Fix the cause (disk space?) and rerun the "
                                 "same command to resume") from exc
            raise
        self.attrs = committed
        failpoint("commit:done")
        self.n_frames_total += self._buffered_frames
        self.n_tokens_total += sum(len(t) for t in self._tokens)
        self._rows.clear()
        self._tokens.clear()
        for buf in self._enc + self._dec:
            buf.clear()
        self._buffered_frames = 0

    def _write_batch(self) -> dict[str, Any]:
        """Writes the buffered batch and then the commit point; returns the committed attributes.
        Nothing in memory changes here, so a failure anywhere leaves the writer's state as it was."""
        self._check_commit_point()
        f0, t0 = self.n_frames_total, self.n_tokens_total
        f1 = f0 + self._buffered_frames
        t1 = t0 + sum(len(t) for t in self._tokens)
        for stack, bufs, lo, hi in (("encoder", self._enc, f0, f1), ("decoder", self._dec, t0, t1)):
            for i, buf in enumerate(bufs):
                arr = self._array(layer_array_name(stack, i))
                arr.resize((hi, self.d))
                arr[lo:hi] = np.concatenate(buf, axis=0)
        tok = self._array("decoder/tokens")
        tok.resize((t1,))
        tok[t0:t1] = np.concatenate(self._tokens)
        failpoint("commit:arrays-written")
        n0 = self.attrs["n_committed"]
        n1 = n0 + len(self._rows)
        for col, kind in table_columns().items():
            values = [r[col] for r in self._rows]
            arr = self._array(f"utterances/{col}")
            arr.resize((n1,))
            arr[n0:n1] = np.array(values, dtype=column_dtype(kind) if kind != "str" else object).astype(
                np.dtypes.StringDType() if kind == "str" else kind)
        failpoint("commit:table-written")
        self._check_commit_point()  # again: another writer may have moved it while this batch was written
        committed = dict(self.attrs, n_committed=n1)
        self._write_attrs(committed)  # the commit point
        return committed

    def _check_commit_point(self) -> None:
        """Refuse to commit if the cache on disk is no longer as this writer left it: another writer
        (one the lock did not exclude, on a network file system) opened it or committed to it."""
        try:
            disk = dict(zarr.open_group(str(self.path), mode="r").attrs[ATTR_KEY])
        except Exception as exc:
            raise CacheError(f"{self.path} vanished or was replaced while this writer had it open ({exc}); "
                             "this writer stops without committing") from None
        holder = disk.get("writer") or {}
        if holder.get("token") == self.writer["token"] and disk.get("n_committed") == self.attrs["n_committed"]:
            return
        raise CacheError(
            f"{self.path} was changed by another writer while this one had it open (on disk: "
            f"{disk.get('n_committed')} utterances committed, last opened by pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}; this writer expected {self.attrs['n_committed']}, its own). This "
            "writer stops without committing. The writer lock did not exclude the other writer, as happens "
            "on some network file systems (NFS, Lustre): run one writer per cache, on local disk. Check the "
            f"cache with `nser cache verify {self.path}`, then rerun the same command to resume")

    def _write_attrs(self, attrs: dict[str, Any]) -> None:
        self.group.attrs[ATTR_KEY] = attrs

    def _require_usable(self) -> None:
        if self._broken:
            raise CacheError(f"{self.path}: this writer stopped after {self._broken}; what was committed before "
                             "stays. Rerun the same command to resume from the cache's commit point")

    def set_errors(self, errors: list[ErrorRecord]) -> None:
        """Per-file failures of this run (retried on every rerun, so older ones are superseded)."""
        self._require_usable()
        updated = dict(self.attrs, errors=[e.to_dict() for e in errors])
        validate_attributes(updated, str(self.path))  # before anything lands
        try:
            self._check_commit_point()
            self._write_attrs(updated)
        except BaseException as exc:
            self._broken = f"writing the error table failed ({type(exc).__name__}: {exc})"
            raise
        self.attrs = updated

    def close(self) -> None:
        try:
            self.commit()
            validate_group(self.group, str(self.path))
        finally:
            self.lock.release()

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Commit what is complete even on an error, so a rerun does not redo it; never after a
        # failed commit (that would write the batch twice).
        if exc_type is None:
            self.close()
        else:
            try:
                if not self._broken:
                    self.commit()
            finally:
                self.lock.release()


_STORE_ALL = {"write_empty_chunks": True}


def _what_is_at(path: Path) -> str:
    """"absent", "empty", "cache" (a Zarr group with this tool's attributes), or what else is there,
    phrased to follow the path in a message."""
    if not path.exists():
        return "absent"
    if not path.is_dir():
        return "is a file"
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return "empty"
    try:
        meta = json.loads((path / "zarr.json").read_text())
        if meta.get("node_type") == "group" and ATTR_KEY in (meta.get("attributes") or {}):
            return "cache"
    except (OSError, ValueError, AttributeError):
        pass
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"is a folder holding {shown}"


def _require_finite(utt_id: str, encoder: list[np.ndarray], decoder: list[np.ndarray]) -> None:
    for stack, states in (("encoder", encoder), ("decoder", decoder)):
        for i, st in enumerate(states):
            bad = ~np.isfinite(st)
            if bad.any():
                raise NonFiniteStatesError(
                    f"{utt_id}: {stack} layer {i} holds {int(bad.sum())} non-finite value(s) (NaN or Inf, after "
                    f"the cast to {st.dtype}; first at row {int(np.argwhere(bad)[0][0])}); the utterance is not cached")


_ABSENT = "(absent)"


def _identity_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The leaf settings that differ, as dotted keys (`condition.noise_fingerprint: 'a' -> 'b'`):
    a whole nested dict would bury the one value that changed."""
    diffs: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{key}.{k}" if key else str(k))
        elif a != b:
            diffs.append(f"{key}: {a!r} -> {b!r}")

    walk(old, new, "")
    shown = ", ".join(diffs[:4])
    return (shown + (f" and {len(diffs) - 4} more" if len(diffs) > 4 else "")) or "same keys"
