"""Cross-validation plans from a cache's fold column (no torch: the probe and grid use it too)."""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator

import numpy as np

from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError


class ClassCoverageWarning(UserWarning):
    """A fold part lacks some classes: the run goes on, its UAR averages over the classes present."""


@contextlib.contextmanager
def echo_coverage_warnings(echo: Callable[[str], None]) -> Iterator[None]:
    """For the CLIs: ClassCoverageWarning as one plain line when it happens (`echo`); other warnings
    are shown as usual."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def show_plainly(message, category, *args, **kwargs):
            if issubclass(category, ClassCoverageWarning):
                echo(f"warning: {message}")
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = show_plainly
        yield


def fold_plan(reader: CacheReader) -> list[tuple[str, list[int], list[int], list[int]]]:
    """(test fold, train indices, validation indices, test indices) for each fold."""
    folds = np.array([str(f) for f in reader.table["fold"]])
    protocol = reader.meta.corpus.protocol
    if protocol == "split":
        idx = {name: np.flatnonzero(folds == name).tolist() for name in ("train", "dev", "test")}
        if not idx["train"] or not idx["test"]:
            raise NserError("a split-protocol cache needs 'train' and 'test' utterances")
        return [("test", idx["train"], idx["dev"] or idx["train"][-len(idx["train"]) // 10:], idx["test"])]
    # str, not numpy.str_: fold names end up in checkpoints, which hold plain types only
    names = sorted({str(f) for f in folds}, key=lambda s: (len(s), s))
    if len(names) < 3:
        raise NserError(f"cross-validation needs at least 3 folds (test, validation, train); cache has {names}")
    plan = []
    for k, test in enumerate(names):
        val = names[(k + 1) % len(names)]
        train = [i for i, f in enumerate(folds) if f not in (test, val)]
        plan.append((test, train, np.flatnonzero(folds == val).tolist(), np.flatnonzero(folds == test).tolist()))
    return plan


def select_folds(plan: list[tuple[str, list[int], list[int], list[int]]], folds: str) -> list:
    """The plan's entries for `--folds` ("all" or comma-separated test folds, in plan order). A name
    that is not a test fold is refused: silently skipping it would report fewer folds than asked."""
    if folds == "all":
        return plan
    wanted = [f.strip() for f in folds.split(",") if f.strip()]
    known = [p[0] for p in plan]
    unknown = [f for f in wanted if f not in known]
    if unknown or not wanted:
        raise NserError(f"--folds {folds!r}: {f'unknown fold(s) {unknown}' if unknown else 'no fold named'}; "
                        f"the cache's test folds are {known}")
    return [p for p in plan if p[0] in wanted]


def check_class_coverage(reader: CacheReader, plan: list, *, fit_on_validation: bool = False) -> list[str]:
    """Refuse a plan whose fit part (training, plus validation with `fit_on_validation`) holds fewer
    than two classes: a one-class model predicts that class everywhere, and on a test fold of that
    class scores UAR 1.000. Return a warning per part that lacks some of the cache's classes (the
    run is still valid: UAR then averages over the classes the test fold has); also issued as
    ClassCoverageWarning."""
    labels = np.array([str(v) for v in reader.table["label"]], dtype=object)
    classes = reader.classes
    notes: list[str] = []
    for test_fold, train_idx, val_idx, test_idx in plan:
        fit = list(train_idx) + list(val_idx) if fit_on_validation else list(train_idx)
        fit_name = "training+validation part" if fit_on_validation else "training part"
        present = [c for c in classes if c in set(labels[fit])]
        if len(present) < 2:
            raise NserError(f"test fold {test_fold}: the {fit_name} holds only class(es) {present} of {classes}, "
                            "so any UAR would be meaningless; check the corpus labels and class map (or what "
                            "--allow-missing left out)")
        parts = [(fit_name, fit), ("test fold", list(test_idx))]
        if not fit_on_validation:
            parts.insert(1, ("validation part", list(val_idx)))
        for name, idx in parts:
            missing = [c for c in classes if c not in set(labels[idx])]
            if missing:
                notes.append(f"test fold {test_fold}: the {name} has no utterance of class(es) {missing}")
    for note in notes:
        warnings.warn(note, ClassCoverageWarning, stacklevel=3)
    return notes
