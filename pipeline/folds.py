"""Cross-validation plans from a cache's fold column (no torch: the probe and grid use it too)."""

from __future__ import annotations

import numpy as np

from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError


def fold_plan(reader: CacheReader) -> list[tuple[str, list[int], list[int], list[int]]]:
    """(test fold, train indices, validation indices, test indices) for each fold."""
    folds = np.array([str(f) for f in reader.table["fold"]])
    protocol = reader.attrs["corpus"]["protocol"]
    if protocol == "split":
        idx = {name: np.flatnonzero(folds == name).tolist() for name in ("train", "dev", "test")}
        if not idx["train"] or not idx["test"]:
            raise NserError("a split-protocol cache needs 'train' and 'test' utterances")
        return [("test", idx["train"], idx["dev"] or idx["train"][-len(idx["train"]) // 10:], idx["test"])]
    names = sorted(set(folds), key=lambda s: (len(s), s))
    if len(names) < 3:
        raise NserError(f"cross-validation needs at least 3 folds (test, validation, train); cache has {names}")
    plan = []
    for k, test in enumerate(names):
        val = names[(k + 1) % len(names)]
        train = [i for i, f in enumerate(folds) if f not in (test, val)]
        plan.append((test, train, np.flatnonzero(folds == val).tolist(), np.flatnonzero(folds == test).tolist()))
    return plan
