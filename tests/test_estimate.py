"""nser-extract --dry-run: counts, hours and cache size before any model run, against a real cache."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml
import zarr
from click.testing import CliRunner

from pipeline.cli.extract import extract_command
from pipeline.corpora.manifest import read_corpus
from pipeline.errors import NserError
from pipeline.estimate import ModelDims, estimate, model_dims


def test_size_estimate_is_within_10_percent_of_a_real_cache(small_cache, emodb_root):
    stored = set(zarr.open_group(str(small_cache), mode="r")["utterances/utt_id"][:].tolist())
    corpus = read_corpus("emodb", emodb_root)
    corpus.utterances = [u for u in corpus.utterances if u.utt_id in stored]
    assert len(corpus.utterances) == len(stored) == 24
    est = estimate(corpus, "bundled:base", "cpu")
    real = sum(f.stat().st_size for f in Path(small_cache).rglob("*") if f.is_file())
    assert est.audio_seconds == pytest.approx(24 * 2.0, abs=0.1)
    assert est.cache_bytes == pytest.approx(real, rel=0.10), (est.cache_bytes, real)


def test_dry_run_prints_one_and_n_conditions_and_writes_nothing(tmp_path, emodb_root, cache_dir):
    out = tmp_path / "c.zarr"
    res = CliRunner().invoke(extract_command, ["--corpus", "emodb", "--data-root", str(emodb_root), "--model",
                                               "bundled:base", "--device", "cpu", "--out", str(out), "--dry-run", "16"])
    assert res.exit_code == 0, res.output
    assert "one condition: 339 utterances, 0.19 h of audio, cache 0.28 GB, 0.08 h at 1.12 utt/s" in res.output
    assert "16 conditions: 5424 utterances, 3.01 h of audio, cache 4.49 GB" in res.output
    assert "7 encoder + 7 decoder states; 385 kB per audio second" in res.output
    assert not out.exists()
    res = CliRunner().invoke(extract_command, ["--corpus", "emodb", "--data-root", str(emodb_root), "--out", str(out),
                                               "--measure", "2"])
    assert res.exit_code == 1 and "add --dry-run" in res.output and not out.exists()


def test_model_sizes_without_downloading(tmp_path):
    small = model_dims("openai/whisper-small")
    assert small == ModelDims(768, 13, 13)
    # 13 states x 50 frames/s x 768 x 2 bytes = 998.4 kB/s, plus 13 x 3.7 decoder positions/s
    assert small.bytes_per_audio_second() == pytest.approx((13 * 50 + 13 * 3.7) * 768 * 2)
    assert model_dims("openai/whisper-large-v3-turbo") == ModelDims(1280, 33, 5)
    (tmp_path / "config.json").write_text('{"d_model": 64, "encoder_layers": 2, "decoder_layers": 3}')
    assert model_dims(str(tmp_path)) == ModelDims(64, 3, 4)
    with pytest.raises(NserError, match="cannot tell the size of 'facebook/wav2vec2-base'"):
        model_dims("facebook/wav2vec2-base")


def test_the_time_comes_from_the_rate_measured_in_the_run_s_compute_dtype(tmp_path, emodb_root):
    """On a GPU float16 and float32 were measured 1.6x apart (docs/gpu.md): `--dtype auto` must be priced
    as the float16 it runs, not as whichever entry comes first; a dtype never measured has no time."""
    rates = yaml.safe_load(resources.files("pipeline").joinpath("extract_rates.yaml").read_text())["rates"]
    cuda = {r["dtype"]: r["utt_per_s"] for r in rates if (r["model"], r["device"]) == ("bundled:base", "cuda")}
    assert set(cuda) == {"float16", "float32"} and cuda["float16"] != cuda["float32"]

    def dry_run(*extra):  # --device cuda needs no GPU: a dry run loads no model
        args = ["--corpus", "emodb", "--data-root", str(emodb_root), "--model", "bundled:base", "--device", "cuda",
                "--out", str(tmp_path / "c.zarr"), "--dry-run", *extra]
        res = CliRunner().invoke(extract_command, args)
        assert res.exit_code == 0, res.output
        return res.output

    assert f"at {cuda['float16']:.2f} utt/s" in dry_run()
    assert f"at {cuda['float16']:.2f} utt/s" in dry_run("--dtype", "float16")
    assert f"at {cuda['float32']:.2f} utt/s" in dry_run("--dtype", "float32")
    assert "time unknown: no measured rate for this model, device and dtype" in dry_run("--dtype", "bfloat16")
    assert not (tmp_path / "c.zarr").exists()
