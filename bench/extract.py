"""Extraction throughput: nser-pipeline's extractor vs. the naive loop, on the same utterances, one run.

Naive loop: HF model, batch 1, 30 s padded, `generate()` then a full model forward with every hidden
state kept in memory (what a first script usually does). Ours: batched, one encoder pass shared by
greedy decoding and the teacher-forced decoder, only real-audio frames kept, written to a Zarr cache.
`--reference` also times the reference path (`fast=False`: generate() and a full teacher-forced pass).

    python bench/extract.py --model bundled:base --n 24 --data-root ../shared/data/emodb --reference --repeat 2
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline.audio import load_audio
from pipeline.cache.reader import CacheReader
from pipeline.extract.run import ExtractionOptions, run_extraction
from pipeline.models.loader import load_whisper

from extraction_args import extraction_parser, first_utterances


def naive(model_spec: str, utterances, language: str | None) -> tuple[float, int]:
    w = load_whisper(model_spec)
    kwargs = dict(language=language, task="transcribe") if w.is_multilingual else {}
    kept, t0 = [], time.perf_counter()
    with torch.inference_mode():
        for u in utterances:
            audio = load_audio(u.path).samples
            feats = w.processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
            seq = w.model.generate(feats, **kwargs)
            out = w.model(input_features=feats, decoder_input_ids=seq, output_hidden_states=True, use_cache=False)
            kept.append((out.encoder_hidden_states, out.decoder_hidden_states))
    seconds = time.perf_counter() - t0
    nbytes = sum(t.numel() * t.element_size() for enc, dec in kept for t in (*enc, *dec))
    return seconds, nbytes


def main() -> None:
    ap = extraction_parser(__doc__, n=24)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtype", default="float32", help="compute dtype of ours (naive stays float32)")
    ap.add_argument("--reference", action="store_true",
                    help="also time ExtractionOptions(fast=False), the reference path (the 'before' number)")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds; the median is printed")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = first_utterances(args)
    n = len(corpus.utterances)
    load_whisper(args.model)  # convert/download once, outside both timings

    def ours(fast: bool) -> tuple[float, dict]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            run_extraction(corpus, Path(tmp) / "c.zarr",
                           ExtractionOptions(model=args.model, batch_size=args.batch_size, device="cpu",
                                             dtype=args.dtype, fast=fast),
                           progress=False)
            seconds = time.perf_counter() - t0
            with CacheReader(Path(tmp) / "c.zarr") as reader:
                return seconds, reader.info()

    # Interleaved rounds (naive, [reference], fast): load from other jobs hits all paths alike.
    times: dict[str, list[float]] = {"naive": [], "reference": [], "fast": []}
    for _ in range(args.repeat):
        t_naive, naive_bytes = naive(args.model, corpus.utterances, corpus.language)
        times["naive"].append(t_naive)
        if args.reference:
            times["reference"].append(ours(False)[0])
        t_fast, info = ours(True)
        times["fast"].append(t_fast)
    print(f"model {args.model}, {n} utterances of {args.corpus}, {torch.get_num_threads()} threads, "
          f"compute {args.dtype}, {args.repeat} interleaved round(s), median seconds")
    print(f"{'':>36} {'utt/s':>8} {'seconds':>8}")
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"{'naive (batch 1, gen+fwd)':>36} {n / med['naive']:8.3f} {med['naive']:8.1f}")
    if "reference" in med:
        print(f"{'nser-pipeline reference (batch %d)' % args.batch_size:>36} {n / med['reference']:8.3f} "
              f"{med['reference']:8.1f}")
    print(f"{'nser-pipeline (batch %d)' % args.batch_size:>36} {n / med['fast']:8.3f} {med['fast']:8.1f}")
    if "reference" in med:
        print(f"speed-up reference/naive: {med['naive'] / med['reference']:.2f}x")
    print(f"speed-up ours/naive: {med['naive'] / med['fast']:.2f}x (ours includes model load and cache writes)")
    if args.repeat > 1:
        print("per round ours/naive: " + ", ".join(f"{a / b:.2f}x" for a, b in zip(times["naive"], times["fast"])))
    print(f"cache: {info['bytes']} bytes for {info['audio_seconds']:.1f} s of audio = "
          f"{info['bytes_per_audio_second'] / 1e3:.1f} kB per audio second")
    print(f"naive in-memory hidden states (fp32, padded 30 s): {naive_bytes / info['audio_seconds'] / 1e3:.1f} "
          f"kB per audio second")


if __name__ == "__main__":
    main()
