"""Bytes and time to read cached layers, measured through a byte-counting store.

    python bench/cache_reads.py CACHE [--layers enc:5-6 --layers enc:all ...]

For each layer selection, two read paths over every utterance of the cache:
- per utterance (the per-utterance dataset's reads, every epoch of `--per-utterance` training);
- read once (the shard-aligned RunData read that training and a grid's packed task do once per run/pack).
Each prints the bytes read relative to the utterances' own bytes in those layers (chunk and shard
overhead; the target is <= 1.25x), the bytes read from unselected arrays (must be 0) and the time.
"""

from __future__ import annotations

import argparse
import time

from pipeline.cache.counting_store import CountingStore
from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError
from pipeline.layers import LayerSelection
from pipeline.train.resident import RunData

DEFAULT_LAYERS = ("enc:5-6", "enc:all", "dec:all", "enc:1,enc:4,dec:3")


def _own_bytes(reader: CacheReader, sel: LayerSelection) -> int:
    frames = int(reader.table["n_frames"].sum())
    tokens = int(reader.table["n_tokens"].sum())
    return (frames * len(sel.encoder) + tokens * len(sel.decoder)) * reader.d_model * 2


def _line(store: CountingStore, sel: LayerSelection, own: int) -> str:
    selected = {f"encoder/layer_{i:02d}" for i in sel.encoder} | {f"decoder/layer_{i:02d}" for i in sel.decoder}
    read = sum(store.counts.values())
    return (f"{read} bytes = {read / own:.2f}x the utterances' own bytes ({own}); "
            f"from unselected arrays: {store.bytes_outside(*selected)}")


def per_utterance(store: CountingStore, reader: CacheReader, sel: LayerSelection) -> str:
    store.reset()
    t0 = time.perf_counter()
    for i in range(reader.n):
        reader.read_states(i, sel)
    seconds = time.perf_counter() - t0
    return (f"  per utterance, one epoch: {_line(store, sel, _own_bytes(reader, sel))}; "
            f"{1e3 * seconds / (reader.n * len(sel)):.2f} ms per utterance-layer, {seconds:.2f} s")


def read_once(store: CountingStore, reader: CacheReader, sel: LayerSelection) -> str:
    store.reset()
    t0 = time.perf_counter()
    data = RunData(reader, [sel], range(reader.n), budget=2**62).prepare()
    seconds = time.perf_counter() - t0
    return (f"  read once (RunData, shard-aligned): {_line(store, sel, _own_bytes(reader, sel))}; "
            f"{seconds:.2f} s ({data.bytes_read} bytes held)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    ap.add_argument("--layers", action="append", help=f"selection to measure, repeatable (default: {DEFAULT_LAYERS})")
    args = ap.parse_args()
    store = CountingStore.open(args.cache)
    reader = CacheReader(store)
    print(f"{args.cache}: {reader.n} utterances, {reader.n_encoder_states} encoder and {reader.n_decoder_states} "
          "decoder states")
    for text in args.layers or DEFAULT_LAYERS:
        try:
            sel = reader.selection(text)
        except NserError as exc:
            print(f"{text}: skipped ({exc})")
            continue
        print(f"{text} ({', '.join(sel.names)}):")
        print(per_utterance(store, reader, sel))
        print(read_once(store, reader, sel))


if __name__ == "__main__":
    main()
