"""`nser-report --compare A B`: is method A's UAR different from method B's, pairing their scores
on the same condition and test fold (paired t-test and Wilcoxon signed-rank, scipy). Seeds that
both scored on a fold are averaged into that fold's pair first: seeds share the fold's speakers,
so counting them as pairs of their own would shrink p without new evidence."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from pipeline.report.aggregate import ReportError, done, fold_scores_once, json_value


@dataclass(frozen=True)
class Comparison:
    method_a: str
    method_b: str
    metric: str
    pairs: pd.DataFrame  # where, fold, seeds (how many were averaged), a, b
    unpaired: pd.DataFrame  # method, where, seed, fold: a score of one method the other lacks
    mean_diff: float  # mean of a - b
    t_p: float  # paired t-test, two-sided
    wilcoxon_p: float  # Wilcoxon signed-rank, two-sided; nan when every difference is 0

    @property
    def n(self) -> int:
        return len(self.pairs)

    def describe(self) -> str:
        where = ", ".join(dict.fromkeys(self.pairs["where"]))
        seeds = sorted(set(self.pairs["seeds"]))
        seeds_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        return (f"{self.method_a} vs {self.method_b} ({self.metric}, paired on condition x test fold)\n"
                f"  n = {self.n} pairs ({seeds_text} seed(s) averaged per pair; {where})\n"
                f"  mean difference (A - B) = {100 * self.mean_diff:+.2f} points\n"
                f"  paired t-test p = {_p(self.t_p)}\n"
                f"  Wilcoxon signed-rank p = {_p(self.wilcoxon_p)}\n"
                f"  {self._signs()}\n"
                "  A - B per pair (points): " + "; ".join(
                    f"{r.where} fold {r.fold} {100 * (r.a - r.b):+.1f}" for r in self.pairs.itertuples())
                + "".join(f"\n  left out, no {other} score to pair: {_scores(rows)}"
                          for other, rows in self._unpaired_by_missing()))

    def _signs(self) -> str:
        diff = self.pairs["a"] - self.pairs["b"]
        return (f"A ahead on {int((diff > 0).sum())} of {self.n} pairs, behind on {int((diff < 0).sum())}, "
                f"level on {int((diff == 0).sum())}")

    def _unpaired_by_missing(self) -> list[tuple[str, pd.DataFrame]]:
        """Why: a pooled table with one method run on more folds pairs fewer scores than either
        method has; saying which were left out keeps n from reading as "all of them"."""
        out = []
        for method, other in ((self.method_a, self.method_b), (self.method_b, self.method_a)):
            rows = self.unpaired[self.unpaired["method"] == method]
            if len(rows):
                out.append((other, rows))
        return out


def _p(value: float, short: bool = False) -> str:
    if math.isnan(value):
        return "n/a" if short else "n/a (the differences do not vary)"
    return f"{value:.2g}" if short else f"{value:.4g}"


def _scores(rows: pd.DataFrame) -> str:
    return f"{len(rows)} of {rows['method'].iloc[0]}'s (" + "; ".join(
        f"{r.where} fold {r.fold} seed {r.seed}" for r in rows.itertuples()) + ")"


def _rows_of(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """The done runs of a method, named as the fusion table's method column, or as "STACK METHOD"
    when the method runs on several stacks."""
    label = df["stack"] + " " + df["method"]
    hit = df[label == name]
    if hit.empty:
        hit = df[df["method"] == name]
        if hit["stack"].nunique() > 1:
            raise ReportError(f"method {name!r} runs on stacks {sorted(hit['stack'].unique())}: name one, "
                              f"e.g. {hit['stack'].iloc[0] + ' ' + name!r}")
    if hit.empty:
        known = sorted(set(df["method"]))
        raise ReportError(f"no finished runs of method {name!r}; the table has {known}")
    return hit


def fold_scores(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (where, seed, fold) of `runs`, from their per-fold scores, each once
    (`fold_scores_once`)."""
    rows = []
    for where, group in runs.groupby("where", sort=False):
        for _, run in group.iterrows():
            if not isinstance(json_value(run[f"fold_{metric}"]), dict):
                raise ReportError(f"run {run['run_key']} has no per-fold {metric} (fold_{metric}); a comparison "
                                  "pairs folds")
        what = f"{group['method'].iloc[0]} on {where}"
        why = "runs of other settings, e.g. epochs: compare results tables of one setting each"
        rows += [{"where": where, "seed": int(seed), "fold": fold, "score": v}
                 for (seed, fold), v in fold_scores_once(group, metric, what, why).items()]
    return pd.DataFrame(rows, columns=["where", "seed", "fold", "score"])


def compare_methods(df: pd.DataFrame, method_a: str, method_b: str, metric: str = "uar") -> Comparison:
    runs = done(df)
    a = fold_scores(_rows_of(runs, method_a), metric)
    b = fold_scores(_rows_of(runs, method_b), metric)
    keys = ["where", "seed", "fold"]
    both = a.merge(b, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True, sort=False)
    unpaired = pd.concat([both[both["_merge"] == side][keys].assign(method=name)
                          for side, name in (("left_only", method_a), ("right_only", method_b))])
    pairs = both[both["_merge"] == "both"].drop(columns="_merge").rename(columns={"score_a": "a", "score_b": "b"})
    pairs = pairs.groupby(["where", "fold"], sort=False).agg(seeds=("seed", "nunique"), a=("a", "mean"),
                                                              b=("b", "mean")).reset_index()
    if len(pairs) < 2:
        raise ReportError(f"{method_a} and {method_b} share {len(pairs)} (condition, test fold) score(s) of a "
                          "seed both ran; a paired test needs at least 2 (run both on the same caches, seeds and "
                          "folds)")
    diff = pairs["a"] - pairs["b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-equal differences: p is nan, said as such
        t_p = float(stats.ttest_rel(pairs["a"], pairs["b"]).pvalue)
    wilcoxon_p = float(stats.wilcoxon(diff).pvalue) if (diff != 0).any() else math.nan
    return Comparison(method_a, method_b, metric, pairs, unpaired[["method", *keys]].reset_index(drop=True),
                      float(diff.mean()), t_p, wilcoxon_p)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values tested together (family-wise error): the k-th
    smallest is multiplied by (m - k + 1), kept at least the one before it, and capped at 1; NaN
    stays NaN and does not count in m."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    out = [math.nan] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - k) * p))
        out[i] = running
    return out


def summary_table(comparisons: list[Comparison]) -> str:
    """Several comparisons as one Markdown table, with the t-test's p adjusted for having tested
    them together (Holm): one of seven comparisons below 0.05 is not the evidence that one alone is."""
    adjusted = holm([c.t_p for c in comparisons])
    rows = ["| A | B | pairs | A - B (points) | A ahead on | t-test p | Wilcoxon p | t-test p, Holm |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c, adj in zip(comparisons, adjusted):
        ahead = int(((c.pairs["a"] - c.pairs["b"]) > 0).sum())
        rows.append(f"| {c.method_a} | {c.method_b} | {c.n} | {100 * c.mean_diff:+.1f} | {ahead} of {c.n} | "
                    f"{_p(c.t_p, short=True)} | {_p(c.wilcoxon_p, short=True)} | {_p(adj, short=True)} |")
    return "\n".join(rows)
