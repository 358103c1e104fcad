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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import NserError
from pipeline.train.config import result_setting
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

def results_file(source: str | Path) -> tuple[Path, str]:
    """The results file of a grid folder (or `source` itself) and, when it matters, why that one:
    results.parquet, unless the results.csv beside it is newer (edited by hand: the grid writes the
    parquet first and gives it the CSV's mtime, pipeline.grid.runner.write_results) or alone."""
    source = Path(source)
    if not source.is_dir():
        if not source.is_file():
            raise ReportError(f"no results at {source}")
        return source, ""
    csv, parquet = source / "results.csv", source / "results.parquet"
    if parquet.is_file() and csv.is_file() and csv.stat().st_mtime_ns > parquet.stat().st_mtime_ns:
        return csv, "newer than the results.parquet beside it, which was not read"
    for path in (parquet, csv):
        if path.is_file():
            return path, ""
    raise ReportError(f"{source} has neither results.parquet nor results.csv (run nser-grid first)")


def load_results(*sources: str | Path) -> tuple[pd.DataFrame, Path]:
    """A results table from a grid folder (`results_file`) or a .csv/.parquet file; returns it with
    the folder that holds it (run dirs are looked up relative to it; with several, the first's).

    Several sources are pooled, e.g. the tables of a grid finished in parts on machines that kept
    only their own: a run (its key) in more than one is kept once, done where any table has it done,
    and refused when two tables hold it done with other scores (one run cannot have two results)."""
    if not sources:
        raise ReportError("no results to read")
    # each table's own defaults first (a hand-made table without `status` is all done), then pooled
    frames = [with_defaults(_read_results(s)) for s in sources]
    df = frames[0] if len(frames) == 1 else _pool_tables(frames, sources)
    return normalize(df), results_file(sources[0])[0].parent


def _read_results(source: str | Path) -> pd.DataFrame:
    source, _ = results_file(source)
    # keys and fold names as written: "03" or an all-digit hash must not become a number
    text = {c: str for c in ("run_key", "cache_identity", "settings_key", "folds", "partial")}
    try:
        return pd.read_parquet(source) if source.suffix == ".parquet" else pd.read_csv(source, dtype=text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user problem
        raise ReportError(f"cannot read {source}: {exc}") from exc


_RESULT_COLUMNS = ("uar", "macro_f1", "fold_uar", "fold_macro_f1", "confusion")
_STATUS_RANK = {"done": 0, "failed": 1, "pending": 2}  # which of a run's rows the pooled table keeps


def _pool_tables(frames: list[pd.DataFrame], sources: tuple) -> pd.DataFrame:
    """The tables' rows, each run once: its done row where a table has one, else a failed one (with
    its error), else its first row."""
    for frame, source in zip(frames, sources):
        if "run_key" not in frame.columns or frame["run_key"].isna().any():
            raise ReportError(f"{source}: pooling several results tables needs every row's run_key")
    df = pd.concat([f.assign(_source=str(s)) for f, s in zip(frames, sources)], ignore_index=True)
    done_rows = df[df["status"] == "done"]
    for key, rows in done_rows.groupby("run_key"):
        scores = rows[[c for c in _RESULT_COLUMNS if c in rows.columns]].astype(str).drop_duplicates()
        if len(scores) > 1:
            raise ReportError(f"run {key} is done with other scores in {' and '.join(rows['_source'])}: "
                              "one run cannot have two results (trained twice? pool one of them)")
    df["_rank"] = df["status"].map(_STATUS_RANK).fillna(len(_STATUS_RANK))
    df = df.sort_values("_rank", kind="stable").drop_duplicates("run_key")
    return df.sort_index().drop(columns=["_source", "_rank"]).reset_index(drop=True)


def _stack_of(layers: str) -> str:
    has = [s for s in ("enc", "dec") if s in str(layers)]
    return "+".join(has) or "?"


def with_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """The table with the columns a hand-made or older table may lack filled in (a table without
    `status` is all done); refused without the columns a report needs."""
    need = {"condition", "fusion", "layers", "uar", "macro_f1"}
    missing = need - set(df.columns)
    if missing:
        raise ReportError(f"results lack column(s) {sorted(missing)}")
    df = df.copy()
    defaults: dict[str, Any] = {"status": "done", "corpus": "", "model": "", "noise_type": None, "snr_db": np.nan,
                                "uar_std": np.nan, "macro_f1_std": np.nan, "fold_uar": None, "fold_macro_f1": None,
                                "confusion": None, "classes": None, "run_dir": None, "run_key": None,
                                "error": None, "seed": 0, "validation": None, "folds": "all", "cache_identity": "",
                                "settings_key": "", "settings": None, "partial": ""}
    for col, value in defaults.items():
        if col not in df.columns:
            df[col] = value
    if "stack" not in df.columns:
        df["stack"] = df["layers"].map(_stack_of)
    if "selection" not in df.columns:
        df["selection"] = df["layers"]
    return df


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Fill the columns a hand-made or older table may lack, and derive `where` (the column label
    of a condition), `base_method` (fusion + layer selection) and `method` (the row label: the base,
    plus what tells its runs apart from others of that fusion, `_variants`, plus the validation
    protocol when the finished runs used several)."""
    df = with_defaults(df)
    for col in ("uar", "macro_f1", "uar_std", "macro_f1_std", "snr_db"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("corpus", "model", "condition", "fusion", "layers", "stack", "selection", "cache_identity",
                "settings_key", "folds", "partial"):
        # as str first: an all-empty column is float64 (NaN), which pandas will not fill with ""
        df[col] = df[col].astype(object).fillna("").astype(str)
    where = df["condition"]
    for col in reversed([c for c in ("corpus", "model") if df[c].nunique() > 1]):
        where = df[col] + " · " + where
    # the stored data the runs read: another extraction of the condition, or an unfinished cache
    # (--allow-missing) and the finished one, are other data: never pooled into one cell or curve,
    # nor paired by --compare, so a condition with several is one column per data
    df["data"] = [", ".join(([f"cache {i[:8]}"] if i else []) + ([f"partial {p[:8]}"] if p else [])) or "complete"
                  for i, p in zip(df["cache_identity"], df["partial"])]
    several = df.groupby(where)["data"].transform("nunique") > 1
    df["where"] = where.where(~several, where + " [" + df["data"] + "]")
    df["base_method"] = df["fusion"].where(df["layers"].isin(WHOLE_STACKS), df["fusion"] + " [" + df["layers"] + "]")
    df["variant"] = _variants(df)
    df["method"] = df["base_method"] + df["variant"].map(lambda v: f" [{v}]" if v else "")
    # runs of other validation protocols are other methods: never pooled together. Decided on the
    # finished runs: a pending run has none recorded yet, and must not relabel the finished ones.
    df["validation"] = df["validation"].fillna("").astype(str)
    finished = df["status"] == "done"
    df["protocol"] = ""
    if df.loc[finished, "validation"].nunique() > 1:
        df.loc[finished, "protocol"] = df.loc[finished, "validation"].map(lambda v: f" ({v or 'validation unrecorded'})")
    df["method"] += df["protocol"]
    df["n_expected"] = _expected_n(df)
    return df


def _variants(df: pd.DataFrame) -> pd.Series:
    """Per run, what tells it apart from the table's other runs of its (stack, fusion), finished or
    not ("" when nothing does): the whole-stack selection (`enc:all` vs `enc:blocks`, which the
    method label leaves out) and each training setting (`lr=0.01`) in which they differ. The
    validation protocol has its own suffix; what is left (another cache of the condition) is split
    per cell (`split_settings`)."""
    facts = []
    for layers, settings in zip(df["layers"], df["settings"]):
        parsed = json_value(settings)
        fact = {k: v for k, v in parsed.items() if k != "validation"} if isinstance(parsed, dict) else {}
        facts.append({"": layers, **fact} if layers in WHOLE_STACKS else fact)
    facts_of = pd.Series(facts, index=df.index, dtype=object)

    out = pd.Series("", index=df.index)
    for _, g in df.groupby(["stack", "fusion"], sort=False):
        group = facts_of[g.index]
        keys = sorted({k for f in group for k in f})
        # the selection only among whole stacks: others have theirs in the method label
        differ = [k for k in keys if len({json.dumps(result_setting(f, k) if k else f.get(k)) for f in group
                                          if k or k in f}) > 1]
        if differ:
            out[g.index] = group.map(lambda f: ", ".join(
                str(f[k]) if not k else f"{k}={result_setting(f, k)}" for k in differ if k or k in f))
    return out


def _expected_n(df: pd.DataFrame) -> pd.Series:
    """Per run, how many (seed, test fold) scores the table's runs of its setting (`settings_key`),
    finished or not, are meant to give; a cell pooling fewer is a grid finished in parts. NaN where
    unknown: a table written before settings_key, or a `folds: all` run on a cache whose folds no
    run of the table names yet."""
    named = [set(map(str, p)) if isinstance(p := json_value(scores), dict) else set() for scores in df["fold_uar"]]
    folds_of: dict[str, set[str]] = {}  # cache identity -> its test folds, as the runs on it name them
    for ident, folds, scored in zip(df["cache_identity"], df["folds"], named):
        folds_of.setdefault(ident, set()).update(scored | (set(folds.split(",")) if folds not in ("", "all") else set()))
    keys: dict[str, set[tuple[str, str]] | None] = {}
    for key, ident, seed, folds, scored in zip(df["settings_key"], df["cache_identity"], df["seed"], df["folds"], named):
        if not key or keys.get(key, set()) is None:
            continue
        names = scored or (folds_of.get(ident) if folds in ("", "all") else set(folds.split(",")))
        keys[key] = keys.get(key, set()) | {(seed_name(seed), f) for f in names} if names else None
    return df["settings_key"].map(lambda k: float(len(keys[k])) if keys.get(k) else math.nan)


def done(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "done"]


# --- pooled statistics --------------------------------------------------------------------------

@dataclass(frozen=True)
class Score:
    mean: float
    std: float
    n: int  # pooled values (runs x folds)
    full: float = math.nan  # how many its runs are meant to give (`_expected_n`); nan: unknown
    folds: int = 0  # across seeds (`across_seeds`): the test folds each seed's score is over; 0: unknown

    def fmt(self, digits: int = 2) -> str:
        if math.isnan(self.mean):
            return "n/a"
        std = "" if math.isnan(self.std) else f" ± {100 * self.std:.{digits}f}"
        return f"{100 * self.mean:.{digits}f}{std}"

    @property
    def partial(self) -> bool:
        return self.n < self.full

    @property
    def mark(self) -> str:
        """`[n=k]` when it pools fewer scores than its runs are meant to give."""
        return f" [n={self.n}]" if self.partial else ""

    def marked(self, digits: int = 2) -> str:
        return self.fmt(digits) + self.mark


def seed_name(value: Any) -> str:
    return str(int(value)) if isinstance(value, (int, float, np.integer, np.floating)) and not pd.isna(value) \
        else str(value)


def fold_scores_once(runs: pd.DataFrame, metric: str, what: str, why: str = "e.g. a `per_fold` subgrid and a "
                     "`folds: all` one with the same runs, or, in a table without `settings_key`, runs of other "
                     "settings") -> dict[tuple[str, str], float]:
    """{(seed, test fold): score} from the per-fold scores of `runs` (runs without them add nothing),
    each (seed, fold) once: two runs scoring one seed's test fold are refused with a ReportError
    naming `what`, since pooling or pairing them would count that fold twice."""
    values: dict[tuple[str, str], float] = {}
    for seed, folds in zip(runs["seed"], runs[f"fold_{metric}"]):
        parsed = json_value(folds)
        for fold, v in (parsed.items() if isinstance(parsed, dict) else ()):
            key = (seed_name(seed), str(fold))
            if key in values:
                raise ReportError(f"{what}: two runs score seed {key[0]}, test fold {key[1]} ({why}); each "
                                  "(seed, fold) counts once: drop one of them from the grid")
            values[key] = float(v)
    return values


def pooled(group: pd.DataFrame, metric: str) -> Score:
    """mean ± std over the (seed, fold) scores of `group`, each counted once (`fold_scores_once`).
    Runs without per-fold scores count once with their mean (and, alone, keep their own std)."""
    what = " on ".join(str(group[c].iloc[0]) for c in ("method", "where") if c in group.columns) \
        if len(group) else "a cell"
    values: dict[tuple[str, str], float] = dict(fold_scores_once(group, metric, what))
    for i, (mean, folds) in enumerate(zip(group[metric], group[f"fold_{metric}"])):
        parsed = json_value(folds)
        if not (isinstance(parsed, dict) and parsed) and not pd.isna(mean):
            values[("", f"run {i}")] = float(mean)  # its folds unknown: counted once, not checked
    full = float(group["n_expected"].max()) if "n_expected" in group.columns and group["n_expected"].notna().all() \
        else math.nan
    if not values:
        return Score(float("nan"), float("nan"), 0, full)
    if len(group) == 1 and not isinstance(json_value(group[f"fold_{metric}"].iloc[0]), dict):
        return Score(next(iter(values.values())), float(group[f"{metric}_std"].iloc[0]), 1, full)
    scores = list(values.values())
    return Score(float(np.mean(scores)), float(np.std(scores)), len(scores), full)


def across_seeds(group: pd.DataFrame, metric: str) -> Score | None:
    """mean ± sample std (n-1) over the seeds of `group`, each seed's score its mean over the test
    folds that every seed scored (`Score.folds` of them): a seed scored on other folds than another
    would differ by those folds' difficulty, not by the seed. None for fewer than two seeds or no
    fold they share. Runs without per-fold scores (older tables) count with their pooled mean."""
    if not group[f"fold_{metric}"].map(lambda v: isinstance(json_value(v), dict)).all():
        per_seed = [pooled(g, metric).mean for _, g in group.groupby("seed", sort=True)]
        per_seed = [v for v in per_seed if not math.isnan(v)]
        return Score(float(np.mean(per_seed)), float(np.std(per_seed, ddof=1)), len(per_seed)) \
            if len(per_seed) >= 2 else None
    by_seed: dict[str, dict[str, float]] = {}
    for (seed, fold), v in fold_scores_once(group, metric, "across seeds").items():
        by_seed.setdefault(seed, {})[fold] = v
    if len(by_seed) < 2:
        return None
    common = set.intersection(*(set(scores) for scores in by_seed.values()))
    if not common:
        return None
    per_seed = [float(np.mean([scores[f] for f in sorted(common)])) for scores in by_seed.values()]
    return Score(float(np.mean(per_seed)), float(np.std(per_seed, ddof=1)), len(per_seed), folds=len(common))


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

def split_settings(group: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """[(label suffix, runs)]: `group` itself when its runs share one setting (`settings_key`: they
    differ in seed and test fold alone); else one part per stored data (another extraction of the
    same condition, or an unfinished cache: `[cache <identity>, partial <hash>]`) or, failing that,
    per setting (`[settings <key>]`): never pooled."""
    if group["settings_key"].nunique() <= 1 and group["data"].nunique() <= 1:
        return [("", group)]
    if group["data"].nunique() > 1:
        return [(f" [{k}]", part) for k, part in group.groupby("data", sort=True)]
    return [(f" [settings {str(k)[:8]}]", part) for k, part in group.groupby("settings_key", sort=True)]


def _layer_points(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """where (+ the curve's variant) -> rows (stack, layer, uar, uar_std, macro_f1, macro_f1_std, n,
    n_full) of the layer sweep's runs, finished or not: a layer without a finished run has n 0."""
    runs = runs[runs["fusion"].isin(layer_sweep_fusions())]
    parsed = runs["selection"].map(single_layer)
    runs = runs[parsed.notna()]
    runs = runs.assign(_stack=parsed.dropna().map(lambda p: p[0]), _layer=parsed.dropna().map(lambda p: p[1]))
    out: dict[str, pd.DataFrame] = {}
    for (where, variant, protocol), curve in runs.groupby(["where", "variant", "protocol"], sort=False):
        # each layer has a setting of its own: split the curve on caches alone
        for suffix, part in split_settings(curve.assign(settings_key="")):
            rows = []
            for (stack, layer), g in part.groupby(["_stack", "_layer"], sort=True):
                u, f = pooled(done(g), "uar"), pooled(done(g), "macro_f1")
                rows.append({"stack": stack, "layer": layer, "uar": u.mean, "uar_std": u.std, "macro_f1": f.mean,
                             "macro_f1_std": f.std, "n": u.n,
                             "n_full": g["n_expected"].max() if g["n_expected"].notna().all() else math.nan})
            tag = (f" [{variant}]" if variant else "") + suffix
            frame = pd.DataFrame(rows).sort_values(["stack", "layer"], key=_stack_key).reset_index(drop=True)
            frame = frame.assign(n_full=frame["n_full"].fillna(frame["n"].max()))  # unknown: the largest n
            # what the label is made of, for method_cells' row labels
            frame.attrs.update(where=str(where), variant=tag, protocol=protocol)
            out[str(where) + tag + protocol] = frame
    return out


def layerwise(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """where -> rows (stack, layer, uar, uar_std, macro_f1, macro_f1_std, n, n_full) of the layer
    sweep's finished runs (fusions trained on the one layer selected, `single`); runs of other
    settings (an lr sweep, another cache of the condition) are curves of their own, `where [lr=...]`."""
    out = {}
    for where, curve in _layer_points(df).items():
        curve = curve[curve["n"] > 0].reset_index(drop=True)
        if len(curve):
            out[where] = curve
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
    base: str = ""  # the method label without what tells its variants apart (paper rows match on it)


def cell_of(runs: pd.DataFrame, base: str = "") -> Cell:
    """The pooled scores of one cell's finished runs."""
    return Cell(pooled(runs, "uar"), pooled(runs, "macro_f1"), seeds_uar=across_seeds(runs, "uar"),
                seeds_f1=across_seeds(runs, "macro_f1"), base=base)


def with_full(cells: dict[Any, dict[str, Cell]]) -> dict[Any, dict[str, Cell]]:
    """Cells whose expected count is unknown (tables before settings_key) measured against the largest n."""
    largest = max((c.uar.n for cs in cells.values() for c in cs.values()), default=0)

    def fill(score: Score) -> Score:
        return replace(score, full=largest) if math.isnan(score.full) else score

    return {k: {w: replace(c, uar=fill(c.uar), f1=fill(c.f1)) for w, c in cs.items()} for k, cs in cells.items()}


def method_cells(df: pd.DataFrame) -> tuple[list[tuple[str, str]], dict[tuple[str, str], dict[str, Cell]]]:
    """Rows of the fusion comparison: (stack, method) -> where -> Cell.

    Runs of other fusions than the layer sweep's (`single`) group by (stack, method) and setting
    (`split_settings`). The sweep's runs are summarized per stack as the deepest layer run ("single,
    last") and the layer with the best test UAR ("single, best†": an oracle choice; the `best` fusion
    chooses on validation instead), ranked among the layers that pooled all their scores."""
    runs = done(df)
    sweeps = layer_sweep_fusions()
    cells: dict[tuple[str, str], dict[str, Cell]] = {}
    others = runs[~runs["fusion"].isin(sweeps)]
    for (stack, method, where), g in others.groupby(["stack", "method", "where"], sort=False):
        for suffix, part in split_settings(g):
            cells.setdefault((stack, method + suffix), {})[where] = cell_of(part, part["base_method"].iloc[0])
    for fusion in sweeps:
        for curves in _layer_points(df[df["fusion"] == fusion]).values():
            name = curves.attrs["where"]
            label = fusion + curves.attrs["variant"] + curves.attrs["protocol"]
            for stack, g in curves.groupby("stack", sort=False):
                last = g.loc[g["layer"].idxmax()]
                whole = g[(g["n"] >= g["n_full"]) & g["uar"].notna()]
                best = (whole if len(whole) else g).loc[(whole if len(whole) else g)["uar"].idxmax()] \
                    if g["uar"].notna().any() else last
                partly = "" if len(whole) or not g["uar"].notna().any() else ", of partly finished layers"
                for suffix, row, why in zip(SWEEP_ROWS, (last, best), ("", partly)):
                    cells.setdefault((stack, label + suffix), {})[name] = Cell(
                        Score(row["uar"], row["uar_std"], int(row["n"]), row["n_full"]),
                        Score(row["macro_f1"], row["macro_f1_std"], int(row["n"]), row["n_full"]),
                        note=f"{stack}{int(row['layer'])}{why}", base=fusion + suffix)
    return sorted(cells, key=row_order), with_full(cells)


def row_order(key: tuple[str, str]) -> tuple:
    """Sort key of a (stack, method) row of the fusion comparison and the per-fold table."""
    return STACK_ORDER.get(key[0], 9), _method_rank(key[1]), key[1]


def fold_order(fold: str) -> tuple[int, str]:
    """Sort key of test-fold names: "2" before "10"."""
    return len(fold), fold


def _method_rank(method: str) -> tuple[int, int]:
    """(the fusion's place in the registry, which is the report's order; then a sweep's summary
    rows before the fusion's own)."""
    order = list(FUSION_SPECS)

    def place(fusion: str) -> int:
        return order.index(fusion) if fusion in order else len(order)

    for rank, suffix in enumerate(SWEEP_ROWS):
        if method.endswith(suffix):
            return place(method.removesuffix(suffix).split(" ")[0]), rank
    return place(method.split(" ")[0]), len(SWEEP_ROWS)


def snr_groups(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """"corpus · model · noise" -> the runs at its SNRs (plus the clean runs of the same corpus and
    model, as a reference row), finished or not, for each noise type with finished runs at two or more SNRs."""
    out: dict[str, pd.DataFrame] = {}
    noisy = df[df["noise_type"].notna() & df["snr_db"].notna() & (df["noise_type"].astype(str) != "")]
    parts = [c for c in ("corpus", "model") if df[c].nunique() > 1]
    for (corpus, model, noise), g in noisy.groupby(["corpus", "model", "noise_type"], sort=True):
        if done(g)["snr_db"].nunique() < 2:
            continue
        clean = df[(df["corpus"] == corpus) & (df["model"] == model) & df["snr_db"].isna()
                   & (df["condition"] == "clean")]
        label = " · ".join([{"corpus": corpus, "model": model}[c] for c in parts] + [str(noise)])
        out[label] = pd.concat([g, clean])
    return out


@dataclass(frozen=True)
class BestCell:
    """The cell (stack, method) with the best pooled UAR at one condition, its confusion summed over its runs."""

    stack: str
    method: str
    uar: Score
    confusion: np.ndarray
    runs: pd.DataFrame


def best_cells(df: pd.DataFrame) -> dict[str, BestCell]:
    """where -> the finished cell with the best pooled test UAR among those with a confusion matrix
    that pooled all their scores (any, where none did): one lucky fold of a `per_fold` grid is not
    "the best run"."""
    runs = done(df)
    runs = runs[runs["confusion"].map(lambda v: isinstance(json_value(v), list))]
    out = {}
    for where, at in runs.groupby("where", sort=False):
        found = [(stack, method + suffix, pooled(part, "uar"), part)
                 for (stack, method), g in at.groupby(["stack", "method"], sort=False)
                 for suffix, part in split_settings(g)]
        found = [c for c in found if not math.isnan(c[2].mean)]
        if not found:
            continue
        largest = max(c[2].n for c in found)
        whole = [c for c in found if not (c[2].partial or (math.isnan(c[2].full) and c[2].n < largest))] or found
        stack, method, score, part = max(whole, key=lambda c: c[2].mean)
        out[str(where)] = BestCell(stack, method, score, sum(confusion(r) for _, r in part.iterrows()), part)
    return out


def metrics_places(run: pd.Series, bases: Any = (), records: Any = ()) -> list[Path]:
    """Where a run's metrics.json may be, in order: its run dir, `<base>/runs/<key>` for each results
    table's folder (the grid's layout, wherever the tables were moved), then `<records>/<key>` for
    each records folder (`nser-grid --records`)."""
    places = [Path(str(run["run_dir"])) / "metrics.json"] if is_text(run.get("run_dir")) else []
    if is_text(key := run.get("run_key")):
        places += [Path(b) / "runs" / str(key) / "metrics.json" for b in bases]
        places += [Path(r) / str(key) / "metrics.json" for r in records]
    return places


def class_names(run: pd.Series, base: Path | None, n: int) -> list[str]:
    """The run's class names: the table's `classes`, else its metrics.json, else c0..c{n-1}."""
    names = json_value(run.get("classes"))
    if not (isinstance(names, list) and len(names) == n):
        for place in metrics_places(run, [base] if base is not None else []):
            try:
                names = RunMetrics.read(place).classes
                break
            except (OSError, ValueError):
                continue
    if isinstance(names, list) and len(names) == n:
        return [str(c) for c in names]
    return [f"c{i}" for i in range(n)]


def is_text(value: Any) -> bool:
    """A non-empty string (a table cell that is not NaN or blank)."""
    return isinstance(value, str) and bool(value)


def confusion(run: pd.Series) -> np.ndarray:
    return np.array(json_value(run["confusion"]), dtype=float)
