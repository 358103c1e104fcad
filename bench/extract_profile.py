"""Where stage-1 extraction spends its time: one `run_extraction` with timers wrapped around its steps.

    python bench/extract_profile.py --model bundled:base --n 24 [--path reference|fast]

Each step is timed exclusively (wall time, summed over batches; time in a timed callee counts for the
callee only). "other" is what is left of the run: options, cache creation, the driver loop. On the
reference path the teacher-forced decoder and generate() each compute the cross-attention K/V of the
encoder output themselves; the fast path computes them once ("cross-attention K/V").
"""

from __future__ import annotations

import functools
import inspect
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from pipeline.cache.writer import CacheWriter
from pipeline.extract import run as run_mod
from pipeline.extract import whisper_layers as wl
from pipeline.extract.run import ExtractionOptions, run_extraction
from pipeline.models.loader import load_whisper

from extraction_args import extraction_parser, first_utterances

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


STACK: list[float] = []  # time spent in timed callees of each open timed call


def wrap(owner, attr: str, label: str) -> None:
    """Time a function exclusively: time spent in other wrapped functions it calls is theirs."""
    fn = getattr(owner, attr, None)
    if fn is None:
        return

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        STACK.append(0.0)
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            inner = STACK.pop()
            TIMES[label] += dt - inner
            CALLS[label] += 1
            if STACK:
                STACK[-1] += dt

    setattr(owner, attr, staticmethod(timed) if isinstance(inspect.getattr_static(owner, attr), staticmethod)
            else timed)


def main() -> None:
    ap = extraction_parser(__doc__, n=24)
    ap.add_argument("--path", default="fast", choices=["reference", "fast"])
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    corpus = first_utterances(args)
    load_whisper(args.model)  # conversion once, outside the timing

    E = wl.WhisperLayerExtractor
    steps = [
        (run_mod, "load_whisper", "model load"),
        (run_mod, "_prepare", "audio load/resample/mix"),
        (E, "features", "log-mel features"),
        (E, "encode", "encoder (padded context)"),
        (E, "_encode_chunks", "encoder (padded context)"),
        (E, "_cross_kv", "cross-attention K/V (once)"),
        (E, "_greedy", "greedy decoding (generate)"),
        (E, "_greedy_fast", "greedy decoding (own loop)"),
        (E, "_finish_hypotheses", "hypothesis cuts"),
        (E, "_teacher_forced", "teacher-forced decoder"),
        (E, "_teacher_forced_fast", "teacher-forced decoder"),
        (E, "_to_fp16", "fp16 conversion"),
        (E, "extract", "extractor glue (tokens, slicing)"),
        (E, "extract_fast", "extractor glue (tokens, slicing)"),
        (E, "extract_reference", "extractor glue (tokens, slicing)"),
        (run_mod, "nonfinite_reason", "finite check"),
        (CacheWriter, "add", "cache add (buffer)"),
        (CacheWriter, "commit", "cache commit (write)"),
        (CacheWriter, "close", "cache close"),
    ]
    for owner, attr, label in steps:
        wrap(owner, attr, label)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_extraction(corpus, Path(tmp) / "c.zarr",
                       ExtractionOptions(model=args.model, batch_size=args.batch_size, device="cpu",
                                         dtype=args.dtype, fast=args.path == "fast"),
                       progress=False)
        total = time.perf_counter() - t0
    n = len(corpus.utterances)
    print(f"model {args.model}, {n} utterances, batch {args.batch_size}, path {args.path}, dtype {args.dtype}, "
          f"{torch.get_num_threads()} threads: total {total:.2f} s ({n / total:.3f} utt/s)")
    rows = [(k, v) for k, v in TIMES.items()]
    rows.append(("other (driver, cache create, ...)", total - sum(v for _, v in rows)))
    print(f"{'step':<38} {'seconds':>8} {'share':>6} {'calls':>6}")
    for k, v in rows:
        print(f"{k:<38} {v:8.2f} {100 * v / total:5.1f}% {CALLS.get(k, ''):>6}")


if __name__ == "__main__":
    main()
