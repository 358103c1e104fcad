"""nser-report on synthetic results tables: which sections, files and numbers it writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import zarr
from click.testing import CliRunner

from pipeline.report.aggregate import load_results, method_cells, normalize, pooled
from pipeline.report.build import build_report
from pipeline.cli.report import report_command
from pipeline.train.run_metrics import RunMetrics
from tests.helpers import make_cache

CLASSES = ["neutral", "happy", "sad", "angry"]


def _row(rng, condition, snr, fusion, layers, stack, selection, seed=0, status="done"):
    folds = {f: float(np.clip(rng.normal(0.6, 0.05), 0, 1)) for f in "012"}
    cm = rng.integers(0, 20, size=(4, 4)) + np.eye(4, dtype=int) * 30
    return {"run_key": f"k{rng.integers(1 << 40):x}", "status": status, "cache": f"c/{condition}.zarr",
            "cache_identity": "0" * 16, "corpus": "emodb", "condition": condition,
            "noise_type": None if snr is None else "babble", "snr_db": snr, "model": "bundled:base",
            "fusion": fusion, "layers": layers, "n_layers": selection.count(",") + 1, "best_layer": None,
            "seed": seed, "epochs": 2, "uar": np.mean(list(folds.values())) if status == "done" else np.nan,
            "uar_std": np.std(list(folds.values())) if status == "done" else np.nan,
            "macro_f1": np.mean(list(folds.values())) - 0.01 if status == "done" else np.nan,
            "macro_f1_std": 0.02, "fold_uar": json.dumps(folds) if status == "done" else None,
            "fold_macro_f1": json.dumps({f: v - 0.01 for f, v in folds.items()}) if status == "done" else None,
            "confusion": json.dumps(cm.tolist()) if status == "done" else None, "seconds": 1.0,
            "code_version": "test", "stack": stack, "selection": selection, "folds": "all",
            "classes": json.dumps(CLASSES) if status == "done" else None, "run_dir": None,
            "error": None if status == "done" else "NserError: boom"}


def synthetic(conditions=(("babble_-5dB", -5.0), ("babble_0dB", 0.0), ("babble_5dB", 5.0), ("clean", None)),
              layerwise=True, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for cond, snr in conditions:
        if layerwise:
            rows += [_row(rng, cond, snr, "single", f"{s}:{i}", s, f"{s}:{i}") for s in ("enc", "dec") for i in range(7)]
        for fusion in ("mean", "weighted-sum", "l-adapter"):
            for layers, stack, sel in (("enc:all", "enc", "enc:0,1,2,3,4,5,6"), ("dec:all", "dec", "dec:0,1,2,3,4,5,6"),
                                       ("enc:all,dec:all", "enc+dec", "enc:0,1,2,3,4,5,6;dec:0,1,2,3,4,5,6")):
                rows += [_row(rng, cond, snr, fusion, layers, stack, sel, seed=s) for s in (0, 1)]
    rows.append(_row(rng, conditions[0][0], conditions[0][1], "attention", "enc:all", "enc", "enc:0", status="failed"))
    return pd.DataFrame(rows)


WRONG = {"babble_-5dB": 1.0, "babble_0dB": 2 / 3, "babble_5dB": 1 / 3, "clean": 0.0}  # share of wrong hypotheses


def _cache_with_wer(path, wrong: float):
    """A real cache whose stored hypotheses miss the one-word transcript in a `wrong` share of utterances."""
    make_cache(path)
    col = zarr.open_group(str(path), mode="r+")["utterances/hypothesis"]
    n = col.shape[0]
    col[:] = np.array(["h" if k < round(wrong * n) else "t" for k in range(n)], dtype=np.dtypes.StringDType())
    return path


def test_full_report_sections_and_files(tmp_path):
    df = synthetic()
    caches = {c: str(_cache_with_wer(tmp_path / "c" / f"{c}.zarr", wrong)) for c, wrong in WRONG.items()}
    df["cache"] = df["condition"].map(caches)
    # one seed scored on one fold only: the point must be the cell's pooled score, not a mean of run means
    one = df.index[(df["fusion"] == "l-adapter") & (df["stack"] == "enc") & (df["condition"] == "babble_0dB")
                   & (df["seed"] == 1)][0]
    df.loc[one, ["fold_uar", "fold_macro_f1", "uar", "macro_f1"]] = ['{"0": 0.9}', '{"0": 0.1}', 0.9, 0.1]
    df.loc[one, "cache"] = "/another/machine/babble_0dB.zarr"  # the same data, recorded elsewhere
    df.to_csv(tmp_path / "results.csv", index=False)
    rep = build_report(tmp_path / "results.csv", tmp_path / "rep")
    assert rep.written == ["layerwise", "fusions", "per_fold", "snr", "confusion", "wer_vs_f1", "paper_iv", "paper_v",
                           "fig5"]
    # a hand-made table has no run dirs to read learned layer weights from: said, with the way out
    assert list(rep.skipped) == ["layer_weights"] and "--records" in rep.skipped["layer_weights"]
    wer = pd.read_csv(tmp_path / "rep" / "wer_vs_f1.csv")
    assert set(wer["method"]) >= {"enc l-adapter", "enc+dec weighted-sum"}
    cells = pd.read_csv(tmp_path / "rep" / "fusion_comparison.csv")
    cells = cells[cells["metric"] == "f1"].assign(method=lambda c: c["stack"] + " " + c["method"])
    f1 = cells.set_index(["method", "where"])["mean"]
    for _, row in wer.iterrows():
        assert row["wer"] == pytest.approx(WRONG[row["where"]])
        if (row["method"], row["where"]) in f1.index:  # the fusions' cells (single layers are curves there)
            assert row["macro_f1"] == pytest.approx(f1[(row["method"], row["where"])]), (row["method"], row["where"])
    assert ("enc l-adapter", "babble_0dB") in set(zip(wer["method"], wer["where"]))
    assert "Pearson r" in rep.path.read_text() and "wer_vs_f1.png" in {p.name for p in rep.files}
    names = {p.name for p in rep.files}
    for cond in ("babble_-5dB", "babble_0dB", "babble_5dB", "clean"):
        assert {f"layerwise_{cond}.png", f"confusion_{cond}.png", f"per_fold_{cond}.csv"} <= names
    assert {"snr_babble.png", "snr_babble.csv", "fusion_comparison.csv"} <= names
    for p in rep.files:
        assert p.exists() and p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:4] == b"\x89PNG"
    md = rep.path.read_text()
    for heading in ("## Layer-wise performance (paper Fig. 3)", "## Fusion comparison (paper Table IV)",
                    "## SNR robustness (paper Table V)", "## Confusion matrices", "## Unfinished runs"):
        assert heading in md
    assert md.count("_Skipped") == 1 and "_Skipped: no finished run of" in md and "NserError: boom" in md
    for link in (part.split(")")[0] for part in md.split("](")[1:]):
        assert (tmp_path / "rep" / link).exists(), link
    # Table IV rows: single last/best per stack, then the fusions, encoder rows before decoder rows
    table = md.split("## Fusion comparison")[1].split("\n\n")[1].splitlines()
    assert table[0].startswith("| stack | method | babble_-5dB UAR | babble_-5dB F1 |")
    methods = [line.split(" | ")[:2] for line in table[2:]]
    assert methods[:5] == [["| enc", "single, last"], ["| enc", "single, best†"], ["| enc", "mean"],
                           ["| enc", "weighted-sum"], ["| enc", "l-adapter"]]
    assert ["| enc+dec", "l-adapter"] in methods and "(enc6)" in table[2]
    # Table V: rows SNR ascending, then the clean reference
    snr_md = md.split("## SNR robustness")[1].split("## Confusion")[0]
    rows = [ln.split(" | ")[0] for ln in snr_md.splitlines() if ln.startswith("| ") and not ln.startswith("| SNR")]
    assert rows == ["| -5 dB", "| 0 dB", "| 5 dB", "| clean"] * 2  # a UAR table, then an F1 table


def test_cell_pools_seeds_and_folds(tmp_path):
    df = synthetic(conditions=(("babble_0dB", 0.0),), layerwise=False)
    df.to_csv(tmp_path / "results.csv", index=False)
    loaded, base = load_results(tmp_path)
    assert base == tmp_path
    order, cells = method_cells(loaded)
    group = loaded[(loaded["fusion"] == "mean") & (loaded["stack"] == "enc")]
    values = [v for s in group["fold_uar"] for v in json.loads(s).values()]
    cell = cells[("enc", "mean")]["babble_0dB"]
    assert cell.uar.n == 6 and cell.uar.mean == pytest.approx(np.mean(values))
    assert cell.uar.std == pytest.approx(np.std(values))
    one = pooled(group.iloc[:1], "uar")
    assert one.mean == pytest.approx(group["uar"].iloc[0]) and one.std == pytest.approx(group["uar_std"].iloc[0])



def test_cells_pooling_fewer_folds_are_marked(tmp_path):
    """A grid finished in parts: one method's cell pools fewer (run, fold) scores than the others;
    the table says so in that cell and under the table, and not when every cell pools as many."""
    df = synthetic(conditions=(("babble_0dB", 0.0),), layerwise=False)
    df.to_csv(tmp_path / "whole.csv", index=False)
    build_report(tmp_path / "whole.csv", tmp_path / "whole")
    assert "[n=" not in (tmp_path / "whole" / "report.md").read_text()
    partial = df.drop(df.index[(df["fusion"] == "l-adapter") & (df["stack"] == "enc") & (df["seed"] == 1)])
    partial.to_csv(tmp_path / "partial.csv", index=False)
    build_report(tmp_path / "partial.csv", tmp_path / "partial")
    md = (tmp_path / "partial" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| enc | l-adapter"))
    assert row.count("[n=3]") == 2  # UAR and F1
    assert "[n=" not in next(line for line in md.splitlines() if line.startswith("| enc | mean"))
    assert "Cells pool different numbers of scores** (runs x folds, 3 to 6)" in md


def test_partial_results_skip_sections_with_reasons(tmp_path):
    df = synthetic(conditions=(("babble_0dB", 0.0),), layerwise=False)
    df = df.drop(columns=["classes"])  # class names then come from each run's metrics.json
    record = RunMetrics(uar=0.5, uar_std=0.0, macro_f1=0.5, macro_f1_std=0.0, confusion=[[1] * 4] * 4, folds={},
                        classes=["N", "H", "S", "A"], layers=["enc1"], fusion="mean", epochs=1, seed=0,
                        cache_identity="c", seconds=1.0)
    for key in df["run_key"]:
        (tmp_path / "runs" / key).mkdir(parents=True)
        (tmp_path / "runs" / key / "metrics.json").write_text(json.dumps(record.to_dict()))
    df.to_parquet(tmp_path / "results.parquet", index=False)
    res = CliRunner().invoke(report_command, [str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "skipped layerwise, layer_weights, snr" in res.output  # the hand-made metrics.json is another run's
    md = (tmp_path / "report" / "report.md").read_text()
    assert "_Skipped: no finished `single` runs" in md and "_Skipped: no noise type has finished runs" in md
    assert (tmp_path / "report" / "confusion_babble_0dB.png").exists()
    from pipeline.report import aggregate
    loaded, base = load_results(tmp_path)
    run = aggregate.best_cells(loaded)["babble_0dB"].runs.iloc[0]
    assert aggregate.class_names(run, base, 4) == ["N", "H", "S", "A"]


def test_bad_inputs_are_clear(tmp_path):
    res = CliRunner().invoke(report_command, [str(tmp_path)])
    assert res.exit_code == 1 and "neither results.parquet nor results.csv" in res.output
    pd.DataFrame({"fusion": ["mean"]}).to_csv(tmp_path / "results.csv", index=False)
    res = CliRunner().invoke(report_command, [str(tmp_path / "results.csv")])
    assert res.exit_code == 1 and "lack column(s)" in res.output


def test_whole_stacks_are_shown_by_fusion_name_with_or_without_the_embeddings():
    df = normalize(pd.DataFrame({"condition": "clean", "fusion": ["mean", "mean", "l-adapter", "mean"],
                                 "layers": ["enc:blocks", "enc:all,dec:blocks", "enc:blocks,dec:blocks", "enc:2-6"],
                                 "uar": 0.5, "macro_f1": 0.5}))
    assert list(df["method"]) == ["mean", "mean", "l-adapter", "mean [enc:2-6]"]


def test_wer_f1_labels_of_near_conditions_do_not_overlap(tmp_path):
    """Two conditions with almost the same WER and F1 (traffic and babble at 0 dB on full-length
    EmoDB) get their names on different sides; far-apart points keep the first place."""
    from pipeline.report.plots import LABEL_OFFSETS, label_offsets, wer_f1_plot

    xy = [(11.4, 92.3), (47.6, 79.2), (49.9, 80.1), (94.4, 61.4), (48.5, 79.6)]
    offsets = label_offsets(xy)
    assert offsets[0] == offsets[1] == offsets[3] == LABEL_OFFSETS[0]
    assert len({offsets[1], offsets[2], offsets[4]}) == 3
    pts = {"m": [(x / 100, y / 100, f"emodb/c{i}") for i, (x, y) in enumerate(xy)]}
    assert wer_f1_plot(pts, "WER", tmp_path / "w.png").stat().st_size > 0


def test_unfinished_runs_read_from_csv_show_no_nan(tmp_path):
    """A pending run's empty error cell comes back from a csv as NaN: the report shows it empty."""
    df = synthetic(conditions=(("babble_0dB", 0.0),), layerwise=False)
    pending = df.iloc[0].to_dict() | {"run_key": "feedfacefeedface", "status": "pending", "error": None,
                                      "uar": np.nan, "macro_f1": np.nan}
    pd.concat([df, pd.DataFrame([pending])]).to_csv(tmp_path / "results.csv", index=False)
    build_report(tmp_path / "results.csv", tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("| feedfacefeedface |"))
    assert "nan" not in line and line.endswith("|  |")
    assert "NserError: boom" in md  # the failed run keeps its error


def test_header_names_the_code_versions_of_the_runs(tmp_path):
    """Tables pooled from grid parts can mix code versions under one run key: the header says which."""
    df = synthetic(conditions=(("babble_0dB", 0.0),), layerwise=False)
    one = tmp_path / "one.csv"
    df.to_csv(one, index=False)
    build_report(one, tmp_path / "r1")
    assert "Code version of every finished run: `test` (18 runs)." in (tmp_path / "r1" / "report.md").read_text()
    df.loc[df.index[:5], "code_version"] = "0.1.0+gold"
    df.loc[df.index[5], "code_version"] = None  # a table from before versions were recorded
    two = tmp_path / "two.csv"
    df.to_csv(two, index=False)
    build_report(two, tmp_path / "r2")
    text = (tmp_path / "r2" / "report.md").read_text()
    assert "Code versions of the finished runs: `test` (12 runs), `0.1.0+gold` (5 runs), `unrecorded` (1 run)." in text
