"""The arithmetic floor of a layer-adapter epoch on this machine (docs/training.md, "The floor").

    python bench/cpu_floor.py [--threads 1] [--d 512] [--hidden 256] [--frames 100] [--tokens 15] [--utterances 207]

Times a float32 matrix product and a GRU forward+backward (input without gradient, as cached states
are) at batch 32, prints their GFLOP/s, and from them the least seconds one training epoch of the
layer adapter over 7 encoder + 7 decoder states can take: FLOPs / rate, nothing else counted.
"""

from __future__ import annotations

import argparse
import time

import torch


def rate(fn, flops: float, repeat: int = 5) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return flops * repeat / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--d", type=int, default=512, help="state width (Whisper base: 512)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--frames", type=int, default=100, help="encoder frames per utterance (2 s: 100)")
    ap.add_argument("--tokens", type=int, default=15, help="decoder positions per utterance")
    ap.add_argument("--utterances", type=int, default=207, help="training utterances per epoch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d, h, n = args.d, args.hidden, 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    gemm = rate(lambda: a @ b, 2 * n ** 3, 20)
    gru = torch.nn.GRU(d, h, batch_first=True)
    x = torch.randn(32, args.frames, d)

    def step() -> None:
        y, _ = gru(x)
        y.sum().backward()

    per_frame = 2 * (3 * h * (d + h) + 3 * h * (d + h) + 3 * h * h)  # FLOPs: forward + backward, one direction
    gru_rate = rate(step, per_frame * 32 * args.frames)
    epoch = per_frame * 2 * 7 * (args.frames + args.tokens) * args.utterances
    print(f"torch threads {args.threads}: matrix product {gemm:.1f} GFLOP/s, GRU forward+backward {gru_rate:.1f} GFLOP/s")
    print(f"layer-adapter epoch (7+7 adapters, {args.frames} frames + {args.tokens} tokens, {args.utterances} "
          f"utterances): {epoch / 1e12:.2f} TFLOP")
    print(f"floor: {epoch / gemm / 1e9:.1f} s at the matrix-product rate, {epoch / gru_rate / 1e9:.1f} s at the GRU rate "
          f"({args.threads} thread(s))")


if __name__ == "__main__":
    main()
