"""The real console scripts, end to end: csv corpus of real speech -> noisy extraction -> info -> train."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cache.reader import CacheReader
from tests.helpers import write_manifest


def run(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(args[0])
    if not exe.exists():
        pytest.skip(f"console script {args[0]} not installed (pip install -e .)")
    return subprocess.run([str(exe), *args[1:]], capture_output=True, text=True, timeout=900)


def test_extract_info_train(tmp_path, emodb_root, noise_root, cache_dir):
    corpus = tmp_path / "corpus"
    (corpus / "wav").mkdir(parents=True)
    rows = []
    for spk in ("03", "08", "09"):
        for letter, label in (("N", "neutral"), ("W", "angry")):
            for src in sorted(emodb_root.glob(f"{spk}*{letter}?.flac"))[:2]:
                shutil.copy(src, corpus / "wav" / src.name)
                rows.append({"path": f"wav/{src.name}", "label": label, "speaker": spk})
    rows.append({"path": "wav/missing.flac", "label": "angry", "speaker": "09"})
    # Declared classes: "boredom" is left out by this protocol; "angyr" (a typo, its audio is fine)
    # is a label outside the class map, so a per-file error.
    (corpus / "classes.yaml").write_text("classes: [neutral, angry]\nexcluded: [boredom]\n")
    bored, typo = sorted(emodb_root.glob("09*L?.flac"))[0], sorted(emodb_root.glob("09*W?.flac"))[-1]
    for src, label in ((bored, "boredom"), (typo, "angyr")):
        shutil.copy(src, corpus / "wav" / src.name)
        rows.append({"path": f"wav/{src.name}", "label": label, "speaker": "09"})
    write_manifest(corpus, rows)
    cache = tmp_path / "c.zarr"
    res = run("nser-extract", "--corpus", "csv", "--data-root", str(corpus), "--model", "bundled:tiny.en",
              "--noise", str(noise_root / "park"), "--snr", "5", "--out", str(cache), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "12 utterances cached (12 new)" in res.stderr and "2 failed" in res.stderr
    assert "missing.flac: file not found" in res.stderr
    assert f"error wav__{typo.stem}: label 'angyr' outside the class map" in res.stderr
    assert bored.stem not in res.stderr  # excluded by the declared protocol: no error

    info = json.loads(run("nser", "cache", "info", str(cache), "--json").stdout)
    assert info["n_utterances"] == 12 and info["classes"] == {"angry": 6, "neutral": 6} and info["failed"] == 2
    errors = {e["utt_id"]: e for e in CacheReader(cache).attrs["errors"]}
    assert errors[f"wav__{typo.stem}"]["label"] == "angyr" and errors[f"wav__{typo.stem}"]["fold"] == "2"
    assert errors["wav__missing"]["label"] == "angry"
    listed = list(csv.DictReader(run("nser", "cache", "errors", str(cache), "--csv").stdout.splitlines()))
    assert {(e["utt_id"], e["fold"], e["label"]) for e in listed} == {
        ("wav__missing", "2", "angry"), (f"wav__{typo.stem}", "2", "angyr")}
    assert info["complete"] is True
    assert info["folds"] == {"0": 4, "1": 4, "2": 4}
    assert info["encoder_layers"] == 5 and info["decoder_layers"] == 5 and info["dims"] == 384
    assert info["bytes"] > 0 and abs(info["audio_seconds"] - 24.0) < 0.1
    assert abs(info["mean_realized_snr_db"] - 5.0) < 0.01

    again = run("nser-extract", "--corpus", "csv", "--data-root", str(corpus), "--model", "bundled:tiny.en",
                "--noise", str(noise_root / "park"), "--snr", "5", "--out", str(cache), "--quiet")
    assert again.returncode == 0 and "(0 new)" in again.stderr and "2 failed" in again.stderr
    strict = run("nser-extract", "--corpus", "csv", "--data-root", str(corpus), "--model", "bundled:tiny.en",
                 "--noise", str(noise_root / "park"), "--snr", "5", "--out", str(cache), "--quiet", "--strict")
    assert strict.returncode != 0 and "--strict: 2 file(s) failed" in strict.stderr

    other = run("nser-extract", "--corpus", "csv", "--data-root", str(corpus), "--model", "bundled:tiny.en",
                "--noise", str(noise_root / "park"), "--snr", "10", "--out", str(cache), "--quiet")
    assert other.returncode != 0 and "other settings" in other.stderr and "Traceback" not in other.stderr

    run_dir = tmp_path / "run"
    refused = run("nser-train", "--cache", str(cache), "--epochs", "1", "--out", str(run_dir), "--quiet")
    assert refused.returncode != 0 and "2 utterance(s) of the selected folds failed extraction" in refused.stderr
    assert "--allow-missing" in refused.stderr
    res = run("nser-train", "--cache", str(cache), "--layers", "enc:all,dec:all", "--epochs", "2",
              "--out", str(run_dir), "--quiet", "--allow-missing")
    assert res.returncode == 0, res.stderr
    assert "mean ± std" in res.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["folds"]) == {"0", "1", "2"} and 0.0 <= metrics["uar"] <= 1.0
    assert metrics["left_out"] == {"2": 2} and "left out (failed extraction, --allow-missing): fold 2: 2" in res.stdout

    bad = run("nser-train", "--cache", str(cache), "--layers", "enc:9", "--out", str(tmp_path / "r2"))
    assert bad.returncode != 0 and "not in the cache" in bad.stderr
