"""Seconds per training epoch in float32 and in CPU bfloat16 autocast, side by side on one cache and fold.

    python bench/train_precision.py --cache CACHE [--fold 0] [--threads 1] [--epochs 2]

Trains each model (the layer adapter over enc:blocks, and the one layer enc:3) for `--epochs`
epochs of one test fold in `--precision float32` and `bfloat16`, the precisions alternating so that
a machine's drift hits both, and prints the last epoch's training seconds (forward, backward, Adam
over the training part) with the ratio `speed-up bfloat16 vs float32: N.Nx` per model. The speed
depends on the CPU: bfloat16 instructions (AVX512-BF16, AMX) make it faster, their absence slower
(`lscpu | grep -o 'avx512_bf16\\|amx_bf16'`). The UARs after so few epochs say nothing of the
drift; docs/training.md has that from full runs.
"""

from __future__ import annotations

import argparse

from pipeline.cache.reader import CacheReader
from pipeline.folds import fold_plan
from pipeline.train.config import TrainConfig
from train import cached_epochs  # bench/train.py: this script's folder is on sys.path when run

MODELS = (("l-adapter", "enc:blocks"), ("single", "enc:3"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--fold", default=None, help="test fold (default: the first)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a grid's runs use 1)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is timed")
    args = ap.parse_args()
    reader = CacheReader(args.cache)
    fold = args.fold if args.fold is not None else fold_plan(reader)[0][0]
    print(f"cache {args.cache} ({reader.identity_hash}), test fold {fold}, {args.threads} thread(s), "
          f"{args.epochs} epochs per run, batch 32, hidden 256, length buckets")
    ratios = []
    for fusion, layers in MODELS:
        seconds: dict[str, list[float]] = {"float32": [], "bfloat16": []}
        for precision in ("float32", "bfloat16", "float32", "bfloat16"):
            cfg = TrainConfig(fusion=fusion, layers=layers, epochs=args.epochs, folds=fold, threads=args.threads,
                              device="cpu", precision=precision, length_buckets=True)
            epoch = cached_epochs(reader, cfg, per_utterance=False)
            s, uar = epoch["train"], epoch["uar"]
            seconds[precision].append(s)
            print(f"  {fusion:<10} {layers:<11} {precision:<9} {s:7.2f} s per training epoch (UAR {100 * uar:.1f})")
        best = {p: min(v) for p, v in seconds.items()}
        ratios.append((fusion, layers, best["float32"] / best["bfloat16"]))
    for fusion, layers, ratio in ratios:
        print(f"{fusion} {layers}: speed-up bfloat16 vs float32: {ratio:.2f}x (the faster of two runs each)")


if __name__ == "__main__":
    main()
