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

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from pipeline.report import aggregate as agg
from pipeline.train.fusion_specs import FUSION_SPECS
from pipeline.train.run_metrics import RunMetrics

COLUMNS = ["where", "stack", "method", "run_key", "seed", "fold", "layer", "weight"]


NOT_FOUND, NOT_THIS_RUN, NO_WEIGHTS = "not found", "another run's", "without layer weights"


def fold_weights(run: pd.Series, bases: Iterable[Path],
                 records: Iterable[str | Path] = ()) -> tuple[dict[str, dict[str, float]] | None, str]:
    """(fold -> layer -> weight, "") from the first metrics.json of `agg.metrics_places` that is this
    run's (`is_this_run`) and has every fold's weights; else (None, why: NOT_FOUND, NOT_THIS_RUN or
    NO_WEIGHTS, the most telling of what the places held)."""
    why = NOT_FOUND
    for place in agg.metrics_places(run, bases, records):
        try:
            metrics = RunMetrics.read(place)
            mine = is_this_run(metrics, run, place.parent)
            weights = {f: m.layer_weights for f, m in metrics.folds.items()}
            complete = all(isinstance(w, dict) and set(w) == set(metrics.layers) for w in weights.values())
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            continue  # absent, or no metrics record: as if not there
        if not mine:
            why = NOT_THIS_RUN
        elif not complete:
            why = NO_WEIGHTS if why == NOT_FOUND else why
        else:
            return {f: {k: float(v) for k, v in w.items()} for f, w in weights.items()}, ""
    return None, why


def is_this_run(metrics: RunMetrics, run: pd.Series, run_dir: Path) -> bool:
    """metrics.json (in `run_dir`) describes the table's row: the run.json beside it (a run dir's or
    a record's) names the row's key, and metrics.json has its fusion, seed, cache identity (where
    the table names one) and, fold by fold, the same test UAR."""
    if agg.is_text(run.get("run_key")):
        try:
            if json.loads((run_dir / "run.json").read_text()).get("key") != run["run_key"]:
                return False
        except FileNotFoundError:
            pass  # a hand-made run dir without run.json: the scores below must still be the row's
    if metrics.fusion != run["fusion"] or agg.seed_name(metrics.seed) != agg.seed_name(run["seed"]):
        return False
    if agg.is_text(run.get("cache_identity")) and metrics.cache_identity != run["cache_identity"]:
        return False
    folds = agg.json_value(run.get("fold_uar"))
    if not isinstance(folds, dict) or set(map(str, folds)) != set(metrics.folds):
        return False
    return all(math.isclose(float(u), metrics.folds[str(f)].uar, rel_tol=1e-9, abs_tol=1e-12) for f, u in folds.items())


def layer_weights(df: pd.DataFrame, bases: Iterable[Path],
                  records: Iterable[str | Path] = ()) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Long form (COLUMNS), one row per (run, test fold, layer) of the finished runs of fusions with
    learned layer weights, labelled as the fusion table's cells; and, per reason (`fold_weights`),
    the runs whose weights could not be read (their keys, else their cell)."""
    bases, records = list(bases), list(records)
    learned = {name for name, spec in FUSION_SPECS.items() if spec.learned_layer_weights}
    rows: list[dict] = []
    unread: dict[str, list[str]] = {}
    runs = agg.done(df)
    for (where, stack, method), group in runs[runs["fusion"].isin(learned)].groupby(["where", "stack", "method"], sort=False):
        for suffix, part in agg.split_settings(group):
            for row_id, run in part.iterrows():
                weights, why = fold_weights(run, bases, records)
                if weights is None:
                    name = str(run["run_key"]) if agg.is_text(run.get("run_key")) else f"{method}{suffix} on {where} (row {row_id})"
                    unread.setdefault(why, []).append(name)
                    continue
                key = run["run_key"] if agg.is_text(run.get("run_key")) else f"row {row_id}"
                for fold, w in weights.items():
                    rows += [{"where": where, "stack": stack, "method": method + suffix, "run_key": key,
                              "seed": agg.seed_name(run["seed"]), "fold": fold, "layer": layer, "weight": v}
                             for layer, v in w.items()]
    return pd.DataFrame(rows, columns=COLUMNS), unread


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
