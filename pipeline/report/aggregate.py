"""Results table -> the numbers behind each report section (no plotting, no Markdown here).

Scores of a group of runs (several seeds, or one run per fold) are pooled over every (run, fold)
score the group has, and reported as mean ± std (population std, as the trainer's own `uar_std`).
For a group of one run this is exactly that run's `uar ± uar_std`. A group of two or more seeds
also gets the spread across seeds (`across_seeds`): each seed's fold-pooled score first, then
their mean ± sample std.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import NserError
from pipeline.train.fusion_specs import FUSION_SPECS, layer_sweep_fusions
from pipeline.train.run_metrics import RunMetrics

METRICS = {"uar": "UAR", "macro_f1": "F1"}
STACK_ORDER = {"enc": 0, "dec": 1, "enc+dec": 2}
# A layer sweep's summary rows in the fusion comparison, in their order before the fusions' own rows.
SWEEP_ROWS = (", last", ", best†")
# Whole-stack selections as the grid labels them (pipeline.layers.stack_label), shown by fusion name
# alone; "dec:all,enc:all" as older or hand-made tables may spell it.
WHOLE_STACKS = {"enc:all", "dec:all", "enc:all,dec:all", "dec:all,enc:all", "enc:blocks", "dec:blocks",
                "enc:blocks,dec:blocks", "enc:blocks,dec:all", "enc:all,dec:blocks"}
_SINGLE = re.compile(r"^(enc|dec):(\d+)$")


class ReportError(NserError):
    """The results cannot be read or lack the columns a report needs."""


# --- loading ------------------------------------------------------------------------------------

def load_results(source: str | Path) -> tuple[pd.DataFrame, Path]:
    """A results table from a grid folder (results.parquet, else results.csv) or a .csv/.parquet
    file; returns it with the folder that holds it (run dirs are looked up relative to it)."""
    source = Path(source)
    if source.is_dir():
        for name in ("results.parquet", "results.csv"):
            if (source / name).is_file():
                return load_results(source / name)
        raise ReportError(f"{source} has neither results.parquet nor results.csv (run nser-grid first)")
    if not source.is_file():
        raise ReportError(f"no results at {source}")
    try:
        df = pd.read_parquet(source) if source.suffix == ".parquet" else pd.read_csv(source)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user problem
        raise ReportError(f"cannot read {source}: {exc}") from exc
    return normalize(df), source.parent


def _stack_of(layers: str) -> str:
    has = [s for s in ("enc", "dec") if s in str(layers)]
    return "+".join(has) or "?"


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Fill the columns a hand-made or older table may lack, and derive `where` (the column label
    of a condition) and `method` (the row label of a fusion + layer selection)."""
    need = {"condition", "fusion", "layers", "uar", "macro_f1"}
    missing = need - set(df.columns)
    if missing:
        raise ReportError(f"results lack column(s) {sorted(missing)}")
    df = df.copy()
    defaults: dict[str, Any] = {"status": "done", "corpus": "", "model": "", "noise_type": None, "snr_db": np.nan,
                                "uar_std": np.nan, "macro_f1_std": np.nan, "fold_uar": None, "fold_macro_f1": None,
                                "confusion": None, "classes": None, "run_dir": None, "run_key": None,
                                "error": None, "seed": 0, "validation": None}
    for col, value in defaults.items():
        if col not in df.columns:
            df[col] = value
    if "stack" not in df.columns:
        df["stack"] = df["layers"].map(_stack_of)
    if "selection" not in df.columns:
        df["selection"] = df["layers"]
    for col in ("uar", "macro_f1", "uar_std", "macro_f1_std", "snr_db"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("corpus", "model", "condition", "fusion", "layers", "stack", "selection"):
        df[col] = df[col].fillna("").astype(str)
    where = df["condition"]
    for col in reversed([c for c in ("corpus", "model") if df[c].nunique() > 1]):
        where = df[col] + " · " + where
    df["where"] = where
    df["method"] = df["fusion"].where(df["layers"].isin(WHOLE_STACKS), df["fusion"] + " [" + df["layers"] + "]")
    # runs of other validation protocols are other methods: never pooled together
    df["validation"] = df["validation"].fillna("").astype(str)
    if df["validation"].nunique() > 1:
        df["method"] = df["method"] + df["validation"].map(lambda v: f" ({v or 'validation unrecorded'})")
    return df


def done(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "done"]


# --- pooled statistics --------------------------------------------------------------------------

@dataclass(frozen=True)
class Score:
    mean: float
    std: float
    n: int  # pooled values (runs x folds)

    def fmt(self, digits: int = 2) -> str:
        if math.isnan(self.mean):
            return "n/a"
        std = "" if math.isnan(self.std) else f" ± {100 * self.std:.{digits}f}"
        return f"{100 * self.mean:.{digits}f}{std}"


def pooled(group: pd.DataFrame, metric: str) -> Score:
    """mean ± std over the (run, fold) scores of `group`; runs without per-fold scores count once
    with their mean (and, alone, keep their own std)."""
    values: list[float] = []
    for mean, folds in zip(group[metric], group[f"fold_{metric}"]):
        parsed = json_value(folds)
        if isinstance(parsed, dict) and parsed:
            values += [float(v) for v in parsed.values()]
        elif not pd.isna(mean):
            values.append(float(mean))
    if not values:
        return Score(float("nan"), float("nan"), 0)
    if len(group) == 1 and not isinstance(json_value(group[f"fold_{metric}"].iloc[0]), dict):
        return Score(values[0], float(group[f"{metric}_std"].iloc[0]), 1)
    return Score(float(np.mean(values)), float(np.std(values)), len(values))


def across_seeds(group: pd.DataFrame, metric: str) -> Score | None:
    """mean ± sample std (n-1) over the seeds of `group`, each seed's runs pooled over their folds
    first (`pooled`); None for fewer than two seeds."""
    per_seed = [pooled(g, metric).mean for _, g in group.groupby("seed", sort=True)]
    per_seed = [v for v in per_seed if not math.isnan(v)]
    if len(per_seed) < 2:
        return None
    return Score(float(np.mean(per_seed)), float(np.std(per_seed, ddof=1)), len(per_seed))


def json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def single_layer(selection: str) -> tuple[str, int] | None:
    """("enc", 3) for a one-layer selection "enc:3", else None."""
    m = _SINGLE.match(selection.strip())
    return (m.group(1), int(m.group(2))) if m else None


# --- section data -------------------------------------------------------------------------------

def layerwise(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """where -> rows (stack, layer, uar, uar_std, macro_f1, macro_f1_std, n) of the layer sweep's
    runs (fusions trained on the one layer selected, `single`)."""
    runs = done(df)
    runs = runs[runs["fusion"].isin(layer_sweep_fusions())]
    out: dict[str, pd.DataFrame] = {}
    for where, group in runs.groupby("where", sort=False):
        rows = []
        parsed = group["selection"].map(single_layer)
        group = group[parsed.notna()].assign(_stack=parsed.dropna().map(lambda p: p[0]),
                                              _layer=parsed.dropna().map(lambda p: p[1]))
        for (stack, layer), g in group.groupby(["_stack", "_layer"], sort=True):
            u, f = pooled(g, "uar"), pooled(g, "macro_f1")
            rows.append({"stack": stack, "layer": layer, "uar": u.mean, "uar_std": u.std, "macro_f1": f.mean,
                         "macro_f1_std": f.std, "n": u.n})
        if rows:
            out[str(where)] = pd.DataFrame(rows).sort_values(["stack", "layer"], key=_stack_key).reset_index(drop=True)
    return out


def _stack_key(col: pd.Series) -> pd.Series:
    return col.map(STACK_ORDER) if col.name == "stack" else col


@dataclass(frozen=True)
class Cell:
    uar: Score
    f1: Score
    note: str = ""  # e.g. the layer a "single (best)" cell stands for
    seeds_uar: Score | None = None  # across seeds (n: seeds), for a group of two or more seeds
    seeds_f1: Score | None = None


def method_cells(df: pd.DataFrame) -> tuple[list[tuple[str, str]], dict[tuple[str, str], dict[str, Cell]]]:
    """Rows of the fusion comparison: (stack, method) -> where -> Cell.

    Runs of other fusions than the layer sweep's (`single`) group by (stack, method). The sweep's
    runs are summarized per stack as the deepest layer run ("single, last") and the layer with the
    best test UAR ("single, best†": an oracle choice; the `best` fusion chooses on validation instead)."""
    runs = done(df)
    sweeps = layer_sweep_fusions()
    cells: dict[tuple[str, str], dict[str, Cell]] = {}
    others = runs[~runs["fusion"].isin(sweeps)]
    for (stack, method, where), g in others.groupby(["stack", "method", "where"], sort=False):
        cells.setdefault((stack, method), {})[where] = Cell(pooled(g, "uar"), pooled(g, "macro_f1"),
                                                            seeds_uar=across_seeds(g, "uar"),
                                                            seeds_f1=across_seeds(g, "macro_f1"))
    for fusion in sweeps:
        for where, curves in layerwise(df[df["fusion"] == fusion]).items():
            for stack, g in curves.groupby("stack", sort=False):
                last = g.loc[g["layer"].idxmax()]
                best = g.loc[g["uar"].idxmax()]
                for suffix, row in zip(SWEEP_ROWS, (last, best)):
                    cells.setdefault((stack, fusion + suffix), {})[where] = Cell(
                        Score(row["uar"], row["uar_std"], int(row["n"])),
                        Score(row["macro_f1"], row["macro_f1_std"], int(row["n"])),
                        note=f"{stack}{int(row['layer'])}")
    order = sorted(cells, key=lambda k: (STACK_ORDER.get(k[0], 9), _method_rank(k[1]), k[1]))
    return order, cells


def _method_rank(method: str) -> tuple[int, int]:
    """(the fusion's place in the registry, which is the report's order; then a sweep's summary
    rows before the fusion's own)."""
    order = list(FUSION_SPECS)

    def place(fusion: str) -> int:
        return order.index(fusion) if fusion in order else len(order)

    for rank, suffix in enumerate(SWEEP_ROWS):
        if method.endswith(suffix):
            return place(method.removesuffix(suffix)), rank
    return place(method.split(" ")[0]), len(SWEEP_ROWS)


def snr_groups(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """"corpus · model · noise" -> the done runs at its SNRs (plus the clean runs of the same
    corpus and model, as a reference row), for each noise type run at two or more SNRs."""
    runs = done(df)
    out: dict[str, pd.DataFrame] = {}
    noisy = runs[runs["noise_type"].notna() & runs["snr_db"].notna() & (runs["noise_type"].astype(str) != "")]
    parts = [c for c in ("corpus", "model") if df[c].nunique() > 1]
    for (corpus, model, noise), g in noisy.groupby(["corpus", "model", "noise_type"], sort=True):
        if g["snr_db"].nunique() < 2:
            continue
        clean = runs[(runs["corpus"] == corpus) & (runs["model"] == model) & runs["snr_db"].isna()
                     & (runs["condition"] == "clean")]
        label = " · ".join([{"corpus": corpus, "model": model}[c] for c in parts] + [str(noise)])
        out[label] = pd.concat([g, clean])
    return out


def best_runs(df: pd.DataFrame) -> dict[str, pd.Series]:
    """where -> the done run with the highest UAR that has a confusion matrix."""
    runs = done(df)
    runs = runs[runs["confusion"].map(lambda v: isinstance(json_value(v), list))]
    return {str(w): g.loc[g["uar"].idxmax()] for w, g in runs.groupby("where", sort=False) if g["uar"].notna().any()}


def class_names(run: pd.Series, base: Path | None, n: int) -> list[str]:
    """The run's class names: the table's `classes`, else its metrics.json, else c0..c{n-1}."""
    names = json_value(run.get("classes"))
    if not (isinstance(names, list) and len(names) == n):
        candidates = [Path(str(run["run_dir"]))] if _json_str(run.get("run_dir")) else []
        if base is not None and _json_str(run.get("run_key")):
            candidates.append(base / "runs" / str(run["run_key"]))  # the grid layout, from anywhere
        for candidate in candidates:
            try:
                names = RunMetrics.read(candidate / "metrics.json").classes
                break
            except (OSError, ValueError):
                continue
    if isinstance(names, list) and len(names) == n:
        return [str(c) for c in names]
    return [f"c{i}" for i in range(n)]


def _json_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def confusion(run: pd.Series) -> np.ndarray:
    return np.array(json_value(run["confusion"]), dtype=float)
