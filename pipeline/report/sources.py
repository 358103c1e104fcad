"""Report sections that compare feature sources and models rather than fusions of one model:
paper Table III (Mel, openSMILE HSF sets, SSL encoders and Whisper, each with its head), Table VI
(a text encoder on the transcripts and on the ASR hypotheses) and Table VII (two Whisper checkpoints
on one corpus). Rows are (source, model, head [layers]); columns are the conditions, prefixed with the
corpus when the runs span several."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import pandas as pd

from pipeline.extract.sources import TEXT_SOURCE as TEXT
from pipeline.extract.sources import source_name
from pipeline.report import aggregate as agg


def with_source(df: pd.DataFrame) -> pd.DataFrame:
    """`source` filled for results tables written before the grid recorded it (from the model name)."""
    df = df.copy()
    known = df["source"].astype(object).fillna("").astype(str) if "source" in df.columns else pd.Series("", index=df.index)
    df["source"] = known.where(known != "", df["model"].map(source_name))
    return df


@lru_cache(maxsize=None)
def text_field(cache: str) -> str:
    """transcript or hypothesis: the field a text cache encodes (its identity's `text.field`), read
    from the cache; "text (cache unreadable)" when the cache is gone."""
    from pipeline.cache.reader import CacheReader
    from pipeline.errors import NserError

    try:
        return str(CacheReader(cache).attrs["identity"]["text"]["field"])
    except (NserError, OSError, KeyError, TypeError):
        return "text (cache unreadable)"


def _column(df: pd.DataFrame) -> pd.Series:
    col = df["condition"]
    return df["corpus"] + " · " + col if df["corpus"].nunique() > 1 else col


def _table(runs: pd.DataFrame, row_cols: list[str]) -> tuple[list[str], list[list[str]], list[dict]]:
    """(header, rows, long form) of pooled UAR/F1 per row key and condition column; bold = column best."""
    runs = runs.assign(column=_column(runs))
    columns = list(dict.fromkeys(runs["column"]))
    cells: dict[tuple, dict[str, agg.Cell]] = {}
    for key, g in runs.groupby(row_cols + ["column"], sort=True):
        *row_key, column = key
        for suffix, part in agg.split_settings(g):  # the last row column is the method
            cells.setdefault((*row_key[:-1], row_key[-1] + suffix), {})[column] = agg.cell_of(part)
    cells = agg.with_full(cells)
    best = {(c, m): max((getattr(cs[c], m).mean for cs in cells.values() if c in cs
                         and not math.isnan(getattr(cs[c], m).mean)), default=math.nan)
            for c in columns for m in ("uar", "f1")}
    header = row_cols + [f"{c} {name}" for c in columns for name in agg.METRICS.values()]
    rows, flat = [], []
    for key, cs in cells.items():
        row = list(key)
        for c in columns:
            for m in ("uar", "f1"):
                score = getattr(cs[c], m) if c in cs else None
                if score is None:
                    row.append("")
                    continue
                row.append(f"**{score.marked()}**" if score.mean == best[(c, m)] else score.marked())
                flat.append({**dict(zip(row_cols, key)), "where": c, "metric": m, "mean": score.mean,
                             "std": score.std, "n": score.n, "n_full": score.full})
        rows.append(row)
    return header, rows, flat


def _write(md: list[str], header: list[str], rows: list[list[str]], flat: list[dict], csv: Path, rep,
           note: str) -> list[str]:
    from pipeline.report.build import _md_table, n_note

    pd.DataFrame(flat).to_csv(csv, index=False)
    rep.files.append(csv)
    return md + [_md_table(header, rows), "", f"{note} Bold: the best mean per column. "
                 f"Long form: [{csv.name}]({csv.name}).", ""] + n_note(
        [agg.Score(r["mean"], r["std"], r["n"], r["n_full"]) for r in flat if r["metric"] == "uar"])


def sources_section(df: pd.DataFrame, base: Path, out: Path, rep) -> tuple[list[str], str | None]:
    """Written when the finished audio runs span two or more models; else left out (one model's runs
    are the fusion sections)."""
    md = ["## Feature sources and models (paper Tables III, VII)", ""]
    runs = with_source(agg.done(df))
    runs = runs[runs["source"] != TEXT]
    if runs["model"].nunique() < 2:
        return [], None
    header, rows, flat = _table(runs, ["source", "model", "method"])
    return _write(md, header, rows, flat, out / "sources.csv", rep,
                  "One row per feature source, model (a checkpoint, an openSMILE set, ...) and head; the "
                  "paper's Table III heads: `single` (BiGRU) on `mel`, `fc` on openSMILE sets, `mean-fc` "
                  "on SSL encoders, `l-adapter` on Whisper."), None


def text_section(df: pd.DataFrame, base: Path, out: Path, rep) -> tuple[list[str], str | None]:
    """Written when there are finished runs on text caches; else left out."""
    md = ["## Text modality: transcripts vs ASR hypotheses (paper Table VI)", ""]
    runs = with_source(agg.done(df))
    runs = runs[runs["source"] == TEXT]
    if runs.empty:
        return [], None
    runs = runs.assign(field=runs["cache"].map(lambda c: text_field(str(c))) if "cache" in runs.columns
                       else "text (cache unrecorded)")
    header, rows, flat = _table(runs, ["field", "model", "method"])
    return _write(md, header, rows, flat, out / "text_modality.csv", rep,
                  "`transcript`: the corpus's reference text; `hypothesis`: the ASR output of that condition's "
                  "Whisper cache (its column), so only hypotheses degrade with the noise."), None
