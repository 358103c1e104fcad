"""How far a cache extracted on one device is from the same condition extracted on another.

A GPU machine may be lent for minutes and cannot take a whole cache back, so each side dumps what the
comparison needs into a small .npz (every utterance's token ids, the states of the first N utterances),
and the two dumps are compared wherever both are:

    python bench/device_drift.py dump CACHE OUT.npz [--n 3]
    python bench/device_drift.py compare CPU.npz GPU.npz

The comparison prints how many greedy token sequences agree and, per stored state, the relative error
||a - b|| / ||a|| over the dumped utterances (float16 storage alone rounds at ~5e-4).
"""

from __future__ import annotations

import argparse

import numpy as np


def dump(cache: str, n: int) -> dict[str, np.ndarray]:
    from pipeline.cache.reader import CacheReader

    with CacheReader(cache) as r:
        out = {"utt_id": np.asarray([str(u) for u in r.table["utt_id"]]),
               "identity_hash": np.asarray(r.identity_hash),
               "tokens": np.asarray([" ".join(map(str, r.tokens(i).tolist())) for i in range(r.n)])}
        sel = r.selection("enc:all,dec:all")
        names = [f"enc{i}" for i in sel.encoder] + [f"dec{i}" for i in sel.decoder]
        out["states"] = np.asarray(names)
        for i in range(min(n, r.n)):
            for name, s in zip(names, r.read_states(i, sel)):
                out[f"{name}/{i}"] = np.asarray(s)
    return out


def compare(a: np.lib.npyio.NpzFile, b: np.lib.npyio.NpzFile) -> list[str]:
    if not np.array_equal(a["utt_id"], b["utt_id"]):
        raise SystemExit("the two dumps hold different utterances")
    agree = a["tokens"] == b["tokens"]
    lines = [f"caches {a['identity_hash']} vs {b['identity_hash']}: "
             f"{int(agree.sum())} of {len(agree)} token sequences identical"]
    for name in a["states"]:
        errs = []
        for key in (k for k in a.files if k.startswith(f"{name}/")):
            x, y = a[key].astype(np.float64), b[key].astype(np.float64)
            if x.shape == y.shape:
                errs.append(np.linalg.norm(x - y) / max(np.linalg.norm(x), 1e-30))
        lines.append(f"{name}: relative error " + (f"mean {np.mean(errs):.1e}, max {np.max(errs):.1e} over "
                                                   f"{len(errs)} utterances" if errs else "n/a (shapes differ)"))
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("cache")
    d.add_argument("out")
    d.add_argument("--n", type=int, default=3)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args()
    if args.cmd == "dump":
        np.savez_compressed(args.out, **dump(args.cache, args.n))
    else:
        print("\n".join(compare(np.load(args.a), np.load(args.b))))
