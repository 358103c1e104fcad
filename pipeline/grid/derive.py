"""Results of a derived run (RunSpec.sources): a `best` or `last` run whose candidates the grid
trains anyway as one-layer runs with the same settings. Each candidate's model is exactly such a
run's (tests/grid/test_derived.py), so the derived run's metrics are those runs' metrics combined
as training would combine them: the layer choice per test fold from their validation UARs, the
test scores of each fold's chosen one. No torch: this runs on the grid's client."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipeline.train.fusion_specs import FusionSpec
from pipeline.train.run_metrics import RunMetrics, choose_on_validation


@dataclass(frozen=True)
class Derived:
    metrics: RunMetrics
    chosen: str  # key of the source run whose test scores these are (the first fold's, if folds chose apart)


def derived_metrics(fusion: FusionSpec, sources: dict[str, RunMetrics]) -> Derived:
    """The metrics.json training `fusion` would write, from its candidates' one-layer runs (run key
    -> metrics, in candidate order): each test fold's scores from the source its validation part
    chose (choose_on_validation), pooled as training pools them. `seconds` is the sources' training
    time together, and `data` the chosen source's, with the run keys it came from: what the scores
    cost and how they were read."""
    by_layer = {_only_layer(metrics): (key, metrics) for key, metrics in sources.items()}
    choice = (choose_on_validation({name: {fold: m.val_uar for fold, m in metrics.folds.items()}
                                    for name, (_, metrics) in by_layer.items()})
              if fusion.chosen_on_validation else None)
    first = next(iter(by_layer))
    per_fold = choice.best_layer_folds if choice else {f: first for f in by_layer[first][1].folds}
    key, chosen = by_layer[next(iter(per_fold.values()))]
    scores = {}
    if len(set(per_fold.values())) > 1:  # else the chosen source's own pooled scores are these
        from pipeline.train.metrics import summarize_folds  # scikit-learn: only where needed

        folds = {f: by_layer[name][1].folds[f] for f, name in per_fold.items()}
        scores = {"folds": folds, **summarize_folds({f: m.to_dict() for f, m in folds.items()})}
    return Derived(chosen=key, metrics=replace(
        chosen, fusion=fusion.name, layers=list(by_layer), layer_choice=choice, **scores,
        seconds=sum(m.seconds for m in sources.values()),
        data={**chosen.data, "derived_from": {name: k for name, (k, _) in by_layer.items()}}))


def _only_layer(metrics: RunMetrics) -> str:
    if len(metrics.layers) != 1:
        raise ValueError(f"a derived run's source trained on {len(metrics.layers)} layers ({metrics.layers}), "
                         "not one")
    return metrics.layers[0]
