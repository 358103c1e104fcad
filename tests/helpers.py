"""Fake caches for tests, written through the real CacheWriter into real Zarr stores.

`write_cache` is the one builder; `make_cache` (speaker folds, for grid/train/report tests) and
`probe_cache` (three classes, for the probe and the notebooks) are argument sets of it that several
modules share. `attrs`, `row` and `fake_states` are its parts, for tests that drive CacheWriter
themselves (crashes, races, refusals). `write_manifest` writes the manifest of a csv test corpus.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import zarr

from pipeline.cache.writer import CacheLayout, CacheWriter

LAYOUT = CacheLayout(encoder_chunk_frames=16, encoder_shard_frames=128, decoder_chunk_tokens=4,
                     decoder_shard_tokens=32)


def attrs(n_enc=3, n_dec=2, d=8, identity=None, classes=("a", "b"), *, corpus="t", model="m",
          condition="clean", noise_type=None, snr_db=None, protocol="cv") -> dict[str, Any]:
    """Attributes of a fake cache."""
    return {
        "code_version": "test", "identity": identity or {"k": 1},
        "corpus": {"name": corpus, "protocol": protocol, "language": "en", "manifest_hash": "m"},
        "classes": list(classes),
        "model": {"name": model, "weights_hash": "h", "n_encoder_states": n_enc, "n_decoder_states": n_dec,
                  "d_model": d, "frame_rate": 50.0},
        "extraction": {"context": "padded", "token_source": "hypothesis", "dtype": "float16", "max_seconds": 30.0},
        "condition": {"name": condition, "noise_type": noise_type, "snr_db": snr_db, "seed": 0},
    }


def row(k: int, **over) -> dict[str, Any]:
    """Table row of utterance k: 3 folds (one speaker each), classes a/b alternating. `duration=None`
    lets `write_cache` derive it from the frame count."""
    r = dict(utt_id=f"u{k}", speaker=f"s{k % 3}", label="ab"[k % 2], fold=str(k % 3), language="en",
             transcript=f"text {k}", hypothesis=f"hyp {k}", duration=1.0 + k, truncated_s=0.0,
             hyp_loop=False, hyp_capped=False, noise_file="", noise_offset=0, realized_snr_db=float("nan"))
    return {**r, **over}


@dataclass(frozen=True)
class Signal:
    """The label written into one layer: `offsets[label]` (a number, or a [d] vector for one
    dimension) is added to every frame of that layer; other labels and layers stay noise."""

    stack: str
    layer: int
    offsets: dict[str, Any] = field(default_factory=dict)


def random_states(rng: np.random.Generator, n_frames: int, n_tokens: int, *, n_enc=3, n_dec=2, d=8,
                  signal: Signal | None = None, label: str = "", first_token: int = 0):
    """(encoder states, decoder states, tokens) as CacheWriter.add takes them, float16 like a real cache."""
    enc = [rng.normal(size=(n_frames, d)) for _ in range(n_enc)]
    dec = [rng.normal(size=(n_tokens, d)) for _ in range(n_dec)]
    if signal is not None and label in signal.offsets:
        (enc if signal.stack == "encoder" else dec)[signal.layer] += signal.offsets[label]
    return ([x.astype(np.float16) for x in enc], [x.astype(np.float16) for x in dec],
            np.arange(n_tokens) + first_token)


def varied_lengths(rng: np.random.Generator, k: int) -> tuple[int, int]:
    """10..178 frames over 25 utterances: blocks of whole utterances span shard edges."""
    return 10 + 7 * k, 4 + k % 5


def fake_states(rng: np.random.Generator, k: int):
    return random_states(rng, *varied_lengths(rng, k), first_token=k)


def write_cache(path: Path, n: int, *, rows: Callable[[int], dict] = row,
                lengths: Callable[[np.random.Generator, int], tuple[int, int]] = varied_lengths,
                signal: Signal | None = None, seed: int = 0, start: int = 0, layout: CacheLayout = LAYOUT,
                n_enc: int = 3, n_dec: int = 2, d: int = 8, **attr_kw) -> list:
    """Write utterances `start`..`n-1` (those not already committed: a rerun resumes) and return the
    states of all `n`, as stored. Utterance k's states are drawn after those of 0..k-1, frame and
    token counts first (`lengths`), so a cache is the same whatever `start` is."""
    rng = np.random.default_rng(seed)
    table, data = [], []
    for k in range(n):
        r = rows(k)
        n_frames, n_tokens = lengths(rng, k)
        if r["duration"] is None:
            r["duration"] = n_frames / 50.0
        table.append(r)
        data.append(random_states(rng, n_frames, n_tokens, n_enc=n_enc, n_dec=n_dec, d=d, signal=signal,
                                  label=r["label"], first_token=k))
    with CacheWriter(path, attrs(n_enc, n_dec, d, **attr_kw), layout=layout) as w:
        for k in range(start, n):
            if table[k]["utt_id"] not in w.done_ids:
                w.add(table[k], *data[k])
    return data


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

    def speaker_row(k: int) -> dict:
        fold = names[(k // 2) % len(names)]
        return row(k, speaker=f"s{fold}", label=(relabel or {}).get(f"u{k}", labels[k % len(labels)]), fold=fold,
                   transcript="t", hypothesis="h", duration=None)

    write_cache(path, n, rows=speaker_row, lengths=lambda rng, k: (6 + k % 5, 3 + k % 2),
                signal=Signal(*signal, {"b": 3.0}), seed=seed,
                identity={"fake": condition, "seed": seed, "folds": len(names), "n": n}, corpus="fake",
                model="fake-whisper", condition=condition, noise_type=noise_type, snr_db=snr_db)
    return path


PROBE_CLASSES, PROBE_FOLDS, PROBE_PER_CELL, PROBE_SIGNAL = ["a", "b", "c"], 5, 4, ("encoder", 2)


def probe_cache(path: Path, seed: int = 0) -> Path:
    """5 folds x 3 classes x 4 utterances where only encoder layer 2 carries the label (a
    class-dependent offset on one dimension); every other layer is noise. Small shards, so pooling
    crosses shard boundaries."""
    per_fold = len(PROBE_CLASSES) * PROBE_PER_CELL
    d = 16

    def probe_row(k: int) -> dict:
        fold = k // per_fold
        return row(k, utt_id=f"u{k:03d}", speaker=f"s{fold}{k % 2}", fold=str(fold),
                   label=PROBE_CLASSES[k % per_fold // PROBE_PER_CELL], transcript="t", hypothesis="h",
                   duration=None)

    write_cache(path, PROBE_FOLDS * per_fold, rows=probe_row,
                lengths=lambda rng, k: (int(rng.integers(8, 40)), int(rng.integers(2, 9))),
                signal=Signal(*PROBE_SIGNAL, {c: 2.0 * np.eye(d)[i] for i, c in enumerate(PROBE_CLASSES)}),
                seed=seed, layout=CacheLayout(encoder_chunk_frames=16, encoder_shard_frames=64,
                                              decoder_chunk_tokens=4, decoder_shard_tokens=16),
                n_enc=4, n_dec=3, d=d, identity={"fake": seed}, classes=PROBE_CLASSES)
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


def write_manifest(root: Path, rows: Sequence[dict[str, str]]) -> Path:
    """`root`/manifest.csv of a `csv` corpus (docs/corpora.md): one line per row, the columns in the
    first row's key order."""
    path = root / "manifest.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path
