"""Bytes and time to read cached layers, measured through a byte-counting store.

    python bench/cache_reads.py CACHE [--layers enc:5-6]

Prints bytes read per epoch relative to the selected utterances' own bytes (chunk overhead), bytes
read from unselected arrays (must be 0), and milliseconds per utterance-layer read.
"""

from __future__ import annotations

import argparse
import time

from pipeline.cache.counting_store import CountingStore
from pipeline.cache.reader import CacheReader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    ap.add_argument("--layers", default="enc:5-6")
    args = ap.parse_args()
    store = CountingStore.open(args.cache)
    reader = CacheReader(store)
    sel = reader.selection(args.layers)
    store.reset()
    t0 = time.perf_counter()
    for i in range(reader.n):
        reader.read_states(i, sel)
    seconds = time.perf_counter() - t0
    frames = int(reader.table["n_frames"].sum())
    tokens = int(reader.table["n_tokens"].sum())
    own = (frames * len(sel.encoder) + tokens * len(sel.decoder)) * reader.d_model * 2
    selected = {f"encoder/layer_{i:02d}" for i in sel.encoder} | {f"decoder/layer_{i:02d}" for i in sel.decoder}
    read = sum(store.counts.values())
    print(f"{reader.n} utterances, layers {sel.names}")
    print(f"bytes read for one epoch: {read} = {read / own:.2f}x the utterances' own bytes ({own})")
    print(f"bytes read from unselected arrays: {store.bytes_outside(*selected)}")
    print(f"time: {1e3 * seconds / (reader.n * len(sel)):.2f} ms per utterance-layer, "
          f"{seconds:.2f} s per epoch of reads")


if __name__ == "__main__":
    main()
