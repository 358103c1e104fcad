"""The report's learned layer weights: the softmax weights over layers that `l-adapter`,
`weighted-sum` and `scalar-mix` end with on each test fold, read from each run's metrics.json.

Why: a fusion's score alone cannot say whether it used its layers as a mix or picked one, nor
which; the weights can (e.g. whether they left uniform at Adam 1e-4, or went to the deepest blocks
or the loudest state when freed, docs/training.md `--layer-weight-lr`). The results table holds no
weights, so they are read where the run's metrics.json is: its run dir, the grid's `runs/<key>`
beside the table, or a records folder (`nser-grid --records`), and taken only when that file is
this very run's (cache identity, fusion, seed and every fold's test UAR as the table has them): a
stale run dir of another run must not lend its weights to this one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from pipeline.report import aggregate as agg
from pipeline.train.fusion_specs import FUSION_SPECS
from pipeline.train.run_metrics import RunMetrics

COLUMNS = ["where", "stack", "method", "run_key", "seed", "fold", "layer", "weight"]


def metrics_places(run: pd.Series, base: Path | None, records: Iterable[str | Path] = ()) -> list[Path]:
    """Where the run's metrics.json may be, in order: its run dir, `<base>/runs/<key>` (the grid's
    layout, wherever the table was moved), then `<records>/<key>` for each records folder."""
    places = [Path(str(run["run_dir"])) / "metrics.json"] if _text(run.get("run_dir")) else []
    key = run.get("run_key")
    if _text(key):
        if base is not None:
            places.append(base / "runs" / str(key) / "metrics.json")
        places += [Path(r) / str(key) / "metrics.json" for r in records]
    return places


def run_metrics(run: pd.Series, base: Path | None, records: Iterable[str | Path] = ()) -> RunMetrics | None:
    """The first metrics.json of `metrics_places` that is this run's (`is_this_run`), else None."""
    for place in metrics_places(run, base, records):
        try:
            metrics = RunMetrics.read(place)
        except (OSError, ValueError):
            continue
        if is_this_run(metrics, run):
            return metrics
    return None


def is_this_run(metrics: RunMetrics, run: pd.Series) -> bool:
    """metrics.json describes the table's row: same fusion, seed, cache identity (where the table
    names one) and, fold by fold, the same test UAR."""
    if metrics.fusion != run["fusion"] or agg.seed_name(metrics.seed) != agg.seed_name(run["seed"]):
        return False
    if _text(run.get("cache_identity")) and metrics.cache_identity != run["cache_identity"]:
        return False
    folds = agg.json_value(run.get("fold_uar"))
    if not isinstance(folds, dict) or set(map(str, folds)) != set(metrics.folds):
        return False
    return all(math.isclose(float(u), metrics.folds[str(f)].uar, rel_tol=1e-9, abs_tol=1e-12) for f, u in folds.items())


def layer_weights(df: pd.DataFrame, base: Path | None, records: Iterable[str | Path] = ()) -> tuple[pd.DataFrame, list[str]]:
    """Long form (COLUMNS), one row per (run, test fold, layer) of the finished runs of fusions with
    learned layer weights, labelled as the fusion table's cells; and the keys of such runs whose
    own metrics.json was not found."""
    records = list(records)
    learned = {name for name, spec in FUSION_SPECS.items() if spec.learned_layer_weights}
    rows, missing = [], []
    runs = agg.done(df)
    for (where, stack, method), group in runs[runs["fusion"].isin(learned)].groupby(["where", "stack", "method"], sort=False):
        for suffix, part in agg.split_settings(group):
            for _, run in part.iterrows():
                metrics = run_metrics(run, base, records)
                weights = {f: m.layer_weights for f, m in metrics.folds.items()} if metrics else {}
                if not weights or any(w is None for w in weights.values()):
                    missing.append(str(run["run_key"]) if _text(run.get("run_key")) else f"{method}{suffix} on {where}")
                    continue
                for fold, w in weights.items():
                    rows += [{"where": where, "stack": stack, "method": method + suffix, "run_key": run["run_key"],
                              "seed": agg.seed_name(run["seed"]), "fold": fold, "layer": layer, "weight": float(v)}
                             for layer, v in w.items()]
    return pd.DataFrame(rows, columns=COLUMNS), missing


def summary(weights: pd.DataFrame) -> pd.DataFrame:
    """Per (where, stack, method): the layers in their stored order, each layer's mean weight over
    the (run, fold) pairs, how many pairs, and the layer with the largest weight on each fold
    (seeds' weights averaged first)."""
    out = []
    for (where, stack, method), g in weights.groupby(["where", "stack", "method"], sort=False):
        layers = list(dict.fromkeys(g["layer"]))
        mean = g.groupby("layer")["weight"].mean()
        per_fold = g.groupby(["fold", "layer"])["weight"].mean()
        folds = sorted(set(g["fold"]), key=agg.fold_order)
        largest = {f: per_fold[f].idxmax() for f in folds}
        out.append({"where": where, "stack": stack, "method": method, "layers": layers,
                    "mean": [float(mean[layer]) for layer in layers], "n": len(g.groupby(["run_key", "fold"])),
                    "largest": largest})
    return pd.DataFrame(out, columns=["where", "stack", "method", "layers", "mean", "n", "largest"])


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def stack_of(layer: str) -> str:
    """"enc5" -> "enc": the stack a stored layer's name belongs to."""
    return layer.rstrip("0123456789")


def uniform(layers: list[str], mean: list[float]) -> str:
    """What equal weights would be: 1 / the layers, or 1 / a stack's layers where the fusion mixes
    each stack on its own (its weights then sum to 1 per stack, as `weighted-sum` and `scalar-mix`
    over two stacks do; the layer adapter has one softmax over all)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for layer, w in zip(layers, mean):
        sums[stack_of(layer)] = sums.get(stack_of(layer), 0.0) + w
        counts[stack_of(layer)] = counts.get(stack_of(layer), 0) + 1
    if len(sums) > 1 and all(math.isclose(v, 1.0, abs_tol=1e-3) for v in sums.values()):
        if len(set(counts.values())) == 1:
            return f"{1 / next(iter(counts.values())):.3f} in each stack"
        return ", ".join(f"{name} {1 / n:.3f}" for name, n in counts.items())
    return f"{1 / len(layers):.3f}" if layers else ""


def weight_matrix(rows: pd.DataFrame) -> tuple[list[str], list[str], np.ndarray]:
    """For a heat map of one condition's `summary` rows: row labels, the union of their layers
    (encoder then decoder, by index), and the mean weights (NaN where a row has no such layer)."""
    labels = [f"{s} {m}" for s, m in zip(rows["stack"], rows["method"])]
    names = {layer for layers in rows["layers"] for layer in layers}
    order = sorted(names, key=lambda n: (0 if n.startswith("enc") else 1 if n.startswith("dec") else 2,
                                         int("".join(c for c in n if c.isdigit()) or 0), n))
    grid = np.full((len(rows), len(order)), np.nan)
    for i, (layers, mean) in enumerate(zip(rows["layers"], rows["mean"])):
        for layer, value in zip(layers, mean):
            grid[i, order.index(layer)] = value
    return labels, order, grid
