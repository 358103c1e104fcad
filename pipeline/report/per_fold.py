"""The report's per-test-fold table: each method's score on every test fold of a condition, and on
which folds a fusion chosen on validation (`best`) picked the layer that scores best on that fold.

Why: with a handful of speaker folds the fold-pooled mean hides what decides a comparison: whether
one method is ahead on every fold or on one, and whether validation picks the test fold's best
layer. `nser-report --compare` tests the pairs; this table shows them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.report import aggregate as agg
from pipeline.train.fusion_specs import FUSION_SPECS, layer_sweep_fusions


def chosen_layers(best_layer: object, folds: list[str]) -> dict[str, str]:
    """fold -> the layer a `best` run picked: its results column holds one layer where its folds
    agree, else "fold:layer, ..." (pipeline.train.run_metrics.LayerChoice)."""
    text = "" if best_layer is None or (isinstance(best_layer, float) and math.isnan(best_layer)) else str(best_layer)
    if not text:
        return {}
    if ":" not in text:
        return {f: text for f in folds}
    return dict(part.strip().split(":", 1) for part in text.split(","))


def per_fold_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Long form, one row per (where, stack, method, test fold) of the finished runs: uar and
    macro_f1 averaged over the seeds that scored the fold (`n_seeds`), and for a fusion chosen on
    validation the layer(s) its seeds picked there (`chosen`). Cells are the fusion table's
    (`method_cells`): runs of other settings or other data of a condition are rows of their own."""
    rows = []
    for (where, stack, method), group in agg.done(df).groupby(["where", "stack", "method"], sort=False):
        for suffix, part in agg.split_settings(group):
            what = f"{method}{suffix} on {where}"
            uar = agg.fold_scores_once(part, "uar", what)
            f1 = agg.fold_scores_once(part, "macro_f1", what)
            fusion, spec = part["fusion"].iloc[0], FUSION_SPECS.get(part["fusion"].iloc[0])
            chosen: dict[str, set[str]] = {}
            if spec is not None and spec.chosen_on_validation:
                picked = part["best_layer"] if "best_layer" in part.columns else [None] * len(part)  # hand-made tables
                for best_layer, scores in zip(picked, part["fold_uar"]):
                    folds = [str(f) for f in (agg.json_value(scores) or {})]
                    for fold, layer in chosen_layers(best_layer, folds).items():
                        chosen.setdefault(fold, set()).add(layer)
            for fold in sorted({f for _, f in uar}, key=agg.fold_order):
                seeds = [s for s, f in uar if f == fold]
                f1_values = [f1[(s, fold)] for s in seeds if (s, fold) in f1]
                rows.append({"where": where, "stack": stack, "method": method + suffix, "fold": fold,
                             "fusion": fusion, "selection": part["selection"].iloc[0],
                             "tag": method.removeprefix(part["base_method"].iloc[0]) + suffix,
                             "uar": float(np.mean([uar[(s, fold)] for s in seeds])),
                             "macro_f1": float(np.mean(f1_values)) if f1_values else math.nan,
                             "n_seeds": len(seeds), "chosen": "/".join(sorted(chosen.get(fold, ())))})
    return pd.DataFrame(rows, columns=["where", "stack", "method", "fold", "fusion", "selection", "tag", "uar",
                                       "macro_f1", "n_seeds", "chosen"])


def validation_picks(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (where, stack, fold) where a fusion chosen on validation and the single-layer runs of the
    same stack and setting both scored: the layer validation picked, its test UAR, and the single
    layer with the best test UAR on that fold (an oracle) with its UAR; `hit` when validation picked
    that layer or one tied with it (otherwise the shallowest of the tied layers is named)."""
    sweeps = set(layer_sweep_fusions())
    one_layer = scores["fusion"].isin(sweeps) & scores["selection"].map(lambda s: agg.single_layer(s) is not None)
    rows = []
    for (where, stack, fold), g in scores.groupby(["where", "stack", "fold"], sort=False):
        for _, best in g[g["chosen"] != ""].iterrows():
            singles = g[one_layer[g.index] & (g["tag"] == best["tag"])]
            if singles.empty:
                continue
            singles = singles.assign(_name=singles["selection"].str.replace(":", "", regex=False),
                                     _layer=singles["selection"].map(lambda s: agg.single_layer(s)[1]))
            tops = singles[singles["uar"] == singles["uar"].max()].sort_values("_layer")
            hit = best["chosen"] in set(tops["_name"])
            rows.append({"where": where, "stack": stack, "method": best["method"], "fold": fold,
                         "chosen": best["chosen"], "uar": best["uar"],
                         "test_best": best["chosen"] if hit else tops["_name"].iloc[0],
                         "test_best_uar": tops["uar"].iloc[0], "hit": hit})
    return pd.DataFrame(rows, columns=["where", "stack", "method", "fold", "chosen", "uar", "test_best",
                                       "test_best_uar", "hit"])

