"""The report's per-test-fold table and validation picks, on results tables written by the grid's
own code (results_frame / write_results) with known per-fold numbers."""

from __future__ import annotations

import json

import pytest

from pipeline.grid.runner import results_frame, write_results
from pipeline.report.aggregate import load_results
from pipeline.report.build import build_report
from pipeline.report.per_fold import chosen_layers, per_fold_scores, validation_picks

# layer -> fold -> test UAR; enc3 is the best on folds 0 and 2, enc4 on fold 1
SINGLE = {3: {"0": 0.80, "1": 0.60, "2": 0.75}, 4: {"0": 0.70, "1": 0.90, "2": 0.75}}


def _row(fusion, layers, folds, seed=0, best_layer=None, stack="enc"):
    return {"run_key": f"{fusion}-{layers}-{seed}", "status": "done", "corpus": "emodb", "condition": "clean",
            "model": "m", "fusion": fusion, "layers": layers, "stack": stack, "selection": layers, "seed": seed,
            "uar": sum(folds.values()) / len(folds), "macro_f1": 0.5, "best_layer": best_layer,
            "fold_uar": json.dumps(folds), "fold_macro_f1": json.dumps({f: v - 0.02 for f, v in folds.items()}),
            "validation": "speaker-carve"}


def _table(tmp_path, rows):
    write_results(results_frame(rows), tmp_path)
    return load_results(tmp_path)[0]


def test_chosen_layers_reads_both_forms_of_the_results_column():
    assert chosen_layers("enc3", ["0", "1"]) == {"0": "enc3", "1": "enc3"}
    assert chosen_layers("0:enc3, 1:enc4", ["0", "1"]) == {"0": "enc3", "1": "enc4"}
    assert chosen_layers(None, ["0"]) == {} and chosen_layers(float("nan"), ["0"]) == {}


def test_per_fold_scores_average_seeds_per_fold_and_name_the_picked_layer(tmp_path):
    rows = [_row("single", f"enc:{k}", v) for k, v in SINGLE.items()]
    # `best` over the three folds in one run (folds disagree) and, seed 1, in per-fold runs
    rows.append(_row("best", "enc:blocks", {"0": 0.80, "1": 0.60, "2": 0.75}, best_layer="0:enc3, 1:enc3, 2:enc4"))
    rows += [{**_row("best", "enc:blocks", {f: SINGLE[4][f]}, seed=1, best_layer="enc4"), "run_key": f"b1-{f}"}
             for f in "012"]
    rows += [_row("mean", "enc:blocks", {"0": 0.70, "1": 0.72, "2": 0.74}, seed=s) for s in (0, 1)]
    scores = per_fold_scores(_table(tmp_path, rows))
    best = scores[scores["method"] == "best"].set_index("fold")
    assert list(best.index) == ["0", "1", "2"] and set(best["n_seeds"]) == {2}
    assert best.loc["0", "uar"] == pytest.approx((0.80 + 0.70) / 2)
    assert best["chosen"].to_dict() == {"0": "enc3/enc4", "1": "enc3/enc4", "2": "enc4"}
    mean = scores[scores["method"] == "mean"].set_index("fold")
    assert mean["uar"].to_dict() == pytest.approx({"0": 0.70, "1": 0.72, "2": 0.74})
    assert (mean["chosen"] == "").all() and (mean["n_seeds"] == 2).all()
    single = scores[scores["method"] == "single [enc:4]"].set_index("fold")
    assert single["macro_f1"].to_dict() == pytest.approx({f: v - 0.02 for f, v in SINGLE[4].items()})


def test_validation_picks_compare_the_pick_with_the_folds_best_single_layer(tmp_path):
    rows = [_row("single", f"enc:{k}", v) for k, v in SINGLE.items()]
    rows.append(_row("best", "enc:blocks", {"0": 0.80, "1": 0.60, "2": 0.75}, best_layer="0:enc3, 1:enc3, 2:enc4"))
    picks = validation_picks(per_fold_scores(_table(tmp_path, rows))).set_index("fold")
    assert picks["chosen"].to_dict() == {"0": "enc3", "1": "enc3", "2": "enc4"}
    # fold 2 ties (0.75): picking either is picking the fold's best
    assert picks["test_best"].to_dict() == {"0": "enc3", "1": "enc4", "2": "enc4"}
    assert picks["hit"].to_dict() == {"0": True, "1": False, "2": True}
    assert picks.loc["1", "test_best_uar"] == pytest.approx(0.90)


def test_report_writes_the_per_fold_table_and_skips_it_for_one_fold(tmp_path):
    rows = [_row("single", f"enc:{k}", v) for k, v in SINGLE.items()]
    rows.append(_row("best", "enc:blocks", {"0": 0.80, "1": 0.60, "2": 0.75}, best_layer="0:enc3, 1:enc3, 2:enc4"))
    rows.append(_row("l-adapter", "enc:blocks", {"0": 0.85, "1": 0.70}))
    _table(tmp_path / "g", rows)
    rep = build_report(tmp_path / "g", tmp_path / "out")
    text = rep.path.read_text()
    assert "per_fold" in rep.written and (tmp_path / "out" / "per_fold_clean.csv") in rep.files
    table = text.split("## Per test fold")[1].split("\n## ")[0]
    assert "| enc | best | 80.0 (enc3) | 60.0 (enc3) | **75.0 (enc4)** | 71.7 |" in table, table
    assert "| enc | l-adapter | **85.0** | 70.0 |  | 77.5 [2 folds] |" in table, table
    assert ("`enc best`: validation picked the test fold's best single layer on 2 of 3 folds (0, 2); not on "
            "fold 1: enc3 60.0 vs enc4 90.0.") in table, table
    one = [_row("single", "enc:3", {"0": 0.8}), _row("mean", "enc:blocks", {"0": 0.7})]
    _table(tmp_path / "one", one)
    rep = build_report(tmp_path / "one", tmp_path / "out1")
    assert rep.skipped["per_fold"] == "no condition has scores on two or more test folds"
