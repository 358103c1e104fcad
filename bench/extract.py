"""Extraction throughput: nser-pipeline's extractor vs. the naive loop, on the same utterances, one run.

Naive loop: HF model, batch 1, 30 s padded, `generate()` then a full model forward with every hidden
state kept in memory (what a first script usually does). Ours: batched, one encoder pass shared by
greedy decoding and the teacher-forced decoder, only real-audio frames kept, written to a Zarr cache.

    python bench/extract.py --model bundled:base --n 24 --data-root ../shared/data/emodb
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pipeline.audio import load_audio
from pipeline.cache.reader import CacheReader
from pipeline.corpora.manifest import read_corpus
from pipeline.extract.run import ExtractionOptions, run_extraction
from pipeline.models.loader import load_whisper


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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled:base")
    ap.add_argument("--corpus", default="emodb")
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared/data/emodb"))
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = read_corpus(args.corpus, args.data_root)
    corpus.utterances = corpus.utterances[: args.n]
    n = len(corpus.utterances)
    load_whisper(args.model)  # convert/download once, outside both timings

    t_naive, naive_bytes = naive(args.model, corpus.utterances, corpus.language)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_extraction(corpus, Path(tmp) / "c.zarr",
                       ExtractionOptions(model=args.model, batch_size=args.batch_size, device="cpu"),
                       progress=False)
        t_ours = time.perf_counter() - t0
        info = CacheReader(Path(tmp) / "c.zarr").info()
    print(f"model {args.model}, {n} utterances of {args.corpus}, {torch.get_num_threads()} threads")
    print(f"{'':>28} {'utt/s':>8} {'seconds':>8}")
    print(f"{'naive (batch 1, gen+fwd)':>28} {n / t_naive:8.3f} {t_naive:8.1f}")
    print(f"{'nser-pipeline (batch %d)' % args.batch_size:>28} {n / t_ours:8.3f} {t_ours:8.1f}")
    print(f"speed-up ours/naive: {t_naive / t_ours:.2f}x (ours includes model load and cache writes)")
    print(f"cache: {info['bytes']} bytes for {info['audio_seconds']:.1f} s of audio = "
          f"{info['bytes_per_audio_second'] / 1e3:.1f} kB per audio second")
    print(f"naive in-memory hidden states (fp32, padded 30 s): {naive_bytes / info['audio_seconds'] / 1e3:.1f} "
          f"kB per audio second")


if __name__ == "__main__":
    main()
