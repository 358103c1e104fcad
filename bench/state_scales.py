"""Scale of every stored state of a cache (docs/results.md, "State scales"): why raw states are a poor
input to an unnormalised weighted sum.

    python bench/state_scales.py CACHE

Per state: the median and 99th percentile of a frame's RMS over the d dimensions, the largest |value|,
the median over dimensions of each dimension's std; for decoder states also the median RMS at the
first positions (the prompt tokens) and at the last.
"""

from __future__ import annotations

import argparse

import numpy as np

from pipeline.cache.reader import CacheReader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    args = ap.parse_args()
    with CacheReader(args.cache) as r:
        n_tokens = np.asarray(r.table["n_tokens"])
        position = np.concatenate([np.arange(k) for k in n_tokens]) if len(n_tokens) else np.zeros(0, int)
        for stack, count in (("encoder", r.n_encoder_states), ("decoder", r.n_decoder_states)):
            for i in range(count):
                a = r.group[f"{stack}/layer_{i:02d}"][:].astype(np.float32)
                rms = np.sqrt((a ** 2).mean(axis=1))
                line = (f"{stack[:3]}{i}: frame RMS median {np.median(rms):7.2f}, p99 {np.percentile(rms, 99):7.2f}; "
                        f"max |x| {np.abs(a).max():7.1f}; per-dim std median {np.median(a.std(axis=0)):6.2f}")
                if stack == "decoder":
                    line += " | RMS by position " + " ".join(
                        f"{p}:{np.median(rms[position == p]):.2f}" for p in range(4))
                print(line)


if __name__ == "__main__":
    main()
