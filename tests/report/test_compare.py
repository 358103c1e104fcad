"""Seeds in the report and `nser-report --compare`, on results tables written by the grid's own
code (results_frame / write_results) with known per-fold numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from pipeline.cli.report import report_command
from pipeline.grid.runner import results_frame, write_results
from pipeline.report.aggregate import ReportError, load_results, method_cells
from pipeline.report.build import build_report
from pipeline.report.compare import compare_methods

# fusion -> seed -> fold -> UAR; l-adapter beats mean by 0.01..0.09 on every pair
MEAN = {s: {f: 0.50 + 0.1 * s + 0.01 * int(f) for f in "01234"} for s in range(3)}
ADAPTER = {s: {f: v + 0.01 * (1 + int(f) + 3 * s) / 1.5 for f, v in MEAN[s].items()} for s in range(3)}


def _row(fusion, seed, folds, validation="speaker-carve", stack="enc", layers="enc:all"):
    vals = list(folds.values())
    return {"run_key": f"{fusion}-{seed}-{stack}", "status": "done", "corpus": "iemocap", "condition": "babble_0dB",
            "model": "m", "fusion": fusion, "layers": layers, "stack": stack, "selection": layers, "seed": seed,
            "uar": np.mean(vals), "uar_std": np.std(vals), "macro_f1": np.mean(vals) - 0.02, "macro_f1_std": 0.0,
            "fold_uar": json.dumps(folds), "fold_macro_f1": json.dumps({f: v - 0.02 for f, v in folds.items()}),
            "validation": validation}


def _table(tmp_path, rows):
    write_results(results_frame(rows), tmp_path)
    return tmp_path


@pytest.fixture
def grid(tmp_path):
    rows = [_row("mean", s, MEAN[s]) for s in range(3)] + [_row("l-adapter", s, ADAPTER[s]) for s in (2, 0, 1)]
    rows.append(_row("attention", 0, MEAN[0]))  # one seed: no spread across seeds
    return _table(tmp_path, rows)


def test_cells_of_several_seeds_get_the_spread_of_the_seeds_scores(grid):
    df, _ = load_results(grid)
    _, cells = method_cells(df)
    mean = cells[("enc", "mean")]["babble_0dB"]
    # seeds' fold-pooled UARs are 0.52, 0.62, 0.72: mean 0.62, sample std 0.1
    assert mean.seeds_uar.n == 3 and mean.seeds_uar.mean == pytest.approx(0.62)
    assert mean.seeds_uar.std == pytest.approx(0.1) and mean.uar.n == 15
    assert cells[("enc", "attention")]["babble_0dB"].seeds_uar is None
    rep = build_report(grid, grid / "report")
    text = rep.path.read_text()
    assert "### Across seeds" in text and "| enc | mean | babble_0dB | 3 | 5 | 62.00 ± 10.00 | 60.00 ± 10.00 |" in text
    assert "| enc | attention |" not in text.split("### Across seeds")[1].split("\n## ")[0]
    assert "Validation protocol (epoch choice): speaker-carve." in text
    assert "Conditions with results: babble_0dB (test folds 0, 1, 2, 3, 4; seeds 0, 1, 2)." in text
    long = (grid / "report" / "fusion_comparison.csv").read_text()
    assert "seeds_mean" in long.splitlines()[0]


def test_the_spread_across_seeds_is_over_the_folds_every_seed_scored(tmp_path):
    """Seed 1 scored fold 0 only: each seed's score is its fold-0 score (the folds they share), not
    seed 0's five-fold mean against seed 1's one fold, which would be fold difficulty, not seed."""
    rows = [_row("mean", 0, MEAN[0]), _row("mean", 1, {"0": MEAN[1]["0"]})]
    df, _ = load_results(_table(tmp_path, rows))
    seeds = method_cells(df)[1][("enc", "mean")]["babble_0dB"].seeds_uar
    assert (seeds.n, seeds.folds) == (2, 1)
    assert seeds.mean == pytest.approx((MEAN[0]["0"] + MEAN[1]["0"]) / 2)
    assert seeds.std == pytest.approx(np.std([MEAN[0]["0"], MEAN[1]["0"]], ddof=1))
    rows = [_row("mean", 0, {"0": 0.5}), _row("mean", 1, {"1": 0.6})]  # no fold in common: no spread
    df, _ = load_results(_table(tmp_path, rows))
    assert method_cells(df)[1][("enc", "mean")]["babble_0dB"].seeds_uar is None


def test_other_validation_protocols_are_other_methods(tmp_path):
    rows = [_row("mean", s, MEAN[s]) for s in range(2)] + [_row("mean", 0, ADAPTER[0], validation="next-fold")]
    df, _ = load_results(_table(tmp_path, rows))
    order, cells = method_cells(df)
    assert order == [("enc", "mean (next-fold)"), ("enc", "mean (speaker-carve)")]
    assert cells[("enc", "mean (speaker-carve)")]["babble_0dB"].seeds_uar.n == 2


def test_a_layer_sweep_under_two_validation_protocols_is_two_sweeps(tmp_path):
    """Single-layer runs of one layer, seed and fold under two protocols are two curves and two rows,
    not one cell scoring that fold twice (which the report refuses)."""
    rows = [{**_row("single", 0, {"0": 0.6 + 0.05 * layer + bump}, validation=validation, layers=f"enc:{layer}"),
             "run_key": f"single-{layer}-{validation}"}
            for layer in (3, 4) for validation, bump in (("speaker-carve", 0.0), ("none", 0.01))]
    grid = _table(tmp_path, rows)
    df, _ = load_results(grid)
    _, cells = method_cells(df)
    assert cells[("enc", "single (none), last")]["babble_0dB"].uar.mean == pytest.approx(0.81)
    assert cells[("enc", "single (speaker-carve), last")]["babble_0dB"].uar.mean == pytest.approx(0.80)
    assert all(c["babble_0dB"].uar.n == 1 for k, c in cells.items())
    text = build_report(grid, grid / "report").path.read_text()
    assert "### babble_0dB (none)" in text and "### babble_0dB (speaker-carve)" in text


def test_compare_pairs_condition_and_fold_with_seeds_averaged(grid):
    """Seeds share each fold's speakers: a fold is one pair, its seeds' scores averaged, so three
    seeds of the same five folds give n = 5, not 15 (which would shrink p without new evidence)."""
    df, _ = load_results(grid)
    result = compare_methods(df, "l-adapter", "mean")
    a = [np.mean([ADAPTER[s][f] for s in range(3)]) for f in "01234"]
    b = [np.mean([MEAN[s][f] for s in range(3)]) for f in "01234"]
    assert result.n == 5 and result.mean_diff == pytest.approx(np.mean(np.subtract(a, b)))
    assert result.t_p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert result.wilcoxon_p == pytest.approx(stats.wilcoxon(np.subtract(a, b)).pvalue)
    assert result.wilcoxon_p == pytest.approx(0.0625)  # 5 of 5 pairs favour l-adapter: the smallest p of n = 5
    out = CliRunner().invoke(report_command, [str(grid), "--compare", "l-adapter", "mean"])
    assert out.exit_code == 0, out.output
    assert "n = 5 pairs (3 seed(s) averaged per pair; babble_0dB)" in out.output, out.output
    assert "mean difference (A - B) = +" in out.output
    assert f"Wilcoxon signed-rank p = {result.wilcoxon_p:.4g}" in out.output
    assert "A ahead on 5 of 5 pairs, behind on 0, level on 0" in out.output
    per_pair = "; ".join(f"babble_0dB fold {f} {100 * (x - y):+.1f}" for f, x, y in zip("01234", a, b))
    assert f"A - B per pair (points): {per_pair}" in out.output, out.output
    # a fold only one seed of both ran is a pair of that seed alone
    one = compare_methods(df[(df["seed"] == 0) | (df["fusion"] == "attention")], "l-adapter", "mean")
    assert one.n == 5 and set(one.pairs["seeds"]) == {1}


def test_an_unfinished_caches_hash_is_read_as_text(tmp_path):
    """A partial-cache hash that looks like a number (leading zero, 1234e5) is the same label from
    the CSV and the parquet, so pooling the two files of one grid never splits a run's column."""
    rows = [{**_row("mean", 0, MEAN[0]), "cache_identity": "0123456789abcdef", "partial": "0123456789012345"},
            {**_row("l-adapter", 0, MEAN[0]), "cache_identity": "0123456789abcdef", "partial": "1234567e89012345"},
            {**_row("attention", 0, MEAN[0]), "cache_identity": "0123456789abcdef", "partial": ""}]
    grid = _table(tmp_path, rows)
    for source in (grid / "results.csv", grid / "results.parquet"):
        df, _ = load_results(source)
        assert set(df["where"]) == {"babble_0dB [cache 01234567, partial 01234567]", "babble_0dB [cache 01234567]",
                                    "babble_0dB [cache 01234567, partial 1234567e]"}, source


def test_compare_never_pairs_other_data_of_a_condition(tmp_path):
    """Two extractions of one condition (other cache identities) are other data: a method run on one
    and a method run on the other share no pair, and the fusion table shows them in two columns."""
    rows = [{**_row("mean", 0, MEAN[0]), "cache_identity": "aaaaaaaa11"},
            {**_row("l-adapter", 0, ADAPTER[0]), "cache_identity": "bbbbbbbb22"}]
    grid = _table(tmp_path, rows)
    df, _ = load_results(grid)
    with pytest.raises(ReportError, match="share 0"):
        compare_methods(df, "l-adapter", "mean")
    _, cells = method_cells(df)
    assert list(cells[("enc", "mean")]) == ["babble_0dB [cache aaaaaaaa]"]
    assert list(cells[("enc", "l-adapter")]) == ["babble_0dB [cache bbbbbbbb]"]


def test_compare_refuses_what_it_cannot_pair(grid, tmp_path):
    df, _ = load_results(grid)
    with pytest.raises(ReportError, match="no finished runs of method 'nope'"):
        compare_methods(df, "nope", "mean")
    with pytest.raises(ReportError, match="share 0 .*needs at least 2"):  # mean's runs on other seeds
        compare_methods(df.assign(seed=df["seed"].where(df["fusion"] != "mean", df["seed"] + 10)), "l-adapter", "mean")
    with pytest.raises(ReportError, match="l-adapter on babble_0dB: two runs score seed 0, test fold 0 .*runs of other settings"):
        compare_methods(df.assign(seed=0), "l-adapter", "mean")
    rows = [_row("mean", 0, MEAN[0], stack=s, layers=l) for s, l in (("enc", "enc:all"), ("dec", "dec:all"))]
    rows.append(_row("l-adapter", 0, ADAPTER[0]))
    df, _ = load_results(_table(tmp_path, rows))
    with pytest.raises(ReportError, match="runs on stacks"):
        compare_methods(df, "l-adapter", "mean")
    assert compare_methods(df, "l-adapter", "enc mean").n == 5
    out = CliRunner().invoke(report_command, [str(tmp_path), "--compare", "l-adapter", "mean"])
    assert out.exit_code != 0 and "runs on stacks" in out.output


def test_compare_says_which_scores_had_no_partner(tmp_path):
    """Pooling a grid whose folds are not all run yet pairs fewer scores than a method has: the
    comparison names the ones it left out, so n is not read as every fold."""
    rows = [_row("mean", 0, {f: MEAN[0][f] for f in "012"}), _row("l-adapter", 0, ADAPTER[0])]
    df, _ = load_results(_table(tmp_path, rows))
    result = compare_methods(df, "l-adapter", "mean")
    assert result.n == 3 and list(result.pairs["fold"]) == ["0", "1", "2"]
    assert result.mean_diff == pytest.approx(np.mean([ADAPTER[0][f] - MEAN[0][f] for f in "012"]))
    assert result.unpaired.to_dict("records") == [
        {"method": "l-adapter", "where": "babble_0dB", "seed": 0, "fold": f} for f in "34"]
    out = CliRunner().invoke(report_command, [str(tmp_path), "--compare", "l-adapter", "mean"])
    assert out.exit_code == 0, out.output
    assert ("left out, no mean score to pair: 2 of l-adapter's (babble_0dB fold 3 seed 0; babble_0dB fold 4 seed 0)"
            in out.output), out.output
    assert "left out" not in compare_methods(df[df["fusion"] != "attention"], "l-adapter", "l-adapter").describe()


def test_holm_adjusts_in_step_down_order_and_keeps_nan():
    from pipeline.report.compare import holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3x0.01; 2x0.03; max(1x0.04, 0.06)
    assert holm([0.5, float("nan"), 0.2]) == pytest.approx([0.5, float("nan"), 0.4], nan_ok=True)
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_several_pairs_end_with_one_table_holm_adjusted(grid):
    pairs = [("l-adapter", "mean"), ("l-adapter", "attention")]  # attention: seed 0 only, 5 pairs
    res = CliRunner().invoke(report_command, [str(grid)] + [x for a, b in pairs for x in ("--compare", a, b)])
    assert res.exit_code == 0, res.output
    done = [compare_methods(load_results(grid)[0], a, b) for a, b in pairs]
    assert res.output.count("paired on condition x test fold") == 2
    table = res.output.split("| A | B |")[1]
    low, high = sorted(c.t_p for c in done)
    holm = {low: min(1.0, 2 * low), high: max(min(1.0, 2 * low), high)}  # Holm for two tests
    assert all(0 < c.t_p < 0.05 for c in done)
    for c in done:
        ahead = int(((c.pairs["a"] - c.pairs["b"]) > 0).sum())
        row = (f"| {c.method_a} | {c.method_b} | {c.n} | {100 * c.mean_diff:+.1f} | {ahead} of {c.n} | "
               f"{c.t_p:.2g} | {c.wilcoxon_p:.2g} | {holm[c.t_p]:.2g} |")
        assert row in table, (row, table)
    # one pair: the report as before, no table
    res = CliRunner().invoke(report_command, [str(grid), "--compare", "l-adapter", "mean"])
    assert res.exit_code == 0 and "| A | B |" not in res.output
    # a bad pair is refused before any result is printed
    res = CliRunner().invoke(report_command, [str(grid), "--compare", "l-adapter", "mean", "--compare", "nope", "mean"])
    assert res.exit_code != 0 and "no finished runs of method 'nope'" in res.output and "paired" not in res.output
