"""Tiny real caches for grid tests: random states, with the label written into one layer only."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import zarr

from pipeline.cache.writer import CacheLayout, CacheWriter

LAYOUT = CacheLayout(encoder_chunk_frames=16, encoder_shard_frames=128, decoder_chunk_tokens=4,
                     decoder_shard_tokens=32)
D, N_ENC, N_DEC = 8, 3, 2


def make_cache(path: Path, *, n: int = 18, n_folds: int = 3, signal: tuple[str, int] = ("encoder", 1),
               condition: str = "babble_0dB", noise_type: str | None = "babble", snr_db: float | None = 0.0,
               seed: int = 0, fold_names: Sequence[str] | None = None, labels: str = "ab",
               relabel: dict[str, str] | None = None) -> Path:
    """`n` utterances of classes a/b over `n_folds` speaker folds; class b adds +3 to every frame
    of the `signal` layer, so that layer separates the classes and the others do not.
    `fold_names` renames the folds (e.g. speaker names); utterance k has label labels[k % len(labels)]
    (labels="a": a one-class cache whose class list is still a, b), unless `relabel` maps its id
    ("u5") to another label."""
    names = list(fold_names) if fold_names is not None else [str(i) for i in range(n_folds)]
    n_folds = len(names)
    attrs = {
        "code_version": "test", "identity": {"fake": condition, "seed": seed, "folds": n_folds, "n": n},
        "corpus": {"name": "fake", "protocol": "cv", "language": "en", "manifest_hash": "m"},
        "classes": ["a", "b"],
        "model": {"name": "fake-whisper", "weights_hash": "h", "n_encoder_states": N_ENC, "n_decoder_states": N_DEC,
                  "d_model": D, "frame_rate": 50.0},
        "extraction": {"context": "padded", "token_source": "hypothesis", "dtype": "float16", "max_seconds": 30.0},
        "condition": {"name": condition, "noise_type": noise_type, "snr_db": snr_db, "seed": 0},
    }
    rng = np.random.default_rng(seed)
    with CacheWriter(path, attrs, layout=LAYOUT) as w:
        for k in range(n):
            label = (relabel or {}).get(f"u{k}", labels[k % len(labels)])
            nf, nt = 6 + k % 5, 3 + k % 2
            enc = [rng.normal(size=(nf, D)) for _ in range(N_ENC)]
            dec = [rng.normal(size=(nt, D)) for _ in range(N_DEC)]
            stack, i = signal
            if label == "b":
                (enc if stack == "encoder" else dec)[i] += 3.0
            fold = names[(k // 2) % n_folds]
            w.add(dict(utt_id=f"u{k}", speaker=f"s{fold}", label=label, fold=fold, language="en",
                       transcript="t", hypothesis="h", duration=nf / 50, truncated_s=0.0, hyp_loop=False,
                       hyp_capped=False, noise_file="", noise_offset=0, realized_snr_db=float("nan")),
                  [x.astype(np.float16) for x in enc], [x.astype(np.float16) for x in dec], np.arange(nt))
    return path


def poison(path: Path, utt_id: str, stack: str = "encoder", layer: int = 1, value: float = float("nan")) -> None:
    """Overwrite one utterance's states in one layer with `value` (NaN, Inf), straight through Zarr,
    as a cache written by a buggy or overflowing extraction would hold them."""
    from pipeline.cache.reader import CacheReader
    from pipeline.cache.schema import layer_array_name

    reader = CacheReader(path)
    k = [str(u) for u in reader.table["utt_id"]].index(utt_id)
    lo, hi = reader.utterance_rows(stack, k)
    arr = zarr.open_group(str(path), mode="r+")[layer_array_name(stack, layer)]
    arr[lo:hi] = np.full((hi - lo, arr.shape[1]), value, dtype=arr.dtype)
