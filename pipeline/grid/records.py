"""Run records: a finished run's outputs apart from its run dir, for `nser-grid --records DIR`.

A run dir lives where the run trained: a scratch disk, a cluster job's folder, a checkout that goes
away, and most of its bytes are checkpoints. Its record is the four small files a results row and a
derived run read (run.json, config.json, metrics.json, done.json; a few kB), kept in
`DIR/<run key>/`. Records are small enough to commit beside a report, so a grid finished in parts,
in sessions or on machines whose run folders do not last, resumes from them without training a
finished run again, and its results table is rebuilt from them.

A record is taken only for the very run it describes: its files must name the run's key (run.json,
done.json), cache identity (run.json, metrics.json; and unfinished-cache part), result settings
(run.json, config.json), fusion and seed (metrics.json), and metrics.json must have the layers of
config.json and the scores of done.json, else RecordMismatch; a record with a file
missing or unreadable is refused the same way. Records are written once: a record already in DIR is
kept, and one whose scores disagree with the run dir here is reported, not overwritten. A derived
run's record is not taken (pipeline/grid/runner.py): derived again from the sources the grid has, it
can never disagree with them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.errors import NserError
from pipeline.safe_files import atomic_write, staged
from pipeline.train.config import result_settings
from pipeline.train.run_metrics import RunMetrics

RUN_INFO, CONFIG, METRICS, DONE = "run.json", "config.json", "metrics.json", "done.json"
RECORD_FILES = (RUN_INFO, CONFIG, METRICS, DONE)  # done.json last: a record without it is unfinished


class RecordMismatch(NserError):
    """A record in the records folder is not the record of the run with its key, or is incomplete."""


def record_dir(records: str | Path, key: str) -> Path:
    return Path(records) / key


def has_record(records: str | Path, key: str) -> bool:
    return (record_dir(records, key) / DONE).is_file()


def check_record(run: Any, records: str | Path) -> dict[str, str]:
    """The record of `run` (a RunSpec) in `records`, file name -> text, after checking that it is
    complete and describes this run. Raises RecordMismatch otherwise."""
    where = record_dir(records, run.key)
    texts: dict[str, str] = {}
    for name in RECORD_FILES:
        try:
            texts[name] = (where / name).read_text()
        except OSError as exc:
            raise RecordMismatch(f"record {where} is incomplete: {name} cannot be read ({exc})") from None
    settings = result_settings(asdict(run.config))
    try:
        info, config, done = (json.loads(texts[name]) for name in (RUN_INFO, CONFIG, DONE))
        metrics = RunMetrics.from_dict(json.loads(texts[METRICS]))
        # what -> (the record's value, the value it must have): every file names this run (key, stored
        # states, settings), and metrics.json has the layers config.json names, the scores done.json names
        checks = {"key": (info["key"], run.key), "done.json key": (done["key"], run.key),
                  "cache_identity": (info["cache_identity"], run.cache_identity),
                  "metrics.json cache_identity": (metrics.cache_identity, run.cache_identity),
                  "partial": (info.get("partial"), run.partial),
                  "result settings": (result_settings(info["config"]), settings),
                  "config.json result settings": (result_settings(config["config"]), settings),
                  "metrics.json fusion and seed": ((metrics.fusion, metrics.seed), (run.config.fusion, run.config.seed)),
                  "metrics.json layers": (metrics.layers, config.get("layers")),
                  "metrics.json scores": ((metrics.uar, metrics.macro_f1), (done.get("uar"), done.get("macro_f1")))}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RecordMismatch(f"record {where} is unreadable: {type(exc).__name__}: {exc}") from None
    differ = {k: v for k, v in checks.items() if v[0] != v[1]}
    if differ:
        detail = "; ".join(f"{k}: record {found!r}, run {wanted!r}" for k, (found, wanted) in differ.items())
        raise RecordMismatch(f"record {where} is not the record of run {run.describe()}: {detail}")
    return texts


def take_record(run: Any, records: str | Path) -> None:
    """Copy `run`'s record (has_record) from `records` into its unfinished run dir, after
    check_record, done.json last; the caller holds the run dir's lock."""
    texts = check_record(run, records)
    for name in RECORD_FILES:
        atomic_write(Path(run.run_dir) / name, texts[name])


def keep_record(run: Any, records: str | Path) -> str | None:
    """Write the finished `run`'s record into `records`, unless one is there: built in a temp folder
    and renamed into place, so a reader (or a second grid keeping the same run) never sees half of
    one. Returns a warning when the record there has other scores than this run dir's (trained
    twice, e.g. on two machines) or cannot be read, else None."""
    src = Path(run.run_dir)
    dst = record_dir(records, run.key)
    if has_record(records, run.key):
        try:
            same = _scores(dst / METRICS) == _scores(src / METRICS)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            return f"the record of run {run.key} in {records} is unreadable ({exc}); it was left as it is"
        return None if same else (f"the record of run {run.key} in {records} has other scores than "
                                  f"{src}/metrics.json (trained twice, e.g. on two machines); the record was kept")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with staged(dst, folder=True) as tmp:
        for name in RECORD_FILES:
            atomic_write(tmp / name, (src / name).read_text())
        try:
            os.rename(tmp, dst)  # fails where another grid's record (or a broken one) got there first
        except OSError:
            if not has_record(records, run.key):
                return f"the record of run {run.key} could not be written: {dst} exists without done.json"
            return keep_record(run, records)
    return None


def _scores(path: Path) -> tuple:
    """What a run's result is, without its timing: pooled and per-fold scores, confusions."""
    m = RunMetrics.read(path)
    return (m.uar, m.macro_f1, m.confusion,
            {f: (fold.uar, fold.macro_f1, fold.confusion) for f, fold in m.folds.items()})
