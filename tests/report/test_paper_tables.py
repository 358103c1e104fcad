"""The paper's values as data, and nser-report's paper-layout tables on a small real grid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.report import report_command
from pipeline.grid.runner import run_grid
from pipeline.grid.spec import expand, parse_grid
from pipeline.report.aggregate import ReportError, load_results
from pipeline.report.paper_tables import corpus_model_groups, load_paper_values, proposed_confusions
from tests.helpers import Signal, row, write_cache

PAPER = Path(__file__).resolve().parents[3] / "shared" / "docs" / "paper.md"
VALUES = Path(__file__).resolve().parents[2] / "pipeline" / "report" / "paper_values.yaml"


def test_paper_values_follow_the_schema():
    tables = load_paper_values()
    assert set(tables) == {"iii", "iv", "v", "vi"}
    iv, v = tables["iv"], tables["v"]
    assert [r.label for r in iv.rows[:6]] == ["Last", "Best", "Mean", "Attention", "Scalar Mixing", "Weighted Sum"]
    assert [c.condition for c in iv.datasets["iemocap"][0].columns] == ["clean", "human_0dB", "park_0dB", "traffic_0dB"]
    assert [b.noise for b in v.datasets["iemocap"]] == ["human", "park", "traffic"]
    assert all(len(vals) == 13 for b in iv.datasets.values() for vals in [b[0].values])
    assert all(len(b.values) == 6 and len(b.columns) == 5 for b in v.datasets["iemocap"])
    # Table V's Whisper-Enc at 0 dB is Table IV's encoder weighted sum (the paper prints the same numbers)
    human = v.datasets["iemocap"][0]
    assert human.values["whisper-enc"][2] == iv.datasets["iemocap"][0].values["enc-weighted-sum"][1]


def _paper_line(start: str, label: str) -> list[float]:
    lines = PAPER.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(start))
    line = next(line for line in lines[i:] if label in line)
    return [float(x) for x in re.findall(r"\d+\.\d+", line)]


def test_values_match_the_paper_text():
    if not PAPER.exists():
        pytest.skip(f"{PAPER} is absent (the paper text lives beside the repo, not in it)")
    t = load_paper_values()
    iemocap_iv = t["iv"].datasets["iemocap"][0].values
    proposed = t["iv"].datasets["meld"][0].values["proposed"] + iemocap_iv["proposed"]
    assert _paper_line("TABLE IV:", "ALL\t<b>Proposed") == [x for pair in proposed for x in pair]
    assert _paper_line("TABLE IV:", "Encoder\tLast")[4:6] == iemocap_iv["enc-last"][1]  # Human: 61.96, 61.64
    traffic = t["v"].datasets["iemocap"][2]
    assert traffic.title == "IEMOCAP - Environment (Traffic)"
    assert _paper_line("<b>IEMOCAP - Environment (Traffic)", "HuBERT (FT)") == [x for p in traffic.values["hubert-ft"]
                                                                                  for x in p]



def test_the_command_offers_exactly_the_tables_the_values_file_holds():
    from pipeline.cli.report import report_command
    from pipeline.report import PAPER_TABLES

    assert tuple(yaml.safe_load(VALUES.read_text())["tables"]) == PAPER_TABLES
    option = next(p for p in report_command.params if p.name == "paper_tables")
    assert tuple(option.type.choices) == PAPER_TABLES


def test_a_broken_values_file_is_refused(tmp_path):
    raw = yaml.safe_load(VALUES.read_text())
    raw["tables"]["v"]["datasets"]["iemocap"][0]["values"]["proposed"].pop()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ReportError, match=r"row proposed: need one \[UAR, F1\] pair"):
        load_paper_values(bad)


CONDITIONS = (("clean", None, None), ("human_-5dB", "human", -5.0), ("human_0dB", "human", 0.0))


@pytest.fixture(scope="module")
def grid_out(tmp_path_factory) -> Path:
    """A 1-epoch grid of the paper's Whisper rows on three fake IEMOCAP caches (clean, human at -5 and 0 dB)."""
    root = tmp_path_factory.mktemp("paper_grid")
    caches = []
    for k, (cond, noise, snr) in enumerate(CONDITIONS):
        path = root / f"{cond}.zarr"

        def speaker_row(i: int) -> dict:
            fold = str((i // 2) % 3)
            return row(i, speaker=f"s{fold}", label="ab"[i % 2], fold=fold, transcript="t", hypothesis="h",
                       duration=None)

        write_cache(path, 18, rows=speaker_row, lengths=lambda rng, i: (6 + i % 5, 3 + i % 2),
                    signal=Signal("encoder", 1, {"b": 3.0}), seed=k, identity={"paper": cond},
                    corpus="iemocap", model="fake-whisper", condition=cond, noise_type=noise, snr_db=snr)
        caches.append(str(path))
    spec = parse_grid({"out": str(root / "out"), "caches": caches, "seeds": [0], "folds": ["0"],
                       "train": {"epochs": 1, "hidden": 8, "batch_size": 4, "lr": 0.01},
                       "subgrids": [{"fusions": ["weighted-sum"], "layers": ["enc:blocks"]},
                                    {"fusions": ["l-adapter"], "layers": ["enc:blocks,dec:blocks"]}]})
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        outcome = run_grid(expand(spec), spec.out, client=client, progress=False)
    assert set(outcome.table["status"]) == {"done"}
    return spec.out


def test_paper_layout_with_the_papers_values(grid_out, tmp_path):
    res = CliRunner().invoke(report_command, [str(grid_out), "--out", str(tmp_path), "--paper-table", "iv",
                                              "--paper-table", "v", "--paper-dataset", "iemocap"])
    assert res.exit_code == 0, res.output
    assert "paper_iv" in res.output and "fig5" in res.output
    results = pd.read_csv(grid_out / "results.csv")
    iv = pd.read_csv(tmp_path / "paper_table_iv.csv")
    # the paper's rows and columns; our cell, the paper's value and the difference side by side
    assert list(dict.fromkeys(iv["column"])) == ["IEMOCAP", "IEMOCAP (Human)", "Environment (Park)",
                                                 "Environment (Traffic)"]
    assert len(set(iv["row_id"])) == 13
    prop = iv[(iv["row_id"] == "proposed") & (iv["column"] == "IEMOCAP (Human)") & (iv["metric"] == "UAR")].iloc[0]
    ours = results[(results["fusion"] == "l-adapter") & (results["condition"] == "human_0dB")]["uar"].iloc[0]
    assert prop["ours"] == pytest.approx(100 * ours) and prop["paper"] == 68.79
    assert prop["diff"] == pytest.approx(100 * ours - 68.79)
    park = iv[(iv["column"] == "Environment (Park)") & (iv["row_id"] == "proposed")]
    assert park["ours"].isna().all() and park["paper"].tolist() == [73.00, 72.42]  # no park run: paper's alone
    assert iv[iv["row_id"] == "enc-mean"]["ours"].isna().all()  # the grid has no `mean` runs
    md = (tmp_path / "report.md").read_text()
    assert "| ALL | Proposed | " in md and f"/ 68.79 ({100 * ours - 68.79:+.2f})" in md
    # Table V: the three SSL baselines keep the paper's numbers; ours at -5 and 0 dB
    v = pd.read_csv(tmp_path / "paper_table_v.csv")
    human = v[v["block"] == "IEMOCAP - Human"]
    assert human[human["row_id"] == "wav2vec2-ft"]["ours"].isna().all()
    enc = human[(human["row_id"] == "whisper-enc") & (human["metric"] == "F1")].set_index("column")
    ws = results[(results["fusion"] == "weighted-sum") & (results["stack"] == "enc")].set_index("condition")
    assert enc.loc["SNR -5 dB", "ours"] == pytest.approx(100 * ws.loc["human_-5dB", "macro_f1"])
    assert enc.loc["SNR -5 dB", "paper"] == 60.77 and pd.isna(enc.loc["SNR 10 dB", "ours"])
    png = tmp_path / "fig5_iemocap_fake-whisper_IEMOCAP_-_Human.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and f"]({png.name})" in md


def test_fig5_never_sums_the_confusions_of_other_data(grid_out, tmp_path):
    """A second extraction of human_0dB with its own l-adapter run: Table V prints the two as two rows,
    so Fig. 5 draws two panels, each its own run's matrix, never their sum (a matrix of neither)."""
    table = pd.read_csv(grid_out / "results.csv", dtype={"run_key": str, "cache_identity": str})
    hit = (table["fusion"] == "l-adapter") & (table["condition"] == "human_0dB")
    other = table[hit].assign(run_key="other", cache_identity="ffffffff00", confusion="[[1, 0], [0, 9]]")
    pd.concat([table, other]).to_csv(tmp_path / "results.csv", index=False)
    df, base = load_results(tmp_path / "results.csv")
    [(_, _, runs)] = corpus_model_groups(df, "iemocap")
    tables = load_paper_values()
    panels, _ = proposed_confusions(runs, tables["v"], tables["v"].datasets["iemocap"][0], base)
    at_0db = {label: matrix.tolist() for label, matrix in panels if label.startswith("SNR 0 dB")}
    ident = table.loc[hit, "cache_identity"].iloc[0][:8]
    assert at_0db == {f"SNR 0 dB (l-adapter [cache {ident}])": json.loads(table.loc[hit, "confusion"].iloc[0]),
                      "SNR 0 dB (l-adapter [cache ffffffff])": [[1, 0], [0, 9]]}
    assert [label for label, _ in panels if label.startswith("SNR -5 dB")] == ["SNR -5 dB"]


def test_ours_only_layout_and_refusals(grid_out, tmp_path):
    res = CliRunner().invoke(report_command, [str(grid_out), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    iv = pd.read_csv(tmp_path / "paper_table_iv.csv")
    assert list(dict.fromkeys(iv["column"])) == ["human_-5dB", "human_0dB", "clean"] and iv["paper"].isna().all()
    assert set(iv["row_id"]) == {"enc-weighted-sum", "proposed"}
    # refused before anything is written: no dataset named, no runs on it, a dataset the table lacks
    refused = tmp_path / "refused"
    for args, why in ((["--paper-table", "iv"], "--paper-table needs --paper-dataset"),
                      (["--paper-table", "iv", "--paper-dataset", "meld"], "no finished runs on corpus 'meld'"),
                      (["--paper-table", "v", "--paper-dataset", "meld"], "paper Table V has no dataset 'meld'")):
        res = CliRunner().invoke(report_command, [str(grid_out), "--out", str(refused), *args])
        assert res.exit_code == 1 and why in res.output, res.output
    assert not refused.exists()


# --- Tables III and VI: rows of other feature sources than Whisper -------------------------------

def _table_line(table: str, label: str) -> list[float]:
    """The numbers of the paper's row `label` (a tab-separated cell, perhaps bold) in TABLE `table`."""
    lines = PAPER.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(f"TABLE {table}:"))
    cells = next(c for c in (line.split("\t") for line in lines[i:]) if label in c or f"<b>{label}</b>" in c)
    at = cells.index(label) if label in cells else cells.index(f"<b>{label}</b>")
    return [float(x) for x in re.findall(r"\d+\.\d+", "\t".join(cells[at + 1:]))]


def test_tables_iii_and_vi_follow_the_schema():
    t = load_paper_values()
    iii, vi = t["iii"], t["vi"]
    assert [r.group for r in iii.rows].count("HSF") == 6 and len(iii.rows) == 17
    assert {r.source for r in iii.rows if r.group == "SSL"} == {
        "hf-encoder:facebook/wav2vec2-base", "hf-encoder:facebook/hubert-base-ls960", "hf-encoder:microsoft/wavlm-base"}
    # the baselines this pipeline does not run: the paper's value alone
    assert {r.id for r in iii.rows if r.stack is None} == {"conv-tasnet", "dccrn", "mldk", "mv-bissm", "conformer",
                                                           "speechlm"}
    assert "fine-tunes" in iii.note and "frozen" in iii.note
    clean = iii.datasets["iemocap"][0].values["conv-tasnet"][0]  # printed "-": no value
    assert all(v != v for v in clean)
    rows = {r.id: r for r in vi.rows}
    assert (rows["bert-whisper"].source, rows["bert-transcripts"].source) == ("text:hypothesis", "text:transcript")
    assert rows["bert-transcripts"].condition == "clean" and rows["whisper-enc"].source == "whisper"
    for table in (iii, vi):
        assert [c.condition for c in table.datasets["iemocap"][0].columns] == ["clean", "human_0dB", "park_0dB",
                                                                               "traffic_0dB"]
        ids = {r.id for r in table.rows}
        assert set(table.datasets["meld"][0].values) == set(table.datasets["iemocap"][0].values) == ids


@pytest.mark.parametrize("tid", ["iii", "vi"])
def test_tables_iii_and_vi_match_the_paper_text(tid):
    if not PAPER.exists():
        pytest.skip(f"{PAPER} is absent (the paper text lives beside the repo, not in it)")
    table = load_paper_values()[tid]
    for row in table.rows:
        ours = table.datasets["meld"][0].values[row.id] + table.datasets["iemocap"][0].values[row.id]
        assert _table_line(tid.upper(), row.label) == [v for pair in ours for v in pair if v == v], row.label


def _baseline_row(i: int) -> dict:
    fold = str((i // 2) % 3)
    return row(i, speaker=f"s{fold}", label="ab"[i % 2], fold=fold, transcript="t", hypothesis="h", duration=None)


def _opensmile_cache(path: Path, condition: str, noise: str | None, snr: float | None, n: int = 18) -> str:
    """A per-utterance cache (one float32 vector per utterance) as an openSMILE set writes it."""
    from pipeline.cache.writer import CacheWriter
    from tests.helpers import LAYOUT, attrs

    a = attrs(n_enc=1, n_dec=0, d=6, identity={"paper": condition}, corpus="iemocap",
              model="opensmile:IS10_paraling", condition=condition, noise_type=noise, snr_db=snr)
    a["model"].update(frame_rate=0.0, source="opensmile")
    a["extraction"].update(context="trimmed", token_source="none", dtype="float32")
    rng = np.random.default_rng(0)
    with CacheWriter(path, a, layout=LAYOUT) as w:
        for k in range(n):
            r = {**_baseline_row(k), "duration": 1.0}
            w.add(r, [(rng.normal(size=(1, 6)) + 3.0 * (r["label"] == "b")).astype(np.float32)], [],
                  np.zeros(0, dtype=np.int32))
    return str(path)


@pytest.fixture(scope="module")
def baseline_out(tmp_path_factory) -> Path:
    """A 1-epoch grid of Table III's and VI's baseline rows on fake IEMOCAP caches: mel (clean, human 0 dB),
    openSMILE IS10 (clean), BERT on the transcripts (clean) and on the hypotheses (clean, human 0 dB)."""
    root = tmp_path_factory.mktemp("baseline_grid")

    def cache(name: str, model: str, cond: str, n_enc: int, seed: int = 0, **identity) -> str:
        noise, snr = (None, None) if cond == "clean" else ("human", 0.0)
        path = root / cond / f"{name}.zarr"
        write_cache(path, 18, rows=_baseline_row, lengths=lambda rng, i: (4 + i % 3, 0), n_enc=n_enc, n_dec=0,
                    signal=Signal("encoder", n_enc - 1, {"b": 3.0}), seed=seed,
                    identity={"paper": f"{cond} {name}", **identity},
                    corpus="iemocap", model=model, condition=cond, noise_type=noise, snr_db=snr)
        return str(path)

    mel = [cache("mel", "mel", c, 1) for c in ("clean", "human_0dB")]
    text = [cache(f"text-{f}", "text:fake-bert", c, 13, seed=k, text={"field": f})
            for k, (f, c) in enumerate((("transcript", "clean"), ("hypothesis", "clean"), ("hypothesis", "human_0dB")))]
    hsf = _opensmile_cache(root / "clean" / "opensmile.zarr", "clean", None, None)
    spec = parse_grid({"out": str(root / "out"), "seeds": [0], "folds": ["0"],
                       "train": {"epochs": 1, "hidden": 8, "batch_size": 4, "lr": 0.01},
                       "subgrids": [{"caches": mel, "fusions": ["single"], "layers": ["enc:0"]},
                                    {"caches": [hsf], "fusions": ["fc"], "layers": ["enc:all"]},
                                    {"caches": text, "fusions": ["mean-fc"], "layers": ["enc:12"]}]})
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        outcome = run_grid(expand(spec), spec.out, client=client, progress=False)
    assert set(outcome.table["status"]) == {"done"}, outcome.table["error"].tolist()
    return spec.out


def test_baseline_sources_fill_tables_iii_and_vi(baseline_out, tmp_path):
    res = CliRunner().invoke(report_command, [str(baseline_out), "--out", str(tmp_path), "--paper-table", "iii",
                                              "--paper-table", "vi", "--paper-dataset", "iemocap"])
    assert res.exit_code == 0, res.output
    results = pd.read_csv(baseline_out / "results.csv")

    def ours(model: str, condition: str, metric: str = "uar", cache: str = "") -> float:
        r = results[(results["model"] == model) & (results["condition"] == condition)
                    & results["cache"].str.contains(cache)]
        assert len(r) == 1
        return 100 * r[metric].iloc[0]

    iii = pd.read_csv(tmp_path / "paper_table_iii.csv").set_index(["row_id", "column", "metric"])
    mel = iii.loc[("mel", "IEMOCAP (Human)", "UAR")]
    assert mel["ours"] == pytest.approx(ours("mel", "human_0dB")) and mel["paper"] == 53.22
    assert mel["diff"] == pytest.approx(mel["ours"] - 53.22) and mel["method"] == "enc single, last"
    assert iii.loc[("mel", "IEMOCAP", "F1"), "ours"] == pytest.approx(ours("mel", "clean", "macro_f1"))
    is10 = iii.loc[("is10", "IEMOCAP", "F1")]
    assert is10["ours"] == pytest.approx(ours("opensmile:IS10_paraling", "clean", "macro_f1"))
    assert is10["paper"] == 59.49
    assert pd.isna(iii.loc[("is10", "IEMOCAP (Human)", "UAR"), "ours"])  # no IS10 run at human 0 dB
    assert iii.loc[("is10", "IEMOCAP (Human)", "UAR"), "paper"] == 56.34
    assert iii.loc[("is09", "IEMOCAP", "UAR")].isna()["ours"] and iii.loc[("is09", "IEMOCAP", "UAR"), "paper"] == 58.65
    dccrn = iii.loc["dccrn"]
    assert dccrn["ours"].isna().all() and dccrn["paper"].isna().sum() == 2  # the paper's "-" on clean IEMOCAP
    vi = pd.read_csv(tmp_path / "paper_table_vi.csv").set_index(["row_id", "column", "metric"])
    hyp = vi.loc[("bert-whisper", "IEMOCAP (Human)", "UAR")]
    assert hyp["ours"] == pytest.approx(ours("text:fake-bert", "human_0dB")) and hyp["paper"] == 56.87
    assert vi.loc[("bert-whisper", "IEMOCAP", "UAR"), "ours"] == pytest.approx(
        ours("text:fake-bert", "clean", cache="hypothesis"))
    # the transcripts do not change with the noise: the clean transcript run stands in for every column
    transcript = ours("text:fake-bert", "clean", cache="transcript")
    for col in ("IEMOCAP", "IEMOCAP (Human)", "Environment (Park)"):
        assert vi.loc[("bert-transcripts", col, "UAR"), "ours"] == pytest.approx(transcript)
    assert vi.loc[("bert-transcripts", "IEMOCAP (Human)", "UAR"), "note"] == "the run on clean"
    assert transcript != pytest.approx(vi.loc[("bert-whisper", "IEMOCAP", "UAR"), "ours"])
    assert vi.loc[("whisper-enc", "IEMOCAP", "UAR")].isna()["ours"]  # no Whisper run: the paper's value alone
    md = (tmp_path / "report.md").read_text()
    assert "## Paper Table III layout" in md and "ours are frozen" in md
    assert f"| – | Mel-Spectrogram | " in md and f"/ 53.22 ({mel['ours'] - 53.22:+.2f})" in md


def test_tables_iii_and_vi_refused_without_their_runs(baseline_out, grid_out, tmp_path):
    results = pd.read_csv(baseline_out / "results.csv")
    text_only, audio_only = tmp_path / "text.csv", tmp_path / "audio.csv"
    results[results["model"].str.startswith("text:")].to_csv(text_only, index=False)
    results[~results["model"].str.startswith("text:")].to_csv(audio_only, index=False)
    refused = tmp_path / "refused"
    for source, args, why in (
            (baseline_out, ["--paper-table", "iii", "--paper-dataset", "meld"], "no finished runs on corpus 'meld'"),
            (text_only, ["--paper-table", "iii", "--paper-dataset", "iemocap"], "--paper-table iii: no finished run"),
            (audio_only, ["--paper-table", "vi", "--paper-dataset", "iemocap"], "--paper-table vi: no finished run"),
            (baseline_out, ["--paper-table", "iv", "--paper-dataset", "iemocap"], "--paper-table iv: no finished run")):
        res = CliRunner().invoke(report_command, [str(source), "--out", str(refused), *args])
        assert res.exit_code == 1 and why in res.output, res.output
    assert not refused.exists()
    # without --paper-table: Tables III and VI are left out where only Whisper rows ran (Tables IV and V)
    res = CliRunner().invoke(report_command, [str(grid_out), "--out", str(tmp_path / "whisper")])
    assert res.exit_code == 0 and "paper_iii" not in res.output and "paper_vi" not in res.output, res.output
    res = CliRunner().invoke(report_command, [str(text_only), "--out", str(tmp_path / "text")])
    assert res.exit_code == 0 and "paper_vi" in res.output and "paper_iii" not in res.output, res.output
    vi = pd.read_csv(tmp_path / "text" / "paper_table_vi.csv")
    assert list(dict.fromkeys(vi["column"])) == ["human_0dB", "clean"] and vi["paper"].isna().all()
