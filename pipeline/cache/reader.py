"""CacheReader: opens a cache (path or any zarr store), validates it, reads selected layers lazily."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from pipeline.cache.schema import layer_array_name, table_columns, validate_group
from pipeline.errors import CacheError
from pipeline.layers import LayerSelection, parse_layers


class CacheReader:
    def __init__(self, source: str | Path | Store):
        self.where = str(source) if not isinstance(source, Store) else repr(source)
        if isinstance(source, (str, Path)):
            if not Path(source).exists():
                raise CacheError(f"no cache at {source}")
            self.path: Path | None = Path(source)
            store: Any = str(source)
        else:
            self.path, store = None, source
        try:
            self.group = zarr.open_group(store=store, mode="r")
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise CacheError(f"{self.where} is not a Zarr v3 group: {exc}") from exc
        self.attrs = validate_group(self.group, self.where)
        self.n = int(self.attrs["n_committed"])
        utt = self.group["utterances"]
        self.table: dict[str, np.ndarray] = {col: utt[col][: self.n] for col in table_columns()}
        for col, kind in table_columns().items():
            if kind == "str":
                self.table[col] = self.table[col].astype(object)
        self._arrays: dict[str, zarr.Array] = {}

    # --- identity -------------------------------------------------------------------------
    @property
    def model(self) -> dict[str, Any]:
        return self.attrs["model"]

    @property
    def n_encoder_states(self) -> int:
        return int(self.model["n_encoder_states"])

    @property
    def n_decoder_states(self) -> int:
        return int(self.model["n_decoder_states"])

    @property
    def d_model(self) -> int:
        return int(self.model["d_model"])

    @property
    def classes(self) -> list[str]:
        return list(self.attrs["classes"])

    @property
    def identity_hash(self) -> str:
        return str(self.attrs["identity_hash"])

    def selection(self, text: str) -> LayerSelection:
        return parse_layers(text, self.n_encoder_states, self.n_decoder_states)

    # --- data -----------------------------------------------------------------------------
    def array(self, stack: str, i: int) -> zarr.Array:
        name = layer_array_name(stack, i)
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def utterance_rows(self, stack: str, index: int) -> tuple[int, int]:
        if stack == "encoder":
            lo, n = self.table["frame_offset"][index], self.table["n_frames"][index]
        else:
            lo, n = self.table["token_offset"][index], self.table["n_tokens"][index]
        return int(lo), int(lo + n)

    def read_states(self, index: int, selection: LayerSelection) -> list[np.ndarray]:
        """One utterance's states for the selected layers, encoder first, as float16 [rows, d]."""
        if not 0 <= index < self.n:
            raise IndexError(f"utterance index {index} outside 0..{self.n - 1}")
        out = []
        for stack, layers in (("encoder", selection.encoder), ("decoder", selection.decoder)):
            lo, hi = self.utterance_rows(stack, index)
            out.extend(self.array(stack, i)[lo:hi] for i in layers)
        return out

    def tokens(self, index: int) -> np.ndarray:
        lo, hi = self.utterance_rows("decoder", index)
        return self.group["decoder/tokens"][lo:hi]

    def dask_layer(self, stack: str, i: int):
        """A layer as a lazy dask array (for notebooks and large reductions), one dask chunk per shard:
        per inner chunk, the task overhead dominates (~10x slower whole-layer reductions)."""
        import dask.array as da
        arr = self.array(stack, i)
        rows = (arr.shards or arr.chunks)[0]
        return da.from_zarr(arr, chunks=(rows, arr.shape[1]))[: self._committed_rows(stack)]

    def _committed_rows(self, stack: str) -> int:
        return self.utterance_rows(stack, self.n - 1)[1] if self.n else 0

    def bytes_on_disk(self) -> int:
        if self.path is None:
            raise CacheError("bytes on disk needs a cache on a local path")
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(self.path) for f in fs)

    @property
    def errors(self) -> list[dict[str, str]]:
        """The error table: manifest entries not cached (audio that failed, labels outside the map)."""
        return list(self.attrs.get("errors", []))

    def errors_by_fold(self, folds: set[str]) -> dict[str, int]:
        """How many error-table entries each of `folds` has (folds without any are left out)."""
        counts: dict[str, int] = {}
        for e in self.errors:
            if str(e["fold"]) in folds:
                counts[str(e["fold"])] = counts.get(str(e["fold"]), 0) + 1
        return dict(sorted(counts.items()))

    @property
    def complete(self) -> bool | None:
        """Whether extraction accounted for every manifest entry (cached or failed); None for
        caches written before `n_manifest` was recorded."""
        if "n_manifest" not in self.attrs:
            return None
        return self.n + len(self.errors) >= self.attrs["n_manifest"]

    def info(self) -> dict[str, Any]:
        """Summary for `nser cache info`."""
        def counts(col: str) -> dict[str, int]:
            vals, cnt = np.unique(self.table[col].astype(str), return_counts=True)
            return {str(v): int(c) for v, c in zip(vals, cnt)}
        seconds = float(self.table["duration"].sum())
        size = self.bytes_on_disk() if self.path is not None else None
        return {
            "path": str(self.path) if self.path else self.where,
            "corpus": self.attrs["corpus"]["name"],
            "condition": self.attrs["condition"]["name"],
            "model": self.model["name"],
            "n_utterances": self.n,
            "classes": counts("label"),
            "folds": counts("fold"),
            "speakers": len(set(self.table["speaker"])),
            "encoder_layers": self.n_encoder_states,
            "decoder_layers": self.n_decoder_states,
            "dims": self.d_model,
            "encoder_frames": self._committed_rows("encoder"),
            "decoder_tokens": self._committed_rows("decoder"),
            "bytes": size,
            "audio_seconds": seconds,
            "bytes_per_audio_second": (size / seconds) if size and seconds else None,
            "context": self.attrs["extraction"]["context"],
            "token_source": self.attrs["extraction"]["token_source"],
            "mean_realized_snr_db": (float(np.nanmean(self.table["realized_snr_db"]))
                                     if self.n and np.isfinite(self.table["realized_snr_db"]).any() else None),
            "hypothesis_loops": int(self.table["hyp_loop"].sum()),
            "hypothesis_capped": int(self.table["hyp_capped"].sum()),
            "failed": len(self.errors),
            "complete": self.complete,
            "identity_hash": self.identity_hash,
            "code_version": self.attrs["code_version"],
        }
