"""UAR (balanced accuracy), macro-F1 and the confusion matrix, from scikit-learn."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> dict:
    labels = list(range(n_classes))
    return {
        "uar": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": int(len(y_true)),
    }


def summarize_folds(per_fold: dict[str, dict]) -> dict:
    out = {}
    for key in ("uar", "macro_f1"):
        vals = np.array([m[key] for m in per_fold.values()])
        out[key], out[f"{key}_std"] = float(vals.mean()), float(vals.std())
    out["confusion"] = np.sum([np.array(m["confusion"]) for m in per_fold.values()], axis=0).tolist()
    return out
