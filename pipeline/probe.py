"""Fast layer scan: a linear probe on every cached layer, scored on the training folds.

Training an adapter per layer and fold (`nser-train --fusion best`) answers "which layers carry
emotion" in hours; a pooled linear probe answers it in minutes, because each layer is read once,
pooled to one vector per utterance, and a logistic regression fits in well under a second.
The numbers are a lower bound on what a layer offers (linear, utterance-level statistics only),
meant for comparing layers with each other, not with the trained fusions.

Protocol (docs/probe.md): per layer, features are the mean (or mean and std, `pooling="mean+std"`)
of the layer's states over the utterance's stored frames (encoder) or tokens (decoder); for each
fold of `fold_plan`, StandardScaler + LogisticRegression (class-balanced, fixed seed) is fitted on
the training *and* validation parts, since a probe has no epoch to choose, and scored once on the
test fold.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError
from pipeline.layers import LayerSelection
from pipeline.safe_files import atomic_open, atomic_write

POOLINGS = ("mean", "mean+std")
CSV_COLUMNS = ("stack", "layer", "name", "uar", "uar_std", "macro_f1", "macro_f1_std", "folds")
_BLOCK_BYTES = 32 << 20  # float64 working set per block; the layer itself is never held whole


def _segment_sums(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Sums of values[starts[k]:ends[k]] for every k, via one running sum (gaps and empty spans are fine)."""
    running = np.zeros((len(values) + 1, values.shape[1]))
    np.cumsum(values, axis=0, out=running[1:])
    return running[ends] - running[starts]


def pool_layer(reader: CacheReader, stack: str, index: int, pooling: str = "mean",
               block_rows: int | None = None) -> np.ndarray:
    """Per-utterance pooled states of one layer, float32 [n utterances, d] (2d for mean+std).

    The layer is read in large row blocks aligned to its shards (each shard file read once, memory
    bounded by the block, not the layer); per-utterance sums come from a float64 running sum over
    the block, so an utterance split across blocks is simply summed from both sides.
    """
    if pooling not in POOLINGS:
        raise NserError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    arr = reader.array(stack, index)
    d = int(arr.shape[1])
    starts, counts = reader.spans(stack)
    ends = starts + counts
    n = len(starts)
    total = int(ends.max()) if n else 0  # rows past the last commit are not ours to read
    if block_rows is None:
        unit = int((arr.shards or arr.chunks)[0])
        block_rows = unit * max(1, _BLOCK_BYTES // (unit * d * 8))
    order = np.argsort(starts, kind="stable")  # the writer appends in table order; this only guards searchsorted
    s_sorted, e_sorted = starts[order], ends[order]
    sums = np.zeros((n, d))
    squares = np.zeros((n, d)) if pooling == "mean+std" else None
    poisoned = np.zeros(n, dtype=bool)
    for lo in range(0, total, block_rows):
        hi = min(lo + block_rows, total)
        x = np.asarray(arr[lo:hi], dtype=np.float64)
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            # A NaN/Inf would spread through the running sum to every later utterance of the block:
            # zero its rows, and make only the utterances they belong to NaN (see _check_finite).
            rows = lo + np.flatnonzero(bad)
            k = np.searchsorted(s_sorted, rows, side="right") - 1
            owned = (k >= 0) & (e_sorted[np.maximum(k, 0)] > rows)
            poisoned[order[k[owned]]] = True
            x[bad] = 0.0
        first = int(np.searchsorted(e_sorted, lo, side="right"))
        last = int(np.searchsorted(s_sorted, hi, side="left"))
        if first >= last:
            continue
        s = np.clip(s_sorted[first:last] - lo, 0, hi - lo)
        e = np.clip(e_sorted[first:last] - lo, 0, hi - lo)
        who = order[first:last]  # distinct utterances, so fancy-index += adds each once
        sums[who] += _segment_sums(x, s, e)
        if squares is not None:
            squares[who] += _segment_sums(x * x, s, e)
    count = np.maximum(ends - starts, 1)[:, None]
    mean = sums / count
    mean[poisoned] = np.nan
    if squares is None:
        return mean.astype(np.float32)
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return np.concatenate([mean, std], axis=1).astype(np.float32)


def _check_finite(reader: CacheReader, features: np.ndarray, name: str) -> None:
    """A NaN/Inf state makes its utterance's pooled features non-finite; scikit-learn would fail on
    them with a bare ValueError, so name the layer and the utterances instead."""
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        ids = [str(u) for u in reader.table["utt_id"][bad]]
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        raise NserError(f"the cache holds non-finite (NaN/Inf) states in layer {name} of utterance(s) {shown}; "
                        "re-extract the cache (if fp16 computation overflowed: nser-extract --dtype float32), "
                        "or leave that layer out with --layers")


def make_probe(seed: int):
    """The classifier: standardized features (layers differ in scale by orders of magnitude), then a
    class-balanced logistic regression, so the minority classes count as much as in UAR."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed))


def _labels(reader: CacheReader) -> np.ndarray:
    class_ids = {c: i for i, c in enumerate(reader.classes)}
    labels = [str(v) for v in reader.table["label"]]
    unknown = sorted(set(labels) - set(class_ids))
    if unknown:
        raise NserError(f"cache labels {unknown} are not in its class list {reader.classes}")
    return np.array([class_ids[v] for v in labels], dtype=np.int64)


def _fit_plan(reader: CacheReader) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(test fold, fit indices = train + validation, test indices); disjoint by construction and checked.
    A fit part with one class is refused (the trainer's rule); parts missing classes warn."""
    from pipeline.folds import check_class_coverage, fold_plan

    folds = fold_plan(reader)
    check_class_coverage(reader, folds, fit_on_validation=True)
    plan = []
    for test_fold, train_idx, val_idx, test_idx in folds:
        fit_idx = np.union1d(np.asarray(train_idx, dtype=np.int64), np.asarray(val_idx, dtype=np.int64))
        test = np.asarray(test_idx, dtype=np.int64)
        if np.intersect1d(fit_idx, test).size:
            raise NserError(f"fold {test_fold}: test utterances would enter the probe's fit")
        plan.append((test_fold, fit_idx, test))
    return plan


def probe_layers(reader: CacheReader, selection: LayerSelection | str, seed: int = 0, *, pooling: str = "mean",
                 progress: bool = False, block_rows: int | None = None,
                 allow_missing: bool = False) -> list[dict[str, Any]]:
    """One row per selected layer (encoder first): mean/std over test folds of UAR and macro-F1,
    and the per-fold scores with the fit/test sizes. A cache with failed or never extracted
    utterances is refused unless `allow_missing` (as for training; probe.json's `left_out` says
    what is missing)."""
    from tqdm import tqdm

    from pipeline.folds import check_cache_complete, corpus_folds
    from pipeline.train.metrics import classification_metrics, summarize_folds

    if isinstance(selection, str):
        selection = reader.selection(selection)
    y = _labels(reader)
    n_classes = len(reader.classes)
    plan = _fit_plan(reader)
    check_cache_complete(reader, corpus_folds(reader, plan), allow_missing)
    layers = [("encoder", i) for i in selection.encoder] + [("decoder", i) for i in selection.decoder]
    rows = []
    bar = tqdm(layers, desc="probe", unit="layer", disable=not progress)
    for stack, i in bar:
        name = f"{stack[:3]}{i}"
        bar.set_postfix_str(name)
        x = pool_layer(reader, stack, i, pooling, block_rows)
        _check_finite(reader, x, name)
        per_fold = {}
        for test_fold, fit_idx, test_idx in plan:
            model = make_probe(seed).fit(x[fit_idx], y[fit_idx])
            per_fold[test_fold] = classification_metrics(y[test_idx], model.predict(x[test_idx]), n_classes)
            per_fold[test_fold]["n_fit"] = int(len(fit_idx))
        summary = summarize_folds(per_fold)
        rows.append({"stack": stack, "layer": i, "name": name,
                     "uar": summary["uar"], "uar_std": summary["uar_std"],
                     "macro_f1": summary["macro_f1"], "macro_f1_std": summary["macro_f1_std"],
                     "folds": {f: {"uar": m["uar"], "macro_f1": m["macro_f1"], "n_fit": m["n_fit"],
                                   "n_test": m["n"]} for f, m in per_fold.items()}})
    return rows


def probe_report(reader: CacheReader, rows: list[dict[str, Any]], *, seed: int, pooling: str, layers: str,
                 seconds: float) -> dict[str, Any]:
    """probe.json's object: the rows plus what they depend on (cache identity, seed, protocol)."""
    from pipeline.folds import corpus_folds, left_out
    from pipeline.version import code_version

    return {"cache": str(reader.path) if reader.path else reader.where, "identity_hash": reader.identity_hash,
            # an unfinished cache's part (its identity stays as it grows) and what the numbers lack
            "partial": reader.partial_hash, "complete": reader.complete, "n_manifest": reader.meta.n_manifest,
            "left_out": left_out(reader, corpus_folds(reader, [])),
            "model": reader.meta.model.name, "condition": reader.meta.condition.name,
            "n_utterances": reader.n, "classes": reader.classes, "layers": layers, "pooling": pooling,
            "classifier": "StandardScaler + LogisticRegression(C=1, class_weight=balanced, lbfgs)",
            "fit_on": "train+validation", "seed": seed, "seconds": seconds, "code_version": code_version(),
            "rows": rows}


def format_probe_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| layer | UAR | macro-F1 |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['uar']:.4f} ± {r['uar_std']:.4f} | "
                     f"{r['macro_f1']:.4f} ± {r['macro_f1_std']:.4f} |")
    for stack in ("encoder", "decoder"):
        mine = [r for r in rows if r["stack"] == stack]
        if mine:
            best = max(mine, key=lambda r: r["uar"])
            lines.append(f"best {stack} layer by UAR: {best['name']} ({best['uar']:.4f})")
    return "\n".join(lines)


def plot_probe(rows: list[dict[str, Any]], path: Path | IO[bytes], *, n_classes: int, title: str = "") -> None:
    """UAR and macro-F1 (± std over folds) against layer index, one panel per stack. Uses a bare
    Figure (Agg canvas), so it neither needs a display nor changes pyplot's backend."""
    from matplotlib.figure import Figure

    stacks = [s for s in ("encoder", "decoder") if any(r["stack"] == s for r in rows)]
    fig = Figure(figsize=(5.0 * len(stacks), 3.6), layout="constrained")
    axes = fig.subplots(1, len(stacks), sharey=True, squeeze=False)[0]
    for ax, stack in zip(axes, stacks):
        mine = [r for r in rows if r["stack"] == stack]
        idx = [r["layer"] for r in mine]
        for key, label in (("uar", "UAR"), ("macro_f1", "macro-F1")):
            ax.errorbar(idx, [r[key] for r in mine], yerr=[r[f"{key}_std"] for r in mine], marker="o",
                        capsize=3, label=label)
        ax.axhline(1.0 / n_classes, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xlabel(f"{stack} layer (0 = embeddings)")
        ax.set_xticks(idx)
        ax.set_title(stack)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score on test folds")
    axes[0].legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.savefig(path, dpi=120, format="png")


# What makes two probes the same probe: a rerun of it may replace its files, nothing else may.
_SAME_PROBE = ("identity_hash", "partial", "layers", "pooling", "seed")


def write_probe_outputs(report: dict[str, Any], out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """probe.csv (per-fold scores as a JSON column), probe.json and probe.png in out_dir, each
    written atomically, probe.json last. Files there from another probe (another cache, part of one,
    layers, pooling or seed), or probe.* files without a probe.json, are refused unless `overwrite`:
    one --out used for two conditions must not leave only the second."""
    paths = _probe_paths(out_dir)
    if not overwrite:
        check_probe_out(out_dir, report)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with atomic_open(paths["png"], "wb") as fh:
        plot_probe(report["rows"], fh, n_classes=len(report["classes"]),
                   title=f"linear probe ({report['pooling']} pooling): {report['model']}, {report['condition']}")
    with atomic_open(paths["csv"], "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in report["rows"]:
            writer.writerow({**r, "folds": json.dumps(r["folds"], sort_keys=True)})
    atomic_write(paths["json"], json.dumps(report, indent=2))
    return paths


def _probe_paths(out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    return {"csv": out / "probe.csv", "json": out / "probe.json", "png": out / "probe.png"}


def probe_key(reader: CacheReader, layers: str, pooling: str, seed: int) -> dict[str, Any]:
    """probe.json's fields that make it this probe (_SAME_PROBE), known before it runs."""
    return {"identity_hash": reader.identity_hash, "partial": reader.partial_hash, "layers": layers,
            "pooling": pooling, "seed": seed}


def check_probe_out(out_dir: str | Path, report: dict[str, Any]) -> None:
    """Refuse `out_dir` when it holds probe files of another probe than `report` (or `probe_key`'s
    dict), or probe.* files without a probe.json; the same probe's files may be replaced."""
    paths = _probe_paths(out_dir)
    there = [p for p in paths.values() if p.exists()]
    if not there:
        return
    way_out = "choose another --out, or pass --overwrite to replace them"
    if not paths["json"].exists():
        raise NserError(f"{', '.join(map(str, there))} exist(s) without a probe.json: not a probe's output; {way_out}")
    try:
        before = json.loads(paths["json"].read_text())
        differ = [k for k in _SAME_PROBE if before.get(k) != report.get(k)]
    except (OSError, ValueError, AttributeError) as exc:
        raise NserError(f"{paths['json']} cannot be read ({exc}); {way_out}") from None
    if differ:
        detail = "; ".join(f"{k}: {before.get(k)!r} there, {report.get(k)!r} now" for k in differ)
        raise NserError(f"{paths['json'].parent} holds the probe of {before.get('cache', 'another cache')} "
                        f"({before.get('condition')}) with other settings ({detail}); {way_out}")
