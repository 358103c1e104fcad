"""How far `--context trimmed` drifts from the faithful 30 s padded context, per layer.

    python bench/context_drift.py --model bundled:base --n 24 --snr 0

Prints, per encoder and decoder state, the mean per-frame (per-token) cosine similarity between
trimmed and padded states, how many greedy hypotheses are identical, loops cut, and the time of
each mode.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipeline.audio import load_audio
from pipeline.corpora.manifest import read_corpus
from pipeline.extract.whisper_layers import WhisperLayerExtractor
from pipeline.models.loader import load_whisper
from pipeline.noise import NoiseBank

SHARED = Path(__file__).resolve().parents[2] / "shared/data"


def cosine_rows(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float32), b.astype(np.float32)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((num / den).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled:base")
    ap.add_argument("--data-root", default=str(SHARED / "emodb"))
    ap.add_argument("--noise", default=str(SHARED / "noise/babble"))
    ap.add_argument("--snr", type=float, default=None, help="mix noise at this SNR (default: clean)")
    ap.add_argument("--n", type=int, default=24)
    args = ap.parse_args()
    corpus = read_corpus("emodb", args.data_root)
    utts = corpus.utterances[:: max(1, len(corpus.utterances) // args.n)][: args.n]
    bank = NoiseBank(args.noise) if args.snr is not None else None
    audios = []
    for u in utts:
        x = load_audio(u.path).samples
        audios.append(bank.mix(x, u.utt_id, args.snr).samples if bank else x)
    w = load_whisper(args.model)
    results, times = {}, {}
    for mode in ("padded", "trimmed"):
        ex = WhisperLayerExtractor(w, context=mode, language=corpus.language)
        t0 = time.perf_counter()
        results[mode] = [ex.extract([a], [""])[0] for a in audios]
        times[mode] = (time.perf_counter() - t0) / len(audios)
    pad, trim = results["padded"], results["trimmed"]
    cond = "clean" if bank is None else f"babble {args.snr:g} dB"
    print(f"{args.model}, {len(audios)} EmoDB utterances ({cond}), batch 1")
    print(f"seconds per utterance: padded {times['padded']:.3f}, trimmed {times['trimmed']:.3f} "
          f"({times['padded'] / times['trimmed']:.1f}x)")
    print("encoder state: mean per-frame cosine(trimmed, padded)")
    for i in range(len(pad[0].encoder)):
        print(f"  enc{i}: {np.mean([cosine_rows(p.encoder[i], t.encoder[i]) for p, t in zip(pad, trim)]):.4f}")
    same = [p.hypothesis == t.hypothesis for p, t in zip(pad, trim)]
    print(f"identical hypotheses: {sum(same)}/{len(same)}; loops cut: padded {sum(p.hyp_loop for p in pad)}, "
          f"trimmed {sum(t.hyp_loop for t in trim)}; capped: padded {sum(p.hyp_capped for p in pad)}, "
          f"trimmed {sum(t.hyp_capped for t in trim)}")
    same_idx = [k for k, s in enumerate(same) if s]
    if same_idx:
        print("decoder state (utterances with identical hypotheses): mean per-token cosine")
        for i in range(len(pad[0].decoder)):
            print(f"  dec{i}: {np.mean([cosine_rows(pad[k].decoder[i], trim[k].decoder[i]) for k in same_idx]):.4f}")


if __name__ == "__main__":
    main()
