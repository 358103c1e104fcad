"""CacheReader: opens a cache (path or any zarr store), validates it, reads selected layers lazily.

A reader on a local path holds the cache's readers lock (shared) until `close()`, the end of a
`with` block, garbage collection or process exit, so that `nser-extract --overwrite` cannot replace
the data under it; appending writers do not take that lock and are never blocked by readers.
Before the first read of an array, the stored objects holding its committed rows are checked to
exist: zarr would read an absent shard as zeros.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from pipeline.cache.chunks import StoredObject, missing_objects
from pipeline.cache.lock import ReadersLock
from pipeline.cache.records import CacheAttrs, ErrorRecord
from pipeline.cache.schema import SPAN_COLUMNS, committed_rows, layer_array_name, table_columns, validate_group
from pipeline.errors import CacheError
from pipeline.layers import LayerSelection, parse_layers


def is_url(source: object) -> bool:
    """An fsspec URL (`s3://`, `gs://`, `https://`, ...) rather than a local path."""
    return isinstance(source, str) and "://" in source and not source.startswith("file://")


class CacheReader:
    def __init__(self, source: str | Path | Store, storage_options: dict[str, Any] | None = None):
        """`source`: a local path, an fsspec URL of an existing cache (read-only; `storage_options`
        go to fsspec, e.g. credentials or `{"anon": true}`), or any zarr store."""
        self.where = str(source) if not isinstance(source, Store) else repr(source)
        self._lock: ReadersLock | None = None
        self._closed = False
        if storage_options and not is_url(source):
            raise CacheError(f"--storage-options apply to URLs (s3://, https://, ...), not to {self.where}")
        if is_url(source):
            # No readers lock: locks need a local file system, and nothing here writes remote caches.
            self.path, store = None, _url_store(str(source), storage_options or {})
        elif isinstance(source, (str, Path)):
            if not Path(source).exists():
                raise CacheError(f"no cache at {source}")
            self.path: Path | None = Path(source)
            store: Any = str(source)
            self._lock = ReadersLock(self.path)
            self._lock.share()  # before opening: an overwrite must not start between the two
        else:
            self.path, store = None, source
        try:
            self._open(store)
        except BaseException:
            self.close()
            raise

    def _open(self, store: Any) -> None:
        try:
            self.group = zarr.open_group(store=store, mode="r")
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise CacheError(f"{self.where} is not a Zarr v3 group: {exc}") from exc
        self.attrs = validate_group(self.group, self.where)
        self.meta = CacheAttrs.from_dict(self.attrs)  # typed; `attrs` stays the stored JSON
        self.n = int(self.attrs["n_committed"])
        utt = self.group["utterances"]
        if self.attrs.get("all_chunks_written"):  # older caches left all-default table chunks unstored
            for col in table_columns():
                self._require_stored(utt[col], self.n, f"utterances/{col}", None)
        self.table: dict[str, np.ndarray] = {col: utt[col][: self.n] for col in table_columns()}
        for col, kind in table_columns().items():
            if kind == "str":
                self.table[col] = self.table[col].astype(object)
        self._arrays: dict[str, zarr.Array] = {}

    @property
    def location(self) -> str:
        """Where the cache is, as a user would type it (a local path or a URL), for run records."""
        return str(self.path) if self.path is not None else self.where

    def close(self) -> None:
        """Release the readers lock (idempotent); the reader must not be used afterwards."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._closed = True

    def __enter__(self) -> "CacheReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self._lock.release()

    # --- identity -------------------------------------------------------------------------
    @property
    def n_encoder_states(self) -> int:
        return int(self.meta.model.n_encoder_states)

    @property
    def n_decoder_states(self) -> int:
        return int(self.meta.model.n_decoder_states)

    @property
    def d_model(self) -> int:
        return int(self.meta.model.d_model)

    @property
    def source(self) -> str:
        """The feature source that wrote the cache: whisper, mel, opensmile, ..."""
        return self.meta.model.source

    @property
    def storage_dtype(self) -> np.dtype:
        """dtype of the stored states (float16, or float32 for values beyond float16's range)."""
        return np.dtype(self.meta.extraction.dtype)

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def identity_hash(self) -> str:
        return str(self.attrs["identity_hash"])

    def selection(self, text: str) -> LayerSelection:
        return parse_layers(text, self.n_encoder_states, self.n_decoder_states, source=self.source)

    # --- data -----------------------------------------------------------------------------
    def array(self, stack: str, i: int) -> zarr.Array:
        return self._checked(layer_array_name(stack, i), stack)

    def _checked(self, name: str, stack: str) -> zarr.Array:
        """The array, once its committed rows' stored objects are known to exist (checked once)."""
        if self._closed:
            raise CacheError(f"{self.where}: this CacheReader was closed; open the cache again to read it")
        if name not in self._arrays:
            arr = self.group[name]
            rows = self._committed_rows(stack)
            self._require_length(arr, rows, name, stack)
            self._require_stored(arr, rows, name, stack)
            self._arrays[name] = arr
        return self._arrays[name]

    def _require_stored(self, arr: zarr.Array, rows: int, name: str, stack: str | None) -> None:
        missing = missing_objects(arr, rows)
        if not missing:
            return
        files = [str(self.path / m.key) if self.path is not None else m.key for m in missing]
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        if stack is None:
            whose = f"table rows {missing[0].lo}-{missing[-1].hi - 1}"
        else:
            ids = self._utterances_in(stack, missing)
            whose = f"{len(ids)} utterance(s): {', '.join(ids[:10])}" + (" ..." if len(ids) > 10 else "")
        raise CacheError(f"{self.where}: {name} lacks {len(files)} stored file(s) ({shown}) holding {whose}; "
                         "zarr would read them as zeros. The cache is damaged or partly copied: copy it "
                         f"again or re-extract (nser cache verify {self.where} lists everything affected)")

    def _require_length(self, arr: zarr.Array, rows: int, name: str, stack: str) -> None:
        """An array shorter than the table's committed rows (its metadata copied from an earlier commit
        than the table, e.g. a copy taken while extraction appended) would read short or empty states."""
        if arr.shape[0] >= rows:
            return
        lo, count = self.spans(stack)
        ids = [str(u) for u in self.table["utt_id"][lo + count > arr.shape[0]]]
        raise CacheError(f"{self.where}: {name} has {arr.shape[0]} rows but the table's committed utterances "
                         f"need {rows}; {len(ids)} utterance(s) would read short or empty states: "
                         f"{', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}. The cache was copied or "
                         "written inconsistently: copy it again or re-extract (nser cache verify lists it)")

    def _utterances_in(self, stack: str, objects: list[StoredObject]) -> list[str]:
        """Ids of the utterances whose rows in `stack` overlap any of these objects' rows."""
        lo, count = self.spans(stack)
        hi = lo + count
        hit = np.zeros(self.n, dtype=bool)
        for o in objects:
            hit |= (lo < o.hi) & (hi > o.lo)
        return [str(u) for u in self.table["utt_id"][hit]]

    def spans(self, stack: str) -> tuple[np.ndarray, np.ndarray]:
        """Per committed utterance, in table order: its first row and its row count in `stack`'s
        arrays (int64)."""
        off, cnt = SPAN_COLUMNS[stack]
        return self.table[off].astype(np.int64), self.table[cnt].astype(np.int64)

    def utterance_rows(self, stack: str, index: int) -> tuple[int, int]:
        """One utterance's [first, end) rows in `stack`'s arrays (per read: no whole-column copy)."""
        off, cnt = SPAN_COLUMNS[stack]
        lo = int(self.table[off][index])
        return lo, lo + int(self.table[cnt][index])

    def read_states(self, index: int, selection: LayerSelection) -> list[np.ndarray]:
        """One utterance's states for the selected layers, encoder first, as stored ([rows, d], storage dtype)."""
        if not 0 <= index < self.n:
            raise IndexError(f"utterance index {index} outside 0..{self.n - 1}")
        out = []
        for stack, layers in (("encoder", selection.encoder), ("decoder", selection.decoder)):
            lo, hi = self.utterance_rows(stack, index)
            out.extend(self.array(stack, i)[lo:hi] for i in layers)
        return out

    def tokens(self, index: int) -> np.ndarray:
        lo, hi = self.utterance_rows("decoder", index)
        return self._checked("decoder/tokens", "decoder")[lo:hi]

    def dask_layer(self, stack: str, i: int):
        """A layer as a lazy dask array (for notebooks and large reductions), one dask chunk per shard:
        per inner chunk, the task overhead dominates (~10x slower whole-layer reductions)."""
        import dask.array as da
        arr = self.array(stack, i)
        rows = (arr.shards or arr.chunks)[0]
        return da.from_zarr(arr, chunks=(rows, arr.shape[1]))[: self._committed_rows(stack)]

    def _committed_rows(self, stack: str) -> int:
        return committed_rows(self.table, stack, self.n)

    def bytes_on_disk(self) -> int:
        if self.path is None:
            raise CacheError("bytes on disk needs a cache on a local path")
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(self.path) for f in fs)

    @property
    def errors(self) -> list[ErrorRecord]:
        """The error table: manifest entries not cached (audio that failed, labels outside the map)."""
        return [ErrorRecord.from_dict(e, self.meta.classes) for e in self.attrs.get("errors", [])]

    def errors_by_fold(self, folds: set[str]) -> dict[str, int]:
        """How many error-table entries each of `folds` has (folds without any are left out)."""
        counts: dict[str, int] = {}
        for e in self.errors:
            if str(e.fold) in folds:
                counts[str(e.fold)] = counts.get(str(e.fold), 0) + 1
        return dict(sorted(counts.items()))

    @property
    def complete(self) -> bool | None:
        """Whether extraction accounted for every manifest entry (cached or failed); None for
        caches written before `n_manifest` was recorded."""
        if self.meta.n_manifest is None:
            return None
        return self.n + len(self.errors) >= self.meta.n_manifest

    @property
    def n_unextracted(self) -> int:
        """Manifest entries neither cached nor failed: an unfinished extraction's rest (0 for a
        complete cache, or one too old to tell). Their folds are not stored."""
        return max(0, self.meta.n_manifest - self.n - len(self.errors)) if self.complete is False else 0

    @property
    def partial_hash(self) -> str | None:
        """For an unfinished cache (`complete` False): 16 hex digits of sha256 over its cached
        utt_ids, sorted; None otherwise. Finishing the extraction appends to the cache and keeps
        its identity hash, so a run trained on part of it names that part by this too (run keys,
        the trainer's run dir claim); a complete cache's identity hash says it all."""
        if self.complete is not False:
            return None
        ids = "\n".join(sorted(str(u) for u in self.table["utt_id"]))
        return hashlib.sha256(ids.encode()).hexdigest()[:16]

    def info(self) -> dict[str, Any]:
        """Summary for `nser cache info`."""
        def counts(col: str) -> dict[str, int]:
            vals, cnt = np.unique(self.table[col].astype(str), return_counts=True)
            return {str(v): int(c) for v, c in zip(vals, cnt)}
        seconds = float(self.table["duration"].sum())
        size = self.bytes_on_disk() if self.path is not None else None
        return {
            "path": str(self.path) if self.path else self.where,
            "corpus": self.meta.corpus.name,
            "condition": self.meta.condition.name,
            "model": self.meta.model.name,
            "source": self.source,
            "n_utterances": self.n,
            "classes": counts("label"),
            "folds": counts("fold"),
            "speakers": len(set(self.table["speaker"])),
            "encoder_layers": self.n_encoder_states,
            "decoder_layers": self.n_decoder_states,
            "dims": self.d_model,
            "frame_rate": self.meta.model.frame_rate,
            "per_utterance": self.meta.model.per_utterance,
            "dtype": self.meta.extraction.dtype,
            "encoder_frames": self._committed_rows("encoder"),
            "decoder_tokens": self._committed_rows("decoder"),
            "bytes": size,
            "audio_seconds": seconds,
            "bytes_per_audio_second": (size / seconds) if size and seconds else None,
            "context": self.meta.extraction.context,
            "token_source": self.meta.extraction.token_source,
            "mean_realized_snr_db": (float(np.nanmean(self.table["realized_snr_db"]))
                                     if self.n and np.isfinite(self.table["realized_snr_db"]).any() else None),
            "hypothesis_loops": int(self.table["hyp_loop"].sum()),
            "hypothesis_capped": int(self.table["hyp_capped"].sum()),
            "failed": len(self.errors),
            "complete": self.complete,
            "identity_hash": self.identity_hash,
            "code_version": self.meta.code_version,
        }


def _url_store(url: str, storage_options: dict[str, Any]) -> Store:
    try:
        from zarr.storage import FsspecStore
        return FsspecStore.from_url(url, storage_options=storage_options, read_only=True)
    except ImportError as exc:
        raise CacheError(f"reading {url} needs fsspec and the protocol's package (https: aiohttp, s3: s3fs, "
                         f"gs: gcsfs): pip install 'nser-pipeline[remote]' ({exc})") from exc
    except (ValueError, TypeError) as exc:
        raise CacheError(f"cannot open {url}: {exc}") from exc
