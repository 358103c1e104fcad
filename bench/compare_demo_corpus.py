"""How far two demo corpora (``nser demo-corpus OUT``) differ, file by file, and their babble noise.

    python bench/compare_demo_corpus.py OUT_A OUT_B

Why: the demo corpus is rebuilt from a seed on every machine, so a change of speech engine (the
espeak-ng program vs the libespeak-ng wheel, or a new libespeak-ng version) must be measured, not
assumed. Both corpora must be built with the same parameters (same manifest). Prints: how many
utterances are bit-identical or of equal length, the duration differences, for the differing
utterances the correlation and the energy of the difference relative to the signal (over the
common length, aligned at the start: every file starts with the same 0.1 s pad before the first
speech sample), per speaker and per label counts, mean seconds per label, and the same sample
comparison for noise/babble/babble.wav.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import welch


def _manifest(out: Path) -> list[dict]:
    with open(out / "corpus" / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _read(path: Path) -> np.ndarray:
    return sf.read(str(path), dtype="int16")[0].astype(np.float64)


def _compare(a: np.ndarray, b: np.ndarray) -> dict:
    n = min(len(a), len(b))
    x, y = a[:n], b[:n]
    diff = x - y
    changed = np.nonzero(diff)[0]
    return {
        "identical": len(a) == len(b) and not changed.size,
        "same_length": len(a) == len(b),
        # where the two first differ, as a fraction of A's length (1 = equal up to the shorter end)
        "diverges_at": changed[0] / len(a) if changed.size else n / len(a),
        "max_abs": float(np.max(np.abs(diff))) / 32768.0,  # full scale = 1
        "corr": float(np.corrcoef(x, y)[0, 1]),
        "diff_db": 10 * np.log10(float(np.sum(diff**2)) / float(np.sum(x**2)))
        if changed.size else -np.inf,
    }


def _ltas_db(x: np.ndarray) -> np.ndarray:
    """Long-term average spectrum, dB, 100 Hz to 7 kHz (Welch, 1024-point segments)."""
    f, p = welch(x, fs=16000, nperseg=1024)
    return 10 * np.log10(p[(f >= 100) & (f <= 7000)] + 1e-20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    rows_a, rows_b = _manifest(args.a), _manifest(args.b)
    if rows_a != rows_b:
        raise SystemExit("the manifests differ: build both corpora with the same parameters")
    for out in (args.a, args.b):
        meta = json.loads((out / "corpus" / "corpus.json").read_text())
        print(f"{out}: {meta['espeak_ng']}; {meta['n_utterances']} utterances, "
              f"{meta['total_seconds']} s, mean s per label {meta['mean_seconds_per_label']}")

    results, dur_ms = [], []
    by_speaker: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_label: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows_a:
        a, b = _read(args.a / "corpus" / row["path"]), _read(args.b / "corpus" / row["path"])
        r = _compare(a, b)
        results.append(r)
        dur_ms.append((len(b) - len(a)) / 16.0)
        for table, key in ((by_speaker, row["speaker"]), (by_label, row["label"])):
            table[key][0] += r["identical"]
            table[key][1] += 1
    n = len(results)
    dur = np.array(dur_ms)
    print(f"utterances: {n}; bit-identical {sum(r['identical'] for r in results)}; "
          f"same length {sum(r['same_length'] for r in results)}")
    print(f"duration B-A (ms): mean {dur.mean():+.2f}, median {np.median(dur):+.2f}, "
          f"min {dur.min():+.2f}, max {dur.max():+.2f}; |diff| > 1 ms in "
          f"{int(np.sum(abs(dur) > 1))}")
    same_len = [r for r in results if r["same_length"] and not r["identical"]]
    if same_len:
        corr = np.array([r["corr"] for r in same_len])
        db = np.array([r["diff_db"] for r in same_len])
        mx = np.array([r["max_abs"] for r in same_len])
        print(f"same length, not identical ({len(same_len)}): correlation min {corr.min():.4f} "
              f"median {np.median(corr):.4f}; difference energy vs signal median "
              f"{np.median(db):.1f} dB, max {db.max():.1f} dB; max |difference| (full scale 1) "
              f"median {np.median(mx):.3f}, max {mx.max():.3f}")
    other_len = [r for r in results if not r["same_length"]]
    if other_len:
        at = np.array([r["diverges_at"] for r in other_len])
        print(f"other length ({len(other_len)}): first differing sample at median "
              f"{100 * np.median(at):.0f}% of the utterance (min {100 * at.min():.0f}%)")
    print("bit-identical per speaker:", {k: f"{v[0]}/{v[1]}" for k, v in by_speaker.items()})
    print("bit-identical per label:", {k: f"{v[0]}/{v[1]}" for k, v in by_label.items()})

    babble = [out / "noise" / "babble" / "babble.wav" for out in (args.a, args.b)]
    if all(p.is_file() for p in babble):
        a, b = _read(babble[0]), _read(babble[1])
        r = _compare(a, b)
        rms = [20 * np.log10(np.sqrt(np.mean((x / 32768.0) ** 2))) for x in (a, b)]
        ltas = _ltas_db(a / 32768.0) - _ltas_db(b / 32768.0)
        ltas = np.abs(ltas - ltas.mean())  # shape only: the level is already in the RMS
        print(f"babble: {len(a) / 16000:.1f} s vs {len(b) / 16000:.1f} s; bit-identical "
              f"{r['identical']}; correlation {r['corr']:.4f}; difference energy vs signal "
              f"{r['diff_db']:.1f} dB; RMS {rms[0]:.2f} vs {rms[1]:.2f} dBFS; long-term spectrum "
              f"shape 100 Hz-7 kHz |difference| mean {ltas.mean():.2f} dB, max {ltas.max():.2f} dB")


if __name__ == "__main__":
    main()
