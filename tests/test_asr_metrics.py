"""`nser cache asr-metrics`: WER of the stored hypotheses on a real cache (EmoDB, Whisper base, babble 0 dB)."""

import json
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest

from pipeline.asr_metrics import asr_metrics
from pipeline.cache.reader import CacheReader


def test_wer_of_a_real_cache(small_cache):
    m = asr_metrics(small_cache)
    with CacheReader(small_cache) as r:
        n = r.n
        refs = dict(zip(r.table["utt_id"], r.table["transcript"]))
    assert m.metric == "wer" and m.normalizer == "whisper-basic"  # EmoDB is German
    assert m.n_scored + m.n_skipped == n and m.n_scored > 0
    assert m.value == pytest.approx(sum(u.errors for u in m.per_utterance) / sum(u.units for u in m.per_utterance))
    for u in m.per_utterance:
        # the normalised reference is the transcript lower-cased without punctuation
        assert u.reference.split() == refs[u.utt_id].lower().replace(".", "").replace(",", "").split()
        assert u.rate == pytest.approx(jiwer.wer(u.reference, u.hypothesis) if u.hypothesis else 1.0)
    assert 0.0 < m.value < 2.0  # whisper base at 0 dB babble: neither perfect nor empty


def test_cli_json_and_csv(small_cache, tmp_path):
    exe = Path(sys.executable).with_name("nser")
    if not exe.exists():
        pytest.skip("console script nser not installed (pip install -e .)")
    res = subprocess.run([str(exe), "cache", "asr-metrics", str(small_cache), "--json", "--csv",
                          str(tmp_path / "u.csv")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["metric"] == "wer" and out["value"] == pytest.approx(asr_metrics(small_cache).value)
    assert len((tmp_path / "u.csv").read_text().splitlines()) == out["n_scored"] + 1
