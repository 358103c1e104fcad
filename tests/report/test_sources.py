"""Tables III, VI and VII of the report from a real grid folder: tiny fake caches of several models
(two Whisper checkpoints on one corpus, an SSL encoder, text caches of the transcripts and of the
hypotheses), trained 1 epoch by nser-grid's runner, then nser-report."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.grid.runner import run_grid
from pipeline.grid.spec import expand, parse_grid
from pipeline.report.build import build_report
from tests.helpers import Signal, write_cache, row

TINY = {"epochs": 1, "hidden": 8, "batch_size": 4, "lr": 0.01}


def _cache(path, model, identity, n=12):
    def rows(k):
        return row(k, label="ab"[k % 2], fold=str((k // 2) % 3), speaker=f"s{(k // 2) % 3}", duration=None)

    write_cache(path, n, rows=rows, lengths=lambda rng, k: (5 + k % 3, 3), signal=Signal("encoder", 1, {"b": 3.0}),
                identity=identity, corpus="casia", model=model)
    return str(path)


@pytest.fixture(scope="module")
def grid_out(tmp_path_factory):
    from dask.distributed import Client, LocalCluster

    d = tmp_path_factory.mktemp("sources")
    en = _cache(d / "en.zarr", "openai/whisper-small.en", {"m": "en"})
    zh = _cache(d / "zh.zarr", "some-org/whisper-small-chinese", {"m": "zh"})
    ssl = _cache(d / "ssl.zarr", "hf-encoder:facebook/wav2vec2-base", {"m": "ssl"})
    texts = [_cache(d / f"text_{f}.zarr", "text:google-bert/bert-base-uncased", {"text": {"field": f}})
             for f in ("transcript", "hypothesis")]
    spec = parse_grid({"out": str(d / "out"), "train": TINY, "subgrids": [
        {"caches": [en, zh], "fusions": ["weighted-sum"], "layers": ["enc:all"]},
        {"caches": [ssl, *texts], "fusions": ["mean-fc"], "layers": ["enc:2"]}]})
    runs = expand(spec)
    assert len(runs) == 5
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        outcome = run_grid(runs, spec.out, client=client, progress=False)
    assert not outcome.failed
    return spec.out


def test_results_record_each_runs_source(grid_out):
    t = pd.read_csv(grid_out / "results.csv").set_index("model")
    assert t.loc["openai/whisper-small.en", "source"] == "whisper"
    assert t.loc["hf-encoder:facebook/wav2vec2-base", "source"] == "hf-encoder"
    assert set(t.loc["text:google-bert/bert-base-uncased", "source"]) == {"text"}


def test_two_models_on_one_corpus_are_separate_rows_and_text_fields_too(grid_out):
    rep = build_report(grid_out)
    assert {"sources", "text"} <= set(rep.written)
    src = pd.read_csv(rep.path.parent / "sources.csv")
    # Table VII: the English and the Chinese checkpoint are two rows of one column; text runs are not here
    assert sorted(src["model"].unique()) == ["hf-encoder:facebook/wav2vec2-base", "openai/whisper-small.en",
                                             "some-org/whisper-small-chinese"]
    assert set(src["where"]) == {"clean"} and len(src) == 3 * 2  # UAR and F1 per row
    text = pd.read_csv(rep.path.parent / "text_modality.csv")
    assert sorted(text["field"].unique()) == ["hypothesis", "transcript"]  # read from each text cache
    md = rep.path.read_text()
    assert "paper Tables III, VII" in md and "paper Table VI" in md


def test_one_model_without_text_leaves_both_sections_out(grid_out, tmp_path):
    t = pd.read_csv(grid_out / "results.csv").drop(columns="source")  # a table from before the column
    t[t["model"] == "openai/whisper-small.en"].to_csv(tmp_path / "results.csv", index=False)
    rep = build_report(tmp_path / "results.csv", out_dir=tmp_path / "r")
    assert not {"sources", "text"} & (set(rep.written) | set(rep.skipped))
    assert "Table VI" not in rep.path.read_text() and "Tables III" not in rep.path.read_text()
    t[t["model"].str.startswith("text:")].to_csv(tmp_path / "t.csv", index=False)
    rep = build_report(tmp_path / "t.csv", out_dir=tmp_path / "t")  # text runs: their source from the model
    assert "text" in rep.written and "sources" not in rep.written
