"""Compute dtype: speed and drift of `--dtype bfloat16` (or float16) against float32, as stored (fp16).

    python bench/extract_dtype_drift.py --model bundled:base --n 16 --dtype bfloat16

Both runs use the fast path, the padded context and Whisper's own hypothesis. Per state: mean
per-frame (per-token) cosine and relative error ||x - x32|| / ||x32|| over all frames. Decoder states
are compared only for utterances whose token sequences agree (else positions mean other tokens).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pipeline.audio import load_audio
from pipeline.extract.run import DTYPES
from pipeline.extract.whisper_layers import WhisperLayerExtractor
from pipeline.models.loader import load_whisper

from extraction_args import extraction_parser, first_utterances


def run(model: str, dtype: torch.dtype, audios, language, batch: int):
    w = load_whisper(model, dtype=dtype)
    ex = WhisperLayerExtractor(w, language=language)
    out, t0 = [], time.perf_counter()
    for i in range(0, len(audios), batch):
        out += ex.extract(audios[i:i + batch], [""] * len(audios[i:i + batch]))
    return out, time.perf_counter() - t0


def drift(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    x, y = np.concatenate(a).astype(np.float64), np.concatenate(b).astype(np.float64)
    cos = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-30)
    return float(cos.mean()), float(np.linalg.norm(x - y) / np.linalg.norm(x))


def main() -> None:
    ap = extraction_parser(__doc__, n=16)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    args = ap.parse_args()
    corpus = first_utterances(args)
    utts = corpus.utterances
    audios = [load_audio(u.path).samples for u in utts]
    lang = corpus.language if corpus.language != "multi" else None
    load_whisper(args.model)
    ref, t32 = run(args.model, torch.float32, audios, lang, args.batch_size)
    low, tlo = run(args.model, DTYPES[args.dtype], audios, lang, args.batch_size)
    same = [np.array_equal(r.tokens, x.tokens) for r, x in zip(ref, low)]
    print(f"model {args.model}, {len(utts)} utterances, batch {args.batch_size}, {torch.get_num_threads()} threads "
          f"(CPU capability {torch.backends.cpu.get_cpu_capability()})")
    print(f"float32 {t32:.1f} s, {args.dtype} {tlo:.1f} s: {t32 / tlo:.2f}x")
    print(f"hypotheses identical: {sum(r.hypothesis == x.hypothesis for r, x in zip(ref, low))}/{len(utts)}; "
          f"token sequences identical: {sum(same)}/{len(utts)}")
    for stack in ("encoder", "decoder"):
        keep = [k for k in range(len(ref)) if stack == "encoder" or same[k]]
        if not keep:
            continue
        n_states = len(getattr(ref[0], stack))
        cells = []
        for i in range(n_states):
            c, e = drift([getattr(ref[k], stack)[i] for k in keep], [getattr(low[k], stack)[i] for k in keep])
            cells.append(f"{stack[:3]}{i}: cos {c:.5f} rel {e:.4f}")
        print(f"{stack} ({len(keep)} utterances):\n  " + "\n  ".join(cells))


if __name__ == "__main__":
    main()
