"""Extraction in parts on Dask workers, combined, gives the cache a single run gives; combine refuses
parts that do not make one whole. Real EmoDB audio, real tiny.en forwards, a real LocalCluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from pipeline.cache.combine import combine_parts
from pipeline.cache.reader import CacheReader
from pipeline.cache.records import FAILED, REJECTED
from pipeline.cache.schema import ATTR_KEY, table_columns
from pipeline.cache.verify import verify_cache
from pipeline.cli.cache import cache_group
from pipeline.cli.extract import extract_command
from pipeline.corpora.manifest import read_corpus
from pipeline.errors import CacheError, NserError
from pipeline.extract.parts import extract_with_workers, local_device, part_range
from pipeline.extract.run import ExtractionOptions, run_extraction
from tests.helpers import write_manifest

OPTS = dict(model="bundled:tiny.en", context="trimmed", token_source="transcript", batch_size=2)
TEXT = "Der Lappen liegt auf dem Eisschrank."


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory, emodb_root) -> Path:
    """Six utterances, an unreadable file (a failure in part 1) and a label outside the class map
    (a rejection, which goes to part 0): with batches of 2, parts 0-1 of 2 hold 4 and 3 entries."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for spk in ("03", "08"):
        for src in sorted(emodb_root.glob(f"{spk}a0*.flac"))[:3]:
            shutil.copy(src, root / src.name)
            rows.append({"path": src.name, "label": src.stem[5], "speaker": spk, "transcript": TEXT})
    (root / "broken.wav").write_bytes(b"RIFF, but not audio")
    rows.insert(5, {"path": "broken.wav", "label": rows[0]["label"], "speaker": "08", "transcript": TEXT})
    rows.append({"path": rows[0]["path"].replace(".flac", "_copy.flac"), "label": "X", "speaker": "03",
                 "transcript": TEXT})
    classes = sorted({r["label"] for r in rows} - {"X"})
    (root / "classes.yaml").write_text(f"classes: [{', '.join(classes)}]\n")
    write_manifest(root, rows)
    return root


@pytest.fixture(scope="module")
def single(corpus_root, tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("single") / "ref.zarr"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on a one-thread Dask worker, so the comparison holds whatever the core count
    try:
        run_extraction(read_corpus("csv", corpus_root), out, ExtractionOptions(**OPTS), progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def dask_out(corpus_root, tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("dask") / "combined.zarr"
    rep = extract_with_workers(read_corpus("csv", corpus_root), out, ExtractionOptions(**OPTS), workers=2,
                               progress=False)
    assert rep.n_done == 6 and rep.n_new == 6
    return out


def assert_same_cache(a: Path, b: Path) -> None:
    with CacheReader(a) as ra, CacheReader(b) as rb:
        assert ra.n == rb.n == 6
        assert ra.identity_hash == rb.identity_hash
        # Every attribute a run records, error table included; only the writer's random token differs.
        assert {k: v for k, v in ra.attrs.items() if k != "writer"} == \
            {k: v for k, v in rb.attrs.items() if k != "writer"}
        for col in table_columns():
            np.testing.assert_array_equal(ra.table[col], rb.table[col], err_msg=col)
        names = [f"{s}/layer_{i:02d}" for s, n in (("encoder", ra.n_encoder_states),
                                                    ("decoder", ra.n_decoder_states)) for i in range(n)]
        for name in [*names, "decoder/tokens"]:
            x, y = ra.group[name][:], rb.group[name][:]
            assert x.shape == y.shape and x.tobytes() == y.tobytes(), name  # bitwise


def test_dask_parts_give_the_single_run_cache(single, dask_out):
    assert_same_cache(single, dask_out)
    assert verify_cache(str(dask_out)).ok
    with CacheReader(dask_out) as r:
        kinds = [(e.utt_id, e.kind) for e in r.errors]
        assert r.complete is True
    assert kinds == [("03a01Fa_copy", REJECTED), ("broken", FAILED)]
    parts = sorted(p.name for p in (dask_out.parent / "combined.zarr.parts").glob("part-*"))
    assert parts == ["part-0-of-2.zarr", "part-1-of-2.zarr"]
    with CacheReader(dask_out.parent / "combined.zarr.parts" / "part-1-of-2.zarr") as p1:
        assert p1.n == 2 and [e.utt_id for e in p1.errors] == ["broken"]
        assert p1.identity_hash != r.identity_hash  # a part is never mistaken for the whole


def test_rerun_refuses_existing_out_and_overwrite_replaces_it(dask_out, single, corpus_root, tmp_path):
    with pytest.raises(CacheError, match="already exists"):
        combine_parts(dask_out.parent / "combined.zarr.parts", dask_out)
    with pytest.raises(CacheError, match="already exists"):  # before any cluster starts
        extract_with_workers(read_corpus("csv", corpus_root), dask_out, ExtractionOptions(**OPTS), workers=2)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(CacheError, match="not an nser-pipeline cache; nothing was changed"):
        combine_parts(dask_out.parent / "combined.zarr.parts", tmp_path / "notes", overwrite=True)
    with pytest.raises(CacheError, match="not an nser-pipeline cache; nothing was changed"):  # before any cluster
        extract_with_workers(read_corpus("csv", corpus_root), tmp_path / "notes", ExtractionOptions(**OPTS, overwrite=True),
                             workers=2)
    assert not (tmp_path / "notes.parts").exists()
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    out = tmp_path / "again.zarr"
    shutil.copytree(single, out)
    (tmp_path / ".again.zarr.combining").mkdir()  # left by a combine killed midway
    (tmp_path / ".again.zarr.combining" / "zarr.json").write_text("{}")
    combine_parts(dask_out.parent / "combined.zarr.parts", out, overwrite=True)
    assert_same_cache(single, out)
    assert not list(tmp_path.glob(".again.zarr.combining*")) and not list(tmp_path.glob(".again.zarr.replaced"))


def _copy_parts(dask_out: Path, to: Path) -> Path:
    shutil.copytree(dask_out.parent / "combined.zarr.parts", to)
    return to


def test_combine_refuses_a_missing_part(dask_out, tmp_path):
    parts = _copy_parts(dask_out, tmp_path / "p")
    shutil.rmtree(parts / "part-1-of-2.zarr")
    with pytest.raises(CacheError, match=r"part\(s\) \[1\] of 2 are missing"):
        combine_parts(parts, tmp_path / "out.zarr")
    res = CliRunner().invoke(cache_group, ["combine", str(parts), "--out", str(tmp_path / "out.zarr")])
    assert res.exit_code != 0 and "are missing" in res.output
    assert not (tmp_path / "out.zarr").exists()


def test_a_part_is_not_a_corpus_for_training_or_the_probe(dask_out):
    """A finished part is complete as a cache, but holds one block of the corpus (its folds cut at a
    batch): training and the probe refuse it (the same guard), and under --allow-missing the other
    parts' entries are counted as left out."""
    from pipeline.folds import OTHER_PARTS, check_cache_complete, corpus_folds, left_out

    part = CacheReader(dask_out.parent / "combined.zarr.parts" / "part-1-of-2.zarr")
    assert part.complete
    with pytest.raises(NserError, match=r"part 1 of 2 of an extraction in parts \(3 of the corpus's 8 entries\): "
                                        r"combine the parts first"):
        check_cache_complete(part, corpus_folds(part, []), allow_missing=False)
    check_cache_complete(part, corpus_folds(part, []), allow_missing=True)
    assert left_out(part, corpus_folds(part, []))[OTHER_PARTS] == 5
    assert OTHER_PARTS not in left_out(CacheReader(dask_out), corpus_folds(CacheReader(dask_out), []))


def test_combine_refuses_an_incomplete_part(dask_out, tmp_path):
    parts = _copy_parts(dask_out, tmp_path / "p")
    group = zarr.open_group(str(parts / "part-0-of-2.zarr"), mode="r+")  # as a part killed before its last commit
    group.attrs[ATTR_KEY] = dict(group.attrs[ATTR_KEY], n_committed=2)
    with pytest.raises(CacheError, match="part 0 is incomplete"):
        combine_parts(parts, tmp_path / "out.zarr")


def test_combine_refuses_parts_of_other_settings(dask_out, corpus_root, tmp_path, cache_dir):
    other = tmp_path / "other.zarr"
    res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--data-root", str(corpus_root), "--model",
                                               OPTS["model"], "--context", "trimmed", "--tokens", "transcript",
                                               "--batch-size", "2", "--seed", "1", "--parts", "2", "--part", "1",
                                               "--quiet", "--out", str(other)])
    assert res.exit_code == 0, res.output
    parts = _copy_parts(dask_out, tmp_path / "p")
    shutil.rmtree(parts / "part-1-of-2.zarr")
    shutil.copytree(tmp_path / "other.zarr.parts" / "part-1-of-2.zarr", parts / "part-1-of-2.zarr")
    with pytest.raises(CacheError, match=r"part 1 was extracted with other settings .*condition\.seed: 0 -> 1"):
        combine_parts(parts, tmp_path / "out.zarr")


def test_combine_refuses_overlapping_parts(dask_out, tmp_path):
    parts = _copy_parts(dask_out, tmp_path / "p")
    shutil.rmtree(parts / "part-1-of-2.zarr")
    shutil.copytree(parts / "part-0-of-2.zarr", parts / "part-1-of-2.zarr")  # part 0 again, relabelled part 1
    group = zarr.open_group(str(parts / "part-1-of-2.zarr"), mode="r+")
    attrs = dict(group.attrs[ATTR_KEY])
    attrs["identity"] = dict(attrs["identity"], part=dict(attrs["identity"]["part"], index=1))
    group.attrs[ATTR_KEY] = attrs
    with pytest.raises(CacheError, match="is in part 0 and part 1; parts must not overlap"):
        combine_parts(parts, tmp_path / "out.zarr")


def test_local_cluster_spreads_parts_over_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [local_device("auto", k) for k in (0, 1, 5)] == ["cuda:0", "cuda:1", "cuda:1"]
    assert local_device("cpu", 3) == "cpu" and local_device("cuda:2", 3) == "cuda:2"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert local_device("auto", 3) == "auto"


def test_parts_are_whole_batches_and_split_options_are_checked():
    assert [part_range(7, 2, k, 2) for k in range(2)] == [range(0, 4), range(4, 7)]
    assert [part_range(10, 3, k, 3) for k in range(3)] == [range(0, 3), range(3, 6), range(6, 10)]
    with pytest.raises(NserError, match="at least one batch"):
        part_range(3, 2, 0, 3)
    for args, msg in ((["--part", "1"], "go together"), (["--parts", "2", "--part", "2"], "0 to 1"),
                      (["--workers", "2", "--parts", "2", "--part", "0"], "leave out"),
                      (["--scheduler", "tcp://x:1"], "goes with --workers")):
        res = CliRunner().invoke(extract_command, ["--corpus", "csv", "--data-root", ".", "--out", "x.zarr", *args])
        assert res.exit_code == 2 and msg in res.output, res.output
