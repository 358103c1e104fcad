"""The paper's Tables III, IV, V and VI in the paper's layout (its rows and columns), each cell ours;
told which paper dataset the runs reproduce, the paper's value and our difference beside each cell;
and Fig. 5, the proposed model's confusion matrix at each SNR.

The paper's numbers and the mapping of its rows to our (feature source, stack, method) and of its
columns to our condition names are data: `paper_values.yaml` next to this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.extract.sources import DEFAULT_SOURCE
from pipeline.report import PAPER_TABLES
from pipeline.report import aggregate as agg
from pipeline.report.aggregate import ReportError
from pipeline.report.sources import TEXT, text_field, with_source

WHISPER = DEFAULT_SOURCE  # a row's default source; the report group fixes the checkpoint
_METRICS = (("uar", "UAR"), ("f1", "F1"))


@dataclass(frozen=True)
class PaperRow:
    id: str
    group: str
    label: str
    stack: str | None  # None: a baseline this pipeline does not run (the paper's value alone)
    methods: tuple[str, ...]  # our method labels (aggregate.method_cells), first found wins
    proposed: bool = False
    source: str = WHISPER  # the runs' feature (`feature`): whisper, mel, opensmile:<set>, text:<field>, ...
    condition: str | None = None  # stands in where the row has no run at a column's condition


@dataclass(frozen=True)
class Column:
    label: str
    condition: str  # our condition name: clean, <noise>_<snr>dB


@dataclass(frozen=True)
class Block:
    """One printed sub-table: columns, and the paper's [UAR, F1] per row id and column (empty: ours only)."""

    title: str
    columns: tuple[Column, ...]
    values: dict[str, list[list[float]]]
    noise: str | None = None


@dataclass(frozen=True)
class PaperTable:
    id: str
    caption: str
    model: str
    rows: tuple[PaperRow, ...]
    datasets: dict[str, tuple[Block, ...]]
    note: str = ""  # printed under the table: how its rows of ours differ from the paper's


def load_paper_values(path: str | Path | None = None) -> dict[str, PaperTable]:
    """The tables of `paper_values.yaml` (or `path`), checked: an inconsistent file is refused here."""
    if path is None:
        text = resources.files("pipeline.report").joinpath("paper_values.yaml").read_text()
        where = "paper_values.yaml"
    else:
        text, where = Path(path).read_text(), str(path)
    raw = yaml.safe_load(text)
    try:
        return {tid: _table(tid, t) for tid, t in raw["tables"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"{where}: {exc}") from exc


def _table(tid: str, t: dict[str, Any]) -> PaperTable:
    if t["metrics"] != ["uar", "macro_f1"]:
        raise ValueError(f"table {tid}: metrics must be [uar, macro_f1], not {t['metrics']}")
    rows = tuple(PaperRow(r["id"], r["group"], r["label"], r["stack"], tuple(r["methods"]), bool(r.get("proposed")),
                          r.get("source", WHISPER), r.get("condition")) for r in t["rows"])
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"table {tid}: duplicate row ids")
    datasets = {}
    for name, blocks in t["datasets"].items():
        datasets[name] = tuple(_block(tid, name, b, set(ids)) for b in blocks)
    return PaperTable(tid, t["caption"], t["model"], rows, datasets, t.get("note", ""))


def _block(tid: str, dataset: str, b: dict[str, Any], ids: set[str]) -> Block:
    columns = tuple(Column(c["label"], c["condition"]) for c in b["columns"])
    where = f"table {tid}, {dataset}, {b['title']}"
    if set(b["values"]) - ids:
        raise ValueError(f"{where}: values for unknown rows {sorted(set(b['values']) - ids)}")
    for rid, cells in b["values"].items():
        if len(cells) != len(columns) or any(c is not None and (len(c) != 2 or not all(0 <= float(v) <= 100 for v in c))
                                             for c in cells):
            raise ValueError(f"{where}, row {rid}: need one [UAR, F1] pair in 0..100 (or null) per column "
                             f"({len(columns)})")
    return Block(b["title"], columns, {k: [[math.nan] * 2 if c is None else [float(v) for v in c] for c in cells]
                                       for k, cells in b["values"].items()}, b.get("noise"))


# --- our runs in the paper's layout -------------------------------------------------------------

def layout_blocks(df: pd.DataFrame, table: PaperTable, dataset: str | None) -> list[Block]:
    """The paper's blocks for `dataset`, or, without one, blocks with columns from the runs: Tables
    III, IV and VI one column per condition; Table V one block per noise type run at two or more SNRs."""
    if dataset is not None:
        if dataset not in table.datasets:
            raise ReportError(f"paper Table {table.id.upper()} has no dataset {dataset!r}; it has "
                              f"{', '.join(table.datasets)}")
        return list(table.datasets[dataset])
    runs = agg.done(df)
    if table.id != "v":
        conditions = sorted(dict.fromkeys(runs["condition"]), key=lambda c: _snr_key(runs, c))
        return [Block("", tuple(Column(c, c) for c in conditions), {})] if conditions else []
    blocks = []
    noisy = runs[runs["noise_type"].notna() & (runs["noise_type"].astype(str) != "") & runs["snr_db"].notna()]
    for noise, g in noisy.groupby(noisy["noise_type"].astype(str), sort=True):
        snrs = sorted(g["snr_db"].unique())
        if len(snrs) >= 2:
            conds = [g.loc[g["snr_db"] == s, "condition"].iloc[0] for s in snrs]
            blocks.append(Block(noise, tuple(Column(f"SNR {s:g} dB", c) for s, c in zip(snrs, conds)), {}, noise))
    return blocks


def _snr_key(runs: pd.DataFrame, condition: str) -> float:
    snr = runs.loc[runs["condition"] == condition, "snr_db"].iloc[0]
    return math.inf if pd.isna(snr) else float(snr)


def feature(runs: pd.DataFrame) -> pd.Series:
    """What a row's `source` matches: whisper for any Whisper checkpoint, text:<field> for a text
    cache (the field its cache records), else the model (mel, opensmile:<set>, hf-encoder:<id>)."""
    runs = with_source(runs)
    cache = runs["cache"] if "cache" in runs.columns else pd.Series("", index=runs.index)
    text = cache.map(lambda c: f"{TEXT}:{text_field(str(c))}")
    return runs["model"].where(runs["source"] != WHISPER, WHISPER).where(runs["source"] != TEXT, text)


def corpus_model_groups(df: pd.DataFrame, dataset: str | None) -> list[tuple[str, str, pd.DataFrame]]:
    """(corpus, Whisper model, runs) to lay out: per corpus, each Whisper checkpoint's runs with the
    corpus's runs of other sources (mel, openSMILE, SSL, text: the same for every checkpoint), each
    run's `feature` added; "" and those alone for a corpus without Whisper runs. With a paper dataset
    only that corpus's runs, which must exist (comparing another corpus's numbers with the paper's
    would be a wrong comparison)."""
    runs = df
    if dataset is not None:
        runs = df[df["corpus"] == dataset]
        if agg.done(runs).empty:
            found = ", ".join(sorted(set(agg.done(df)["corpus"]))) or "none"
            raise ReportError(f"--paper-dataset {dataset}: no finished runs on corpus {dataset!r} (corpora with "
                              f"finished runs: {found})")
    out = []
    for corpus, g in runs.groupby("corpus", sort=True):
        g = g.assign(where=g["condition"], feature=feature(g))
        whisper, others = g[g["feature"] == WHISPER], g[g["feature"] != WHISPER]
        for model in sorted(set(whisper["model"])) or [""]:
            out.append((str(corpus), model, pd.concat([whisper[whisper["model"] == model], others])))
    return out


def block_frame(runs: pd.DataFrame, table: PaperTable, block: Block) -> pd.DataFrame:
    """Long form of one block: a row per (paper row, column, metric) with ours, the paper's and the
    difference. A row's runs are those of its `source` (`corpus_model_groups` adds each run's `feature`)."""
    conditions = [c.condition for c in block.columns] + [r.condition for r in table.rows if r.condition]
    runs = runs[runs["condition"].isin(conditions)]
    cells = {f: agg.method_cells(g)[1] for f, g in runs.groupby("feature", sort=False)}
    out = []
    for row in table.rows:
        mine = cells.get(row.source, {})
        # matched on the method without its variant or validation suffix (Cell.base), first found wins;
        # runs of several settings or protocols of that method are one printed row each, never pooled
        bases = {k: next(iter(cs.values())).base for k, cs in mine.items() if k[0] == row.stack and cs}
        base = next((m for m in row.methods if m in bases.values()), None)
        methods = [k[1] for k, b in bases.items() if b == base] if base else [None]
        if base is None and row.id not in block.values:
            continue
        for method in methods:
            label = row.label if len(methods) == 1 else f"{row.label} ({method})"
            for j, col in enumerate(block.columns):
                by_condition = mine.get((row.stack, method), {}) if method else {}
                cell, note = by_condition.get(col.condition), ""
                if cell is None and row.condition in by_condition:
                    cell, note = by_condition[row.condition], f"the run on {row.condition}"
                for k, (attr, name) in enumerate(_METRICS):
                    score = getattr(cell, attr) if cell else agg.Score(math.nan, math.nan, 0)
                    paper = block.values[row.id][j][k] if row.id in block.values else math.nan
                    out.append({"table": table.id.upper(), "block": block.title, "group": row.group, "row": label,
                                "row_id": row.id, "source": row.source if row.stack else "",
                                "method": f"{row.stack} {method}" if method else "", "column": col.label,
                                "condition": col.condition, "metric": name, "ours": 100 * score.mean,
                                "ours_std": 100 * score.std, "n": score.n, "n_full": score.full,
                                "note": note or (cell.note if cell else ""), "paper": paper,
                                "diff": 100 * score.mean - paper})
    return pd.DataFrame(out)


def has_ours(frame: pd.DataFrame) -> bool:
    """Whether a block's long form has a cell of ours (not only the paper's values)."""
    return not frame.empty and frame["n"].max() > 0


def block_markdown(frame: pd.DataFrame, block: Block, with_paper: bool) -> list[list[str]]:
    """Rows of the printed table: group (on its first row), label, then UAR and F1 per column."""
    rows, last_group = [], None
    for _, g in frame.groupby(["row_id", "row"], sort=False):
        first = g.iloc[0]
        row = [first["group"] if first["group"] != last_group else "", first["row"]]
        last_group = first["group"]
        for col in block.columns:
            for _, name in _METRICS:
                r = g[(g["column"] == col.label) & (g["metric"] == name)].iloc[0]
                score = agg.Score(r["ours"] / 100, r["ours_std"] / 100, int(r["n"]), r["n_full"])
                ours = "—" if math.isnan(score.mean) else score.marked()
                if with_paper and not math.isnan(r["paper"]):
                    diff = "" if math.isnan(r["diff"]) else f" ({r['diff']:+.2f})"
                    ours = f"{ours} / {r['paper']:.2f}{diff}"
                row.append(ours)
        rows.append(row)
    return rows


# --- Fig. 5 -------------------------------------------------------------------------------------

def proposed_confusions(runs: pd.DataFrame, table: PaperTable, block: Block,
                        base: Path | None) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """(column label, confusion summed over the proposed row's runs) per column that has them, and the
    class names. As in the tables, the row's first method found is the one shown, and runs it holds of
    other data or settings (`split_settings`) are panels of their own, labelled as the table's rows."""
    row = next(r for r in table.rows if r.proposed)
    runs = agg.done(runs)
    runs = runs[(runs["feature"] == row.source) & (runs["stack"] == row.stack) & runs["method"].isin(row.methods)
                & runs["confusion"].map(lambda v: isinstance(v, (str, list)) and len(v) > 0)]
    panels, classes = [], []
    for col in block.columns:
        g = runs[runs["condition"] == col.condition]
        if g.empty:
            continue
        g = g[g["method"] == next(m for m in row.methods if m in set(g["method"]))]
        parts = agg.split_settings(g)
        for suffix, part in parts:
            matrix = sum(agg.confusion(r) for _, r in part.iterrows())
            classes = classes or agg.class_names(part.iloc[0], base, len(matrix))
            panels.append((col.label + (f" ({part['method'].iloc[0]}{suffix})" if len(parts) > 1 else ""), matrix))
    return panels, classes


# --- report sections ----------------------------------------------------------------------------

def check_paper_request(df: pd.DataFrame, compare: tuple[str, ...], dataset: str | None) -> None:
    """Refuse a comparison with the paper that cannot be made: an unknown table or dataset, none of
    the runs on that dataset, or none of them a run of the table's rows (its sources and methods)."""
    if not compare:
        return
    if dataset is None:
        raise ReportError("--paper-table needs --paper-dataset (which of the paper's datasets the runs are)")
    tables = load_paper_values()
    for tid in compare:
        if tid not in tables:
            raise ReportError(f"unknown paper table {tid!r}; known: {', '.join(tables)}")
        layout_blocks(df, tables[tid], dataset)
    groups = corpus_model_groups(df, dataset)
    for tid in compare:
        table = tables[tid]
        if not any(has_ours(block_frame(runs, table, b)) for _, _, runs in groups
                   for b in table.datasets[dataset]):
            sources = ", ".join(dict.fromkeys(f"{r.source} {r.stack} {r.methods[0]}" for r in table.rows if r.stack))
            raise ReportError(f"--paper-table {tid}: no finished run on {dataset!r} at the table's conditions of any "
                              f"of its rows ({sources})")


def _other_sources_run(table: PaperTable, frames: list[pd.DataFrame]) -> bool:
    """True for a table of Whisper rows alone; else whether a row of another source has a cell of ours."""
    if all(r.source == WHISPER for r in table.rows):
        return True
    return any(((f["source"] != WHISPER) & (f["n"] > 0)).any() for f in frames)


def paper_sections(df: pd.DataFrame, base: Path, out: Path, rep: Any, compare: tuple[str, ...],
                   dataset: str | None) -> list[str]:
    """Markdown of "Paper Table III" to "Paper Table VI" and "Paper Fig. 5"; their CSV and PNG files go to
    `out` and `rep.files`. Tables in `compare` carry the paper's values for `dataset`. A table of several
    sources (III, VI) not in `compare` is left out unless a row of another source than Whisper has runs:
    its Whisper rows alone are Tables IV and V's."""
    from pipeline.report.build import _md_table, _slug, n_note

    tables = load_paper_values()
    md: list[str] = []
    fig5: list[tuple[str, str, str, pd.DataFrame, Block]] = []
    for tid in PAPER_TABLES:
        table, with_paper = tables[tid], tid in compare
        name = f"paper_{tid}"
        head = [f"## Paper Table {tid.upper()} layout", "", f"_{table.caption}_", ""]
        frames, body = [], []
        for corpus, model, runs in corpus_model_groups(df, dataset if with_paper else None):
            for block in layout_blocks(runs, table, dataset if with_paper else None):
                frame = block_frame(runs, table, block)
                if not has_ours(frame):
                    continue
                frames.append(frame.assign(corpus=corpus, model=model))
                header = ["", "method"] + [f"{c.label} {m}" for c in block.columns for _, m in _METRICS]
                title = " · ".join(p for p in (corpus, model, block.title) if p)
                body += [f"### {title}", "", _md_table(header, block_markdown(frame, block, with_paper)), ""]
                if tid == "v":
                    fig5.append((corpus, model, title, runs, block))
        if not with_paper and not _other_sources_run(table, frames):
            continue
        md += head + body
        if not frames:
            rep.skipped[name] = "no finished run of the table's methods on its conditions"
            md += [f"_Skipped: {rep.skipped[name]}._", ""]
            continue
        csv = out / f"paper_table_{tid}.csv"
        pd.concat(frames).to_csv(csv, index=False)
        rep.files.append(csv)
        rep.written.append(name)
        paper_note = (f"Cells: ours (mean ± std over runs x folds) / the paper's value (ours − paper), on "
                      f"{dataset}; the paper's model is {table.model}." if with_paper else
                      "Cells: ours, mean ± std over runs x folds; `nser-report --paper-table "
                      f"{tid} --paper-dataset DATASET` adds the paper's values.")
        md += [paper_note + f" Rows without a method of ours are the paper's baselines. {table.note}Long form: "
               f"[{csv.name}]({csv.name}).", ""]
        md += n_note([agg.Score(r["ours"] / 100, r["ours_std"] / 100, int(r["n"]), r["n_full"])
                      for f in frames for _, r in f.iterrows() if r["n"] > 0])
    md += ["## Paper Fig. 5: the proposed model's confusion matrices per SNR", ""]
    drawn = 0
    for corpus, model, title, runs, block in fig5:
        panels, classes = proposed_confusions(runs, tables["v"], block, base)
        if len(panels) < 2:
            continue
        from pipeline.report.plots import confusion_panel

        png = confusion_panel(panels, classes, f"{title}: proposed (l-adapter, enc+dec), % of true class",
                              out / f"fig5_{_slug(title)}.png")
        rep.files.append(png)
        md += [f"![Fig. 5 {title}]({png.name})", ""]
        drawn += 1
    if drawn:
        rep.written.append("fig5")
    else:
        rep.skipped["fig5"] = "no noise type with finished l-adapter enc+dec runs at two or more SNRs"
        md += [f"_Skipped: {rep.skipped['fig5']}._", ""]
    return md
