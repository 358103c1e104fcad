"""nser-probe: pooling equals per-utterance reads, the informative layer wins, the test fold never
enters a fit, and the console script writes its outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.cache.reader import CacheReader
from pipeline.probe import pool_layer, probe_layers
from pipeline.train.trainer import fold_plan
from tests.helpers import PROBE_FOLDS as N_FOLDS, PROBE_SIGNAL as SIGNAL, probe_cache


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory) -> Path:
    return probe_cache(tmp_path_factory.mktemp("probe") / "fake.zarr")


@pytest.mark.parametrize("pooling", ["mean", "mean+std"])
@pytest.mark.parametrize("block_rows", [None, 7, 64])
def test_pooling_equals_per_utterance_reads(fake_cache, pooling, block_rows):
    reader = CacheReader(fake_cache)
    sel = reader.selection("enc:1,dec:2")
    for j, (stack, i) in enumerate((("encoder", 1), ("decoder", 2))):
        got = pool_layer(reader, stack, i, pooling, block_rows)
        assert got.shape == (reader.n, 16 if pooling == "mean" else 32) and got.dtype == np.float32
        for k in range(reader.n):
            states = reader.read_states(k, sel)[j].astype(np.float64)
            want = states.mean(0) if pooling == "mean" else np.concatenate([states.mean(0), states.std(0)])
            np.testing.assert_allclose(got[k], want, atol=1e-5)


def test_informative_layer_ranks_first_and_is_reproducible(fake_cache):
    reader = CacheReader(fake_cache)
    rows = probe_layers(reader, "enc:all,dec:all", seed=0)
    assert [r["name"] for r in rows] == ["enc0", "enc1", "enc2", "enc3", "dec0", "dec1", "dec2"]
    best = max(rows, key=lambda r: r["uar"])
    assert (best["stack"], best["layer"]) == SIGNAL and best["uar"] > 0.9 and best["macro_f1"] > 0.9
    assert all(r["uar"] < 0.7 for r in rows if r is not best)
    assert set(best["folds"]) == {str(f) for f in range(N_FOLDS)}
    # fit = training + validation folds (4 of 5), test = the held-out fold
    assert all(f["n_fit"] == 48 and f["n_test"] == 12 for f in best["folds"].values())
    again = probe_layers(reader, reader.selection("enc:all,dec:all"), seed=0)
    assert again == rows


def test_test_fold_never_enters_the_fit(fake_cache, monkeypatch):
    """Every fit sees exactly the training + validation utterances of its fold, never a test one;
    predictions are made for exactly the test fold. Checked by recording what the classifier gets."""
    import pipeline.probe as probe

    calls: list[tuple[str, np.ndarray]] = []
    real = probe.make_probe

    class Recording:
        def __init__(self, seed):
            self.model = real(seed)

        def fit(self, x, y):
            calls.append(("fit", x.copy()))
            self.model.fit(x, y)
            return self

        def predict(self, x):
            calls.append(("predict", x.copy()))
            return self.model.predict(x)

    monkeypatch.setattr(probe, "make_probe", Recording)
    reader = CacheReader(fake_cache)
    probe_layers(reader, "enc:2,dec:0", seed=0)
    plan = fold_plan(reader)
    assert len(calls) == 2 * 2 * len(plan)
    for j, (stack, i) in enumerate((("encoder", 2), ("decoder", 0))):
        features = pool_layer(reader, stack, i)
        where = {features[k].tobytes(): k for k in range(reader.n)}
        assert len(where) == reader.n  # rows identify utterances
        for f, (_, train_idx, val_idx, test_idx) in enumerate(plan):
            (kind_fit, x_fit), (kind_pred, x_pred) = calls[2 * (j * len(plan) + f): 2 * (j * len(plan) + f) + 2]
            assert (kind_fit, kind_pred) == ("fit", "predict")
            fitted = {where[r.tobytes()] for r in x_fit}
            predicted = {where[r.tobytes()] for r in x_pred}
            assert fitted == set(train_idx) | set(val_idx)
            assert predicted == set(test_idx) and not fitted & predicted


def script(name: str) -> Path:
    exe = Path(sys.executable).with_name(name)
    if not exe.exists():
        pytest.skip(f"console script {name} not installed (pip install -e .)")
    return exe


def test_cli_writes_table_csv_json_png(fake_cache, tmp_path):
    out = tmp_path / "probe"
    res = subprocess.run([str(script("nser-probe")), "--cache", str(fake_cache), "--out", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "| enc2 |" in res.stdout and "best encoder layer by UAR: enc2" in res.stdout
    assert "7 layers x 5 folds" in res.stderr
    report = json.loads((out / "probe.json").read_text())
    assert report["identity_hash"] == CacheReader(fake_cache).identity_hash and report["seed"] == 0
    assert report["fit_on"] == "train+validation" and report["pooling"] == "mean"
    assert [r["name"] for r in report["rows"]][:3] == ["enc0", "enc1", "enc2"]
    header = (out / "probe.csv").read_text().splitlines()[0]
    assert header == "stack,layer,name,uar,uar_std,macro_f1,macro_f1_std,folds"
    assert (out / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    res = subprocess.run([str(script("nser")), "probe", "--cache", str(fake_cache), "--layers", "enc:2",
                          "--pooling", "mean+std", "--json", "--quiet"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert [r["name"] for r in report["rows"]] == ["enc2"] and report["pooling"] == "mean+std"

    bad = subprocess.run([str(script("nser-probe")), "--cache", str(fake_cache), "--layers", "enc:9"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "not in the cache" in bad.stderr and "Traceback" not in bad.stderr


def test_probe_on_real_cache(small_cache):
    """Whisper base states of real EmoDB in babble: runs on the real folds, scores are sane."""
    reader = CacheReader(small_cache)
    rows = probe_layers(reader, "enc:0,enc:last,dec:last", seed=0, pooling="mean+std")
    assert [r["name"] for r in rows] == ["enc0", "enc6", "dec6"]
    for r in rows:
        assert 0.0 <= r["uar"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0
        assert set(r["folds"]) == {"0", "1", "2"}


# --- refusals (docs/reliability.md) ---------------------------------------------------------------

def test_non_finite_state_is_named_not_fitted(tmp_path):
    """A NaN state made sklearn fail with a bare ValueError; the probe names the layer and utterance."""
    from pipeline.errors import NserError
    from tests.helpers import make_cache, poison

    cache = make_cache(tmp_path / "c.zarr")
    poison(cache, "u7", "decoder", 1, float("inf"))
    reader = CacheReader(cache)
    assert len(probe_layers(reader, "dec:0", seed=0)) == 1  # other layers are fine
    with pytest.raises(NserError, match=r"non-finite \(NaN/Inf\) states in layer dec1 of utterance\(s\) u7;"):
        probe_layers(reader, "dec:all", seed=0)


def test_one_class_and_bad_settings_are_refused(tmp_path, fake_cache):
    from click.testing import CliRunner

    from pipeline.cli.probe import probe_command
    from tests.helpers import make_cache

    one = make_cache(tmp_path / "one.zarr", labels="a")
    res = CliRunner().invoke(probe_command, ["--cache", str(one), "--quiet"])
    assert res.exit_code == 1 and "training+validation part holds only class(es) ['a'] of ['a', 'b']" in res.output
    for args, message in ((["--seed", "-1"], "'--seed': -1 is not in the range"),
                          (["--layers", "enc:-3-5"], "negative layer index in 'enc:-3-5'"),
                          (["--layers", "enc:0-5000000"], "encoder layer(s) 0-5000000 not in the cache")):
        res = CliRunner().invoke(probe_command, ["--cache", str(fake_cache), "--quiet", *args])
        assert res.exit_code in (1, 2) and message in res.output and "Traceback" not in res.output, res.output


def _with_errors(path: Path, errors: list[dict], **attrs) -> None:
    import zarr

    from pipeline.cache.schema import ATTR_KEY

    g = zarr.open_group(str(path), mode="r+")
    g.attrs[ATTR_KEY] = dict(g.attrs[ATTR_KEY], errors=errors, **attrs)


def test_incomplete_or_failed_caches_need_allow_missing(tmp_path):
    """As for training: a cache with failed utterances (here a whole speaker fold) or an unfinished
    one is refused; with allow_missing the probe runs and probe.json says what it lacks."""
    from pipeline.errors import NserError
    from pipeline.probe import probe_report

    path = probe_cache(tmp_path / "c.zarr")
    n = CacheReader(path).n
    _with_errors(path, [{"utt_id": f"x{k}", "path": f"x{k}.wav", "fold": "9", "label": "a", "error": "gone"}
                        for k in range(3)])
    with pytest.raises(NserError, match="3 utterance.*failed extraction.*--allow-missing"):
        probe_layers(CacheReader(path), "enc:2")
    _with_errors(path, [], n_manifest=n + 5)
    reader = CacheReader(path)
    with pytest.raises(NserError, match=rf"incomplete \({n} of {n + 5}"):
        probe_layers(reader, "enc:2")
    rows = probe_layers(reader, "enc:2", allow_missing=True)
    report = probe_report(reader, rows, seed=0, pooling="mean", layers="enc:2", seconds=0.0)
    assert report["complete"] is False and report["left_out"] == {"not extracted": 5}
    assert report["partial"] == reader.partial_hash and report["n_manifest"] == n + 5


def test_out_of_another_probe_is_refused_unless_overwrite(fake_cache, tmp_path):
    """One --out for two probes would leave only the second: refused before probing, as are probe.*
    files that no probe wrote; the same probe may be rerun into its folder."""
    from click.testing import CliRunner

    from pipeline.cli.probe import probe_command

    out = tmp_path / "probe"
    run = lambda *extra: CliRunner().invoke(probe_command, ["--cache", str(fake_cache), "--layers", "enc:1,2",  # noqa: E731
                                                             "--out", str(out), "--quiet", *extra])
    assert run().exit_code == 0
    assert run().exit_code == 0  # the same probe again
    first = (out / "probe.json").read_text()
    other = run("--seed", "3")
    assert other.exit_code != 0 and "with other settings (seed: 0 there, 3 now)" in other.output
    assert (out / "probe.json").read_text() == first  # untouched
    assert run("--seed", "3", "--overwrite").exit_code == 0
    assert json.loads((out / "probe.json").read_text())["seed"] == 3

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "probe.csv").write_text("my notes\n")
    res = CliRunner().invoke(probe_command, ["--cache", str(fake_cache), "--layers", "enc:2", "--out", str(notes)])
    assert res.exit_code != 0 and "without a probe.json: not a probe's output" in res.output
    assert (notes / "probe.csv").read_text() == "my notes\n"
