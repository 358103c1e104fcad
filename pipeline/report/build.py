"""`build_report`: results table -> PNG figures, Markdown tables and a report.md that links them.

Each section is written from whatever runs the table holds and is skipped, with the reason in
report.md, when it has no data: a grid of fusions alone has no layer-wise curves, a grid on one
condition no SNR table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from pipeline.report import aggregate as agg
from pipeline.report import plots
from pipeline.train.fusion_specs import FUSION_SPECS


@dataclass
class Report:
    path: Path  # report.md
    files: list[Path] = field(default_factory=list)  # every PNG / CSV written
    written: list[str] = field(default_factory=list)  # sections with data
    skipped: dict[str, str] = field(default_factory=dict)  # section -> why


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "all"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def build_report(source: str | Path | tuple[str | Path, ...], out_dir: str | Path | None = None,
                 paper_tables: tuple[str, ...] = (), paper_dataset: str | None = None,
                 records: tuple[str | Path, ...] = ()) -> Report:
    """Write the report for a grid folder or results file (or several, pooled: agg.load_results) into
    `out_dir` (default: `<the first grid>/report`).
    `paper_tables` (any of "iii", "iv", "v", "vi") with `paper_dataset` (e.g. "iemocap"): the runs
    reproduce those paper tables on that dataset, so their paper-layout tables show the paper's values
    and our differences. `records`: run records folders (`nser-grid --records`) where a run's
    metrics.json is looked for when its run dir is not here (the learned layer weights)."""
    sources = tuple(source) if isinstance(source, (tuple, list)) else (source,)
    df, base = agg.load_results(*sources)
    read_files = [agg.results_file(s) for s in sources]
    from pipeline.report.paper_tables import check_paper_request, paper_sections  # imports this module

    check_paper_request(df, paper_tables, paper_dataset)  # refused before any figure is drawn
    out = Path(out_dir) if out_dir is not None else base / "report"
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(path=out / "report.md")
    counts = df["status"].value_counts().to_dict()
    wheres = [f"{w} ({_scored(g)})" for w, g in agg.done(df).groupby("where", sort=False)]
    md = ["# NSER grid report", "",
          f"Source: {', '.join(f'`{read}`' + (f' ({why})' if why else '') for read, why in read_files)}. Runs: {len(df)} ({counts.get('done', 0)} done, {counts.get('failed', 0)} failed, "
          f"{counts.get('pending', 0)} pending). Conditions with results: {', '.join(wheres) or 'none'}.", "",
          "Scores are in %, mean ± std over every (run, fold) score of a cell (seeds x folds; for one run, "
          "its cross-validation folds).", "", _validation_line(df), "", _code_line(df), ""] + _settings_line(df)
    from pipeline.report.sources import sources_section, text_section  # imports this module

    for name, section in (("layerwise", _layerwise), ("fusions", _fusions), ("per_fold", _per_fold),
                          ("layer_weights", partial(_layer_weights, records=tuple(records),
                                                    bases=tuple(path.parent for path, _ in read_files))),
                          ("sources", sources_section),
                          ("text", text_section), ("snr", _snr), ("confusion", _confusions),
                          ("wer_vs_f1", _wer_vs_f1)):
        text, why = section(df, base, out, rep)
        if not text:  # a section these runs have nothing for (e.g. text runs), left out without a line
            continue
        md += text
        if why:
            rep.skipped[name] = why
            md += [f"_Skipped: {why}._", ""]
        else:
            rep.written.append(name)
    md += paper_sections(df, base, out, rep, paper_tables, paper_dataset)
    md += _failures(df)
    rep.path.write_text("\n".join(md).rstrip() + "\n")
    return rep


def _scored(runs: pd.DataFrame) -> str:
    """The test folds and seeds that finished runs of a condition score: columns of a grid finished
    in parts (one fold at a time) can pool other folds, which no `[n=k]` mark shows when the table
    never listed the missing folds' runs."""
    folds = {str(f) for v in runs["fold_uar"] if isinstance(p := agg.json_value(v), dict) for f in p}
    seeds = sorted({agg.seed_name(s) for s in runs["seed"]}, key=lambda s: (len(s), s))
    fold_text = ", ".join(sorted(folds, key=agg.fold_order)) if folds else "unrecorded"
    return f"test folds {fold_text}; seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}"


def _validation_line(df: pd.DataFrame) -> str:
    """Which validation protocol picked the epochs (pipeline/folds.py): the scores depend on it."""
    seen = sorted({v or "unrecorded (next-fold on cv caches, dev on split caches)" for v in agg.done(df)["validation"]})
    return f"Validation protocol (epoch choice): {', '.join(seen) or 'none of the runs finished'}."


def _code_line(df: pd.DataFrame) -> str:
    """Which code versions trained the finished runs. A grid finished in parts (records, several
    tables) can pool runs of several versions under one run key; a reader must be able to see that."""
    done = agg.done(df)
    versions = done["code_version"].map(_cell_text) if "code_version" in done.columns else pd.Series([""] * len(done))
    counts = versions.replace("", "unrecorded").value_counts()
    if counts.empty:
        return "Code version: none of the runs finished."
    listed = ", ".join(f"`{v}` ({n} run{'s' if n > 1 else ''})" for v, n in counts.items())
    if len(counts) == 1:
        return f"Code version of every finished run: {listed}."
    return (f"Code versions of the finished runs: {listed}. A run key does not include the code version, so a "
            "version that changed results without changing keys would be pooled with the others in these cells "
            "(docs/grid.md, \"Run records\").")


def _settings_line(df: pd.DataFrame) -> list[str]:
    """Said for a table written before the grid recorded `settings_key`: its cells cannot be told apart by them."""
    if not (agg.done(df)["settings_key"] == "").any():
        return []
    return ["Some runs have no `settings_key` (a results table from before it was recorded): runs of one fusion "
            "that differ only in training settings (lr, epochs, ...) share a cell (refused where they score one seed "
            "and fold). `nser-grid SPEC --collect` "
            "rewrites the table with it.", ""]


def n_note(scores: list[agg.Score]) -> list[str]:
    """The line under a table with a cell marked `[n=k]`."""
    if not any(s.partial for s in scores):
        return []
    counts = [s.n for s in scores]
    return [f"**Cells pool different numbers of scores** (runs x folds, {min(counts)} to {max(counts)}): a cell marked "
            "`[n=k]` has fewer than its runs are meant to give (the grid's runs of that setting, finished or not), "
            "e.g. a grid finished in parts; compare cells of equal n only.", ""]


def _layerwise(df: pd.DataFrame, base: Path, out: Path, rep: Report) -> tuple[list[str], str | None]:
    md = ["## Layer-wise performance (paper Fig. 3)", ""]
    curves = agg.layerwise(df)
    if not curves:
        return md, "no finished `single` runs on one layer (grid layers `each:enc:all` / `each:dec:all`)"
    for where, c in curves.items():
        png = plots.layerwise_plot(c, where, out / f"layerwise_{_slug(where)}.png")
        csv = out / f"layerwise_{_slug(where)}.csv"
        c.to_csv(csv, index=False)
        rep.files += [png, csv]
        stacks = list(dict.fromkeys(c["stack"]))
        header = ["layer"] + [f"{s} {m}" for s in stacks for m in agg.METRICS.values()]
        rows, scores = [], []
        for layer in sorted(c["layer"].unique()):
            row = [str(layer)]
            for s in stacks:
                hit = c[(c["stack"] == s) & (c["layer"] == layer)]
                for metric in agg.METRICS:
                    if not len(hit):
                        row.append("")
                        continue
                    h = hit.iloc[0]
                    scores.append(agg.Score(h[metric], h[f"{metric}_std"], int(h["n"]), h["n_full"]))
                    row.append(scores[-1].marked())
            rows.append(row)
        md += [f"### {where}", "", f"![layer-wise {where}]({png.name})", "", _md_table(header, rows), ""]
        md += n_note(scores)
    return md, None


def _fusions(df: pd.DataFrame, base: Path, out: Path, rep: Report) -> tuple[list[str], str | None]:
    md = ["## Fusion comparison (paper Table IV)", ""]
    order, cells = agg.method_cells(df)
    if not order:
        return md, "no finished runs"
    wheres = list(dict.fromkeys(w for k in order for w in cells[k]))
    best = {(w, m): max((getattr(cells[k][w], m).mean for k in order if w in cells[k]
                         and not math.isnan(getattr(cells[k][w], m).mean)), default=math.nan)
            for w in wheres for m in ("uar", "f1")}
    header = ["stack", "method"] + [f"{w} {name}" for w in wheres for name in agg.METRICS.values()]
    rows, flat = [], []
    for key in order:
        stack, method = key
        row = [stack, method]
        for w in wheres:
            cell = cells[key].get(w)
            for m in ("uar", "f1"):
                if cell is None:
                    row.append("")
                    continue
                score = getattr(cell, m)
                # a grid finished in parts pools fewer folds in some cells: say so in those cells
                text = score.fmt() + (f" ({cell.note})" if cell.note and m == "uar" else "")
                text += score.mark
                row.append(f"**{text}**" if score.mean == best[(w, m)] else text)
                seeds = getattr(cell, f"seeds_{m}")
                flat.append({"stack": stack, "method": method, "where": w, "metric": m, "mean": score.mean,
                             "std": score.std, "n": score.n, "note": cell.note,
                             "seeds_mean": seeds.mean if seeds else math.nan,
                             "seeds_std": seeds.std if seeds else math.nan, "n_seeds": seeds.n if seeds else 1,
                             "seeds_folds": seeds.folds if seeds else math.nan})
        rows.append(row)
    csv = out / "fusion_comparison.csv"
    pd.DataFrame(flat).to_csv(csv, index=False)
    rep.files.append(csv)
    md += [_md_table(header, rows), "",
           "Bold: the best mean per column. `single, last`: the deepest layer among the single-layer runs; "
           "`single, best†`: the single layer with the best *test* UAR (an oracle choice, optimistic; the "
           "`best` fusion chooses its layer on validation). Methods without a `[selection]` use the whole "
           f"stack(s) named in the first column. Long form: [{csv.name}]({csv.name}).", ""]
    md += n_note([cell.uar for key in order for cell in cells[key].values()])
    md += _seed_table(order, cells)
    return md, None


def _per_fold(df: pd.DataFrame, base: Path, out: Path, rep: Report) -> tuple[list[str], str | None]:
    from pipeline.report.per_fold import per_fold_scores, validation_picks

    md = ["## Per test fold", ""]
    scores = per_fold_scores(df)
    folds_of = scores.groupby("where", sort=False)["fold"].agg(lambda f: sorted(set(f), key=agg.fold_order))
    if not any(len(f) > 1 for f in folds_of):
        return md, "no condition has scores on two or more test folds"
    picks = validation_picks(scores)
    for where, folds in folds_of.items():
        if len(folds) < 2:
            continue
        g = scores[scores["where"] == where]
        top = g.groupby("fold")["uar"].max()
        rows = []
        for (stack, method), m in sorted(g.groupby(["stack", "method"], sort=False), key=lambda kv: agg.row_order(kv[0])):
            by_fold = m.set_index("fold")
            cells = []
            for fold in folds:
                if fold not in by_fold.index:
                    cells.append("")
                    continue
                hit = by_fold.loc[fold]
                text = f"{100 * hit['uar']:.1f}" + (f" ({hit['chosen']})" if hit["chosen"] else "")
                cells.append(f"**{text}**" if hit["uar"] == top[fold] else text)
            mean = f"{100 * m['uar'].mean():.1f}" + ("" if len(m) == len(folds) else f" [{len(m)} folds]")
            rows.append([stack, method, *cells, mean])
        csv = out / f"per_fold_{_slug(where)}.csv"
        g.to_csv(csv, index=False)
        rep.files.append(csv)
        md += [f"### {where}", "", _md_table(["stack", "method", *[f"fold {f}" for f in folds], "mean"], rows), ""]
        mine = picks[picks["where"] == where]
        for (stack, method), p in mine.groupby(["stack", "method"], sort=False):
            hits = p[p["hit"]]["fold"].tolist()
            misses = "; ".join(f"fold {r.fold}: {r.chosen} {100 * r.uar:.1f} vs {r.test_best} {100 * r.test_best_uar:.1f}"
                               for r in p[~p["hit"]].itertuples())
            md += [f"- `{stack} {method}`: validation picked the test fold's best single layer on {len(hits)} of "
                   f"{len(p)} folds" + (f" ({', '.join(hits)})" if hits else "") + (f"; not on {misses}" if misses else "")
                   + "."]
        md += [""] if len(mine) else []
    md += ["Test UAR (%) per fold, the seeds that scored a fold averaged; bold: the best on that fold. In brackets "
           "after a fusion chosen on validation: the layer it picked on that fold. `mean`: over the folds the row "
           "scored (a row with fewer says so). Long form: `per_fold_<condition>.csv`.", ""]
    return md, None


def _layer_weights(df: pd.DataFrame, base: Path, out: Path, rep: Report, records: tuple[str | Path, ...] = (),
                   bases: tuple[Path, ...] = ()) -> tuple[list[str], str | None]:
    from pipeline.report.layer_weights import layer_weights, summary, uniform, weight_matrix

    learned = ", ".join(f"`{n}`" for n, s in FUSION_SPECS.items() if s.learned_layer_weights)
    weights, unread = layer_weights(df, bases or (base,), records)
    if weights.empty and not unread:
        return [], None  # no fusion with learned layer weights finished: nothing to say
    md = ["## Learned layer weights", ""]
    if weights.empty:
        return md, f"no finished run of {learned} has its weights here: {_unread_text(unread)}"
    for where, rows in summary(weights).groupby("where", sort=False):
        rows = rows.loc[sorted(rows.index, key=lambda i: agg.row_order((rows.at[i, "stack"], rows.at[i, "method"])))]
        lines = []
        for r in rows.itertuples():
            top = sorted(zip(r.mean, r.layers), reverse=True)[:3]
            lines.append([r.stack, r.method, str(r.n), uniform(r.layers, r.mean),
                          ", ".join(f"{layer} {w:.3f}" for w, layer in top),
                          "; ".join(f"{f}: {layer}" for f, layer in r.largest.items())])
        slug = _slug(str(where))
        png = plots.layer_weight_plot(*weight_matrix(rows), str(where), out / f"layer_weights_{slug}.png")
        csv = out / f"layer_weights_{slug}.csv"
        weights[weights["where"] == where].to_csv(csv, index=False)
        rep.files += [png, csv]
        md += [f"### {where}", "", f"![layer weights {where}]({png.name})", "",
               _md_table(["stack", "method", "runs x folds", "uniform", "largest mean weights", "largest per fold"],
                         lines), ""]
    md += [f"The softmax weights over layers of {learned} on each test fold, from each run's own metrics.json; "
           "mean over runs x folds. `uniform`: each layer's weight if all were equal: a fusion that mixes each stack "
           "on its own, as `weighted-sum` and `scalar-mix` over enc+dec do, has weights summing to 1 per stack, the "
           "layer adapter one softmax over all its layers (so its uniform cells are paler in the heat map). "
           "Long form: `layer_weights_<condition>.csv`.", ""]
    if unread:
        md += [f"Not shown: {_unread_text(unread)}.", ""]
    return md, None


def _unread_text(unread: dict[str, list[str]]) -> str:
    """Why runs' weights were not read, with the way out where there is one."""
    from pipeline.report.layer_weights import NO_WEIGHTS, NOT_FOUND, NOT_THIS_RUN

    why = {NOT_FOUND: "no metrics.json found (run dir not here: `--records DIR` adds a records folder)",
           NOT_THIS_RUN: "the metrics.json found is another run's (other key, fusion, seed, cache or scores)",
           NO_WEIGHTS: "metrics.json without layer weights (a run from before they were recorded)"}
    parts = []
    for reason, names in unread.items():
        shown = ", ".join(names[:5]) + (f" (+{len(names) - 5})" if len(names) > 5 else "")
        parts.append(f"{len(names)} run(s) with {why[reason]}: {shown}")
    return "; ".join(parts)


def _seed_table(order: list[tuple[str, str]], cells: dict) -> list[str]:
    """Cells of two or more seeds: the spread of the seeds' own (fold-pooled) scores."""
    rows = [[stack, method, w, str(cell.seeds_uar.n), str(cell.seeds_uar.folds or "?"), cell.seeds_uar.fmt(),
             cell.seeds_f1.fmt()]
            for stack, method in order for w, cell in cells[(stack, method)].items() if cell.seeds_uar]
    if not rows:
        return []
    return ["### Across seeds", "",
            _md_table(["stack", "method", "condition", "seeds", "folds", "UAR", "F1"], rows), "",
            "Each seed's score is its mean over the test folds that every seed of the cell scored (`folds`; a "
            "seed scored on other folds would differ by their difficulty), then mean ± sample std over the "
            "seeds: how much a result moves with the seed alone (`nser-report --compare A B` tests a difference).",
            ""]


def _snr(df: pd.DataFrame, base: Path, out: Path, rep: Report) -> tuple[list[str], str | None]:
    md = ["## SNR robustness (paper Table V)", ""]
    groups = agg.snr_groups(df)
    if not groups:
        return md, "no noise type has finished runs at two or more SNRs"
    for label, runs in groups.items():
        order, cells = agg.method_cells(runs.assign(where=runs["snr_db"].map(_snr_label)))
        methods = [f"{s} {m}" for s, m in order]
        snrs = sorted({w for k in order for w in cells[k]}, key=_snr_sort)
        md += [f"### {label}", ""]
        long, scores = [], []
        for attr, name in (("uar", "UAR"), ("f1", "F1")):
            rows = []
            for snr in snrs:
                row = [snr]
                for key, method in zip(order, methods):
                    cell = cells[key].get(snr)
                    row.append(getattr(cell, attr).marked() + (f" ({cell.note})" if cell and cell.note else "")
                               if cell else "")
                    if cell:
                        score = getattr(cell, attr)
                        scores.append(score)
                        long.append({"snr": snr, "method": method, "metric": name, "mean": score.mean,
                                     "std": score.std, "n": score.n, "note": cell.note})
                rows.append(row)
            md += [f"{name}:", "", _md_table(["SNR"] + methods, rows), ""]
        md += n_note(scores)
        curves = {f"{s} {m}": {float(w.split()[0]): c for w, c in cells[(s, m)].items() if w != "clean"}
                  for s, m in order}
        png = plots.snr_plot({k: v for k, v in curves.items() if v}, label, out / f"snr_{_slug(label)}.png")
        csv = out / f"snr_{_slug(label)}.csv"
        pd.DataFrame(long).to_csv(csv, index=False)
        rep.files += [png, csv]
        md += [f"![SNR {label}]({png.name})", ""]
    return md, None


def _snr_label(snr: float) -> str:
    return "clean" if pd.isna(snr) else f"{snr:g} dB"


def _snr_sort(label: str) -> float:
    return math.inf if label == "clean" else float(label.split()[0])


def _confusions(df: pd.DataFrame, base: Path, out: Path, rep: Report) -> tuple[list[str], str | None]:
    md = ["## Confusion matrices, best method per condition (paper Fig. 5)", ""]
    best = agg.best_cells(df)
    if not best:
        return md, "no finished run with a confusion matrix"
    rows = []
    for where, cell in best.items():
        classes = agg.class_names(cell.runs.iloc[0], base, len(cell.confusion))
        title = f"{where}: {cell.stack} {cell.method} (UAR {100 * cell.uar.mean:.1f}%, n={cell.uar.n})"
        png = plots.confusion_plot(cell.confusion, classes, title, out / f"confusion_{_slug(where)}.png")
        rep.files.append(png)
        keys = [str(k) for k in cell.runs["run_key"] if k]
        rows.append([where, cell.stack, cell.method, cell.uar.marked(), str(cell.uar.n),
                     ", ".join(keys[:3]) + (f" (+{len(keys) - 3})" if len(keys) > 3 else ""),
                     f"![confusion {where}]({png.name})"])
    md += [_md_table(["condition", "stack", "method", "UAR", "n (runs x folds)", "runs",
                      "matrix (% of true class, counts)"], rows), "",
           "Per condition, the method (a fusion table cell) with the best pooled test UAR among those that pooled "
           "all their scores; its confusion matrix summed over the cell's runs and folds.", ""]
    return md, None


def _wer_vs_f1(df: pd.DataFrame, base: Path, out: Path, rep: Report) -> tuple[list[str], str | None]:
    """Per method, macro-F1 against the ASR word error rate of each condition's cache, with
    Pearson's r over conditions: does emotion recognition fail where recognition of words does?"""
    from scipy.stats import pearsonr

    from pipeline.asr_metrics import asr_metrics
    from pipeline.errors import NserError

    md = ["## ASR word error rate vs emotion macro-F1 (paper Fig. 6)", ""]
    runs = agg.done(df)
    if "cache" not in runs.columns or runs["cache"].nunique() < 3:
        return md, "fewer than three caches (conditions) with finished runs"
    rates, unscored = {}, []
    for cache in runs["cache"].dropna().unique():
        try:
            m = asr_metrics(str(cache))
            rates[cache] = (m.value, m.metric)
        except (NserError, OSError) as exc:
            unscored.append(f"`{cache}`: {str(exc)[:120]}")
    if len(rates) < 3:
        return md, "fewer than three caches could be scored for WER" + (f" ({'; '.join(unscored)})" if unscored else "")
    points: dict[str, list[tuple[float, float, str]]] = {}
    for (stack, method), g in runs.groupby(["stack", "method"], sort=False):
        # the point is the fusion table's cell (a `where`: one condition's data, whatever paths its
        # runs recorded, e.g. pooled tables of two machines): its (seed, fold) scores pooled, x the
        # WER of a cache of that data found here
        for where, gw in g.groupby("where", sort=False):
            scored = [c for c in dict.fromkeys(gw["cache"]) if c in rates]
            if not scored:
                continue
            for suffix, part in agg.split_settings(gw):
                points.setdefault(f"{stack} {method}{suffix}", []).append(
                    (rates[scored[0]][0], agg.pooled(part, "macro_f1").mean, str(where)))
    rows, long = [], []
    for method, pts in points.items():
        r, p = pearsonr([x for x, _, _ in pts], [y for _, y, _ in pts]) if len(pts) >= 3 else (math.nan, math.nan)
        rows.append([method, str(len(pts)), f"{r:.3f}" if not math.isnan(r) else "", f"{p:.3g}" if not math.isnan(p) else ""])
        long += [{"method": method, "where": w, "wer": x, "macro_f1": y} for x, y, w in pts]
    metric = next(iter(rates.values()))[1].upper()
    png = plots.wer_f1_plot(points, metric, out / "wer_vs_f1.png")
    csv = out / "wer_vs_f1.csv"
    pd.DataFrame(long).to_csv(csv, index=False)
    rep.files += [png, csv]
    md += [f"![{metric} vs macro-F1]({png.name})", "",
           _md_table(["method", "conditions", "Pearson r", "p"], rows), "",
           f"{metric}: Whisper's greedy hypotheses stored in each cache against the transcripts "
           f"(`nser cache asr-metrics`); F1: the method's pooled score on that cache, as in the fusion table. "
           f"Long form: [{csv.name}]({csv.name})."
           + (f" Not scored: {'; '.join(unscored)}." if unscored else ""), ""]
    return md, None


def _cell_text(value) -> str:
    """A table cell's text; an empty csv cell (read back as NaN, or NA) is empty, not "nan"."""
    return "" if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else str(value)


def _failures(df: pd.DataFrame) -> list[str]:
    bad = df[df["status"] != "done"]
    if bad.empty:
        return []
    rows = [[_cell_text(r.get("run_key")), str(r["status"]), r["where"], r["fusion"], r["layers"],
             _cell_text(r.get("error")).replace("|", "\\|")[:160]] for _, r in bad.iterrows()]
    return ["## Unfinished runs", "", "Not in any section above; rerun the grid to retry them.", "",
            _md_table(["run", "status", "condition", "fusion", "layers", "error"], rows), ""]
