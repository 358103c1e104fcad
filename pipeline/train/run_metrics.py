"""metrics.json, a training run's scores, as a typed record: written by the trainer, read by the
grid's results table and the report (no torch)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


NOT_EXTRACTED = "not extracted"  # the left_out entry of an unfinished cache's missing utterances


@dataclass
class FoldMetrics:
    """One test fold: its scores, and the epoch whose validation UAR picked the model scored."""

    uar: float
    macro_f1: float
    confusion: list[list[int]]
    n: int  # test utterances
    best_epoch: int
    val_uar: float | None  # None: no validation part (--validation none), the last epoch is scored
    n_train: int
    n_val: int
    layer_weights: dict[str, float] | None = None  # layer -> weight, for fusions with static learned weights

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.layer_weights is None:
            del out["layer_weights"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldMetrics:
        return cls(**data)


@dataclass
class LayerChoice:
    """How a fusion chosen on validation picked its layer: each candidate's validation UAR, mean
    and per fold (at each fold's best epoch), and the layer each test fold chose on its own
    validation part (best_layer_folds; None in runs from before the choice was per fold, which
    chose one layer by the mean). `best_layer`: that layer where the folds agree (always for one
    fold), else each fold's choice as "fold:layer, ...". """

    best_layer: str
    layer_val_uar: dict[str, float]
    layer_val_uar_folds: dict[str, dict[str, float]]
    best_layer_folds: dict[str, str] | None = None


def choose_on_validation(val_uar_folds: dict[str, dict[str, float]]) -> LayerChoice:
    """For each test fold, the candidate (layer -> fold -> best-epoch validation UAR, in candidate
    order) with the best validation UAR on that fold's own validation part; ties go to the earlier
    candidate. The trainer and the grid's derived runs both choose here, so a derived `best` picks
    what training it would have picked.

    Per fold, not by the mean over folds: a fold's validation part is made of other folds' test
    utterances (next-fold: the next test fold; speaker-carve: speakers of the other folds), so a
    layer chosen by the mean is chosen partly on the labels of the very test folds it is then
    scored on. Chosen per fold, the layer scored on fold f was picked without any of f's test
    labels, as in a run of that fold alone (a per-fold grid), which this choice equals."""
    folds = list(next(iter(val_uar_folds.values())))
    per_fold = {f: max(val_uar_folds, key=lambda name: val_uar_folds[name][f]) for f in folds}
    means = {name: float(np.mean(list(v.values()))) for name, v in val_uar_folds.items()}
    chosen = set(per_fold.values())
    best = chosen.pop() if len(chosen) == 1 else ", ".join(f"{f}:{name}" for f, name in per_fold.items())
    return LayerChoice(best_layer=best, layer_val_uar=means, layer_val_uar_folds=val_uar_folds,
                       best_layer_folds=per_fold)


@dataclass
class RunMetrics:
    """Pooled scores (mean and population std over the test folds, summed confusion), the folds'
    own, and what the run was."""

    uar: float
    uar_std: float
    macro_f1: float
    macro_f1_std: float
    confusion: list[list[int]]
    folds: dict[str, FoldMetrics]
    classes: list[str]
    layers: list[str]  # every layer the run trained on (all candidates, for a fusion chosen on validation)
    fusion: str
    epochs: int
    seed: int
    cache_identity: str
    seconds: float
    # fold -> manifest entries not in these numbers (failed extraction); NOT_EXTRACTED -> those an
    # unfinished extraction never reached (their folds are not known)
    left_out: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # the data's (a fold part missing classes)
    data: dict[str, Any] = field(default_factory=dict)  # how the states were read (memory, stream, ...)
    layer_choice: LayerChoice | None = None
    # the validation protocol, resolved (pipeline/folds.py); None in runs from before it was
    # recorded, which used next-fold on cv caches and dev on split caches
    validation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON's key order: scores first, the layer choice (if any) right after `fusion`."""
        return {"uar": self.uar, "uar_std": self.uar_std, "macro_f1": self.macro_f1,
                "macro_f1_std": self.macro_f1_std, "confusion": self.confusion,
                "folds": {name: fold.to_dict() for name, fold in self.folds.items()},
                "classes": self.classes, "layers": self.layers, "fusion": self.fusion,
                # older files' choice (one layer by the mean) has no best_layer_folds: none written
                **({k: v for k, v in asdict(self.layer_choice).items() if v is not None} if self.layer_choice else {}),
                "epochs": self.epochs, "seed": self.seed,
                **({"validation": self.validation} if self.validation else {}),  # older files: absent
                "cache_identity": self.cache_identity,
                "seconds": self.seconds, "left_out": self.left_out, "warnings": self.warnings, "data": self.data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunMetrics:
        """left_out, warnings and data came later than the rest: files of older runs lack them.
        A mapping that is no metrics record (keys missing or unknown) is a ValueError, as is a
        file that is no JSON."""
        try:
            data = dict(data)
            folds = {name: FoldMetrics.from_dict(fold) for name, fold in data.pop("folds").items()}
            choice_keys = [f for f in LayerChoice.__dataclass_fields__ if f in data]
            choice = LayerChoice(**{k: data.pop(k) for k in choice_keys}) if choice_keys else None
            return cls(folds=folds, layer_choice=choice, **data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a metrics record: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def read(cls, path: str | Path) -> RunMetrics:
        return cls.from_dict(json.loads(Path(path).read_text()))
