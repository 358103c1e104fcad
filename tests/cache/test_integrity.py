"""Integrity faults on real Zarr caches: lost shards, non-finite values, writers reaching one cache
through path aliases or behind each other's backs, failed commits, overwrite under a reader or of a
folder that is not a cache. Each test injects the fault and asserts the refusal."""

import errno
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from pipeline.cache.chunks import missing_objects
from pipeline.cache.reader import CacheReader
from pipeline.cache.schema import ATTR_KEY, table_columns
from pipeline.cache.verify import verify_cache
from pipeline.cache.writer import CacheWriter
from pipeline.errors import CacheError, NonFiniteStatesError
from tests.helpers import LAYOUT, attrs, fake_states, row, write_cache


def verify_cli(path):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "cache", "verify", str(path), "--json"],
                          capture_output=True, text=True)


def utterances_overlapping(path, rows, stack="encoder"):
    t = CacheReader(path).table
    off, cnt = ("frame_offset", "n_frames") if stack == "encoder" else ("token_offset", "n_tokens")
    return {str(u) for u, lo, n in zip(t["utt_id"], t[off], t[cnt]) if lo < rows[1] and lo + n > rows[0]}


def assert_same_cache(a, b):
    ra, rb = CacheReader(a), CacheReader(b)
    assert ra.n == rb.n
    for col in table_columns():
        if ra.table[col].dtype.kind == "f":
            np.testing.assert_array_equal(ra.table[col], rb.table[col])
        else:
            assert list(ra.table[col]) == list(rb.table[col]), col
    sel = ra.selection("enc:all,dec:all")
    for i in range(ra.n):
        for x, y in zip(ra.read_states(i, sel), rb.read_states(i, sel)):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(ra.tokens(i), rb.tokens(i))


# --- 1. a missing shard must not read as zeros -----------------------------------------------

def test_missing_shard_refused_on_read_and_reported_by_verify(tmp_path):
    path = tmp_path / "c.zarr"
    write_cache(path, 25)
    shard = path / "encoder/layer_02/c/1/0"  # rows 128-255
    hit = utterances_overlapping(path, (128, 256))
    shard.unlink()  # a partial copy
    r = CacheReader(path)
    k = next(i for i, u in enumerate(r.table["utt_id"]) if u in hit)
    with pytest.raises(CacheError) as err:
        r.read_states(k, r.selection("enc:2"))
    msg = str(err.value)
    assert str(shard) in msg and "would read them as zeros" in msg
    assert all(u in msg for u in hit)
    # Other layers are whole and still read.
    assert r.read_states(k, r.selection("enc:1"))[0].shape[0] == r.table["n_frames"][k]
    rep = verify_cli(path)
    assert rep.returncode == 1
    out = json.loads(rep.stdout)
    assert any("encoder/layer_02: rows 128-" in p and "encoder/layer_02/c/1/0" in p and "missing" in p
               for p in out["problems"]), out["problems"]
    assert hit <= set(out["affected_utterances"])


def test_array_shorter_than_the_table_refused_on_read_and_reported_by_verify(tmp_path):
    """A copy taken while extraction appended: three encoder arrays' metadata (their shape) from an
    earlier commit than the table. Reading them would give short or empty states; the reader refuses
    and names the utterances, verify reports them (no traceback), the decoder's whole arrays still read."""
    path = tmp_path / "c.zarr"
    write_cache(path, 12)
    stale = {f"encoder/layer_0{i}/zarr.json": (path / f"encoder/layer_0{i}/zarr.json").read_text() for i in range(3)}
    write_cache(path, 14, start=12)
    for name, text in stale.items():
        (path / name).write_text(text)
    r = CacheReader(path)
    with pytest.raises(CacheError) as err:
        r.read_states(13, r.selection("enc:1"))
    msg = str(err.value)
    assert "encoder/layer_01 has" in msg and "2 utterance(s) would read short or empty states: u12, u13" in msg
    assert r.read_states(13, r.selection("dec:0"))[0].shape[0] == r.table["n_tokens"][13]
    rep = verify_cli(path)
    assert rep.returncode == 1 and "Traceback" not in rep.stderr
    out = json.loads(rep.stdout)
    assert sum("rows, the committed utterances need" in p for p in out["problems"]) == 3, out["problems"]
    assert {"u12", "u13"} <= set(out["affected_utterances"])


def test_missing_shard_stops_training(tmp_path):
    from pipeline.train.config import TrainConfig
    from pipeline.train.trainer import train_on_cache
    from tests.helpers import make_cache
    path = make_cache(tmp_path / "c.zarr")
    (path / "encoder/layer_01/c/0/0").unlink()
    with pytest.raises(CacheError, match="encoder/layer_01/c/0/0"):
        train_on_cache(path, tmp_path / "run", TrainConfig(fusion="single", layers="enc:1", epochs=1,
                                                           batch_size=4, threads=1), progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_missing_tokens_and_table_chunks_refused(tmp_path):
    path = tmp_path / "c.zarr"
    write_cache(path, 25)
    (path / "decoder/tokens/c/0").unlink()
    r = CacheReader(path)
    with pytest.raises(CacheError, match="decoder/tokens/c/0"):
        r.tokens(3)
    (path / "utterances/hyp_loop/c/0").unlink()  # an all-False column: stored all the same
    with pytest.raises(CacheError, match="utterances/hyp_loop/c/0"):
        CacheReader(path)
    assert verify_cli(path).returncode == 1


def test_all_zero_rows_store_every_chunk_also_when_appended(tmp_path):
    """Zeros are stored like any value, so "absent" always means "lost"; reopened (appending)
    writers store them too (write_empty_chunks is runtime config, not stored metadata)."""
    def zeros(k):
        nf, nt = 10 + 7 * k, 4 + k % 5
        return [np.zeros((nf, 8), np.float16)] * 3, [np.zeros((nt, 8), np.float16)] * 2, np.zeros(nt)

    zero, rand = tmp_path / "zero.zarr", tmp_path / "rand.zarr"
    for stop in (12, 25):  # the second writer reopens the cache and appends
        with CacheWriter(zero, attrs(), layout=LAYOUT) as w:
            for k in range(stop):
                if f"u{k}" not in w.done_ids:
                    w.add(row(k), *zeros(k))
    write_cache(rand, 25)
    r = CacheReader(zero)
    for name in ["encoder/layer_00", "encoder/layer_02", "decoder/layer_01", "decoder/tokens"] + \
            [f"utterances/{c}" for c in table_columns()]:
        stack = name.split("/")[0] if name.startswith(("encoder", "decoder")) else None
        rows = r._committed_rows(stack) if stack else r.n
        assert not missing_objects(r.group[name], rows), name
    assert r.group["encoder/layer_00"].shape[0] > 2 * LAYOUT.encoder_shard_frames  # spans several shards

    def files(root):
        return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("c/**/*") if p.is_file()}
    # Every inner chunk is inside its shard: the same files, of the same sizes, as random data.
    assert files(zero) == files(rand)
    assert verify_cache(str(zero)).ok


# --- 2. non-finite values --------------------------------------------------------------------

@pytest.mark.parametrize("where, value", [("snr_db", math.nan), ("snr_db", math.inf), ("frame_rate", -math.inf)])
def test_non_finite_attributes_refused(tmp_path, where, value):
    a = attrs()
    if where == "snr_db":
        a["condition"] = dict(a["condition"], snr_db=value)
        at = "condition/snr_db"
    else:
        a["model"] = dict(a["model"], frame_rate=value)
        at = "model/frame_rate"
    with pytest.raises(CacheError, match=f"non-finite number.*{at}"):
        CacheWriter(tmp_path / "c.zarr", a, layout=LAYOUT)
    assert not (tmp_path / "c.zarr").exists()


def test_cache_holding_nan_attributes_refused_on_open(tmp_path):
    """A cache written before the check (`--snr nan` put a bare NaN into zarr.json)."""
    path = tmp_path / "c.zarr"
    write_cache(path, 3)
    meta = path / "zarr.json"
    meta.write_text(meta.read_text().replace('"snr_db": null', '"snr_db": NaN'))
    with pytest.raises(CacheError, match="non-finite number.*condition/snr_db.*re-extract"):
        CacheReader(path)
    assert verify_cli(path).returncode == 1


def test_non_finite_states_refused_naming_the_utterance(tmp_path):
    path = tmp_path / "c.zarr"
    rng = np.random.default_rng(0)
    with CacheWriter(path, attrs(), layout=LAYOUT) as w:
        w.add(row(0), *fake_states(rng, 0))
        enc, dec, tok = fake_states(rng, 1)
        enc[1] = enc[1].copy()
        enc[1][3, 2] = np.nan
        with pytest.raises(NonFiniteStatesError, match=r"u1: encoder layer 1 .*1 non-finite.*row 3"):
            w.add(row(1), enc, dec, tok)
        # Beyond float16's range: finite in float32, Inf once stored.
        enc, dec, tok = fake_states(rng, 2)
        dec = [d.astype(np.float32) for d in dec]
        dec[0][0, 0] = 1e6
        with pytest.raises(NonFiniteStatesError, match="u2: decoder layer 0"):
            w.add(row(2), enc, dec, tok)
        w.add(row(3), *fake_states(rng, 3))  # a refused utterance left nothing behind
    r = CacheReader(path)
    assert list(r.table["utt_id"]) == ["u0", "u3"]
    assert verify_cache(str(path)).ok
    assert issubclass(NonFiniteStatesError, CacheError)


def test_verify_flags_non_finite_values(tmp_path):
    path = tmp_path / "c.zarr"
    write_cache(path, 25)
    r = CacheReader(path)
    k = 7
    lo, hi = r.utterance_rows("decoder", k)
    elo, _ = r.utterance_rows("encoder", k + 2)
    r.close()
    g = zarr.open_group(str(path), mode="r+")  # written through zarr: the checksums are valid
    g["decoder/layer_01"][lo + 1:lo + 3] = np.inf
    g["encoder/layer_00"][elo, 5] = np.nan
    rep = verify_cache(str(path))
    assert not rep.ok
    assert f"decoder/layer_01: rows {lo + 1}-{lo + 3}: non-finite values (NaN or Inf)" in rep.problems, rep.problems
    assert f"encoder/layer_00: rows {elo}-{elo + 1}: non-finite values (NaN or Inf)" in rep.problems
    assert set(rep.affected) == {f"u{k}", f"u{k + 2}"}
    assert verify_cli(path).returncode == 1


# --- 4. two writers --------------------------------------------------------------------------

def test_writer_through_a_path_alias_refused(tmp_path, monkeypatch):
    path = tmp_path / "c.zarr"
    first = CacheWriter(path, attrs(), layout=LAYOUT)
    (tmp_path / "alias.zarr").symlink_to(path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    for alias in (tmp_path / "alias.zarr", tmp_path / "sub" / ".." / "c.zarr", "../c.zarr"):
        with pytest.raises(CacheError, match="being written by pid"):
            CacheWriter(alias, attrs(), layout=LAYOUT)
    first.close()
    CacheWriter(tmp_path / "alias.zarr", attrs(), layout=LAYOUT).close()


def test_commit_moved_behind_the_writer_refused(tmp_path):
    path = tmp_path / "c.zarr"
    rng = np.random.default_rng(0)
    w = CacheWriter(path, attrs(), layout=LAYOUT)
    w.add(row(0), *fake_states(rng, 0))
    w.commit()
    # Another writer (the lock did not exclude it) committed behind this one's back.
    g = zarr.open_group(str(path), mode="r+")
    g.attrs[ATTR_KEY] = dict(g.attrs[ATTR_KEY], n_committed=0)
    w.add(row(1), *fake_states(rng, 1))
    with pytest.raises(CacheError, match="changed by another writer.*expected 1.*one writer per cache"):
        w.commit()
    with pytest.raises(CacheError, match="stopped after"):
        w.close()  # never commits again
    assert CacheReader(path).n == 0


def test_second_writer_bypassing_the_lock_stops_the_first(tmp_path, monkeypatch):
    from pipeline.cache.lock import WriterLock
    path = tmp_path / "c.zarr"
    rng = np.random.default_rng(0)
    data = [fake_states(rng, k) for k in range(6)]
    first = CacheWriter(path, attrs(), layout=LAYOUT)
    first.add(row(0), *data[0])
    first.commit()
    first.add(row(1), *data[1])
    monkeypatch.setattr(WriterLock, "acquire", lambda self: None)  # as flock on some NFS mounts
    with pytest.raises(CacheError, match="changed by another writer"):
        with CacheWriter(path, attrs(), layout=LAYOUT) as second:
            second.add(row(2), *data[2])
            second.commit()
            first.commit()  # the first writer's next commit sees the second's claim
    # The second writer's exit committed nothing more; the cache holds exactly what was committed.
    r = CacheReader(path)
    assert list(r.table["utt_id"]) == ["u0", "u2"]
    assert verify_cache(str(path)).ok
    first.lock.release()


# --- 5. a failed commit never commits twice --------------------------------------------------

def test_failed_commit_point_write_never_commits_twice(tmp_path, monkeypatch):
    ref, path = tmp_path / "ref.zarr", tmp_path / "c.zarr"
    write_cache(ref, 25)
    rng = np.random.default_rng(0)
    data = [fake_states(rng, k) for k in range(25)]
    real_set = LocalStore.set
    state = {"armed": False, "failed": 0}

    async def full_disk_once(self, key, value):
        if state["armed"] and key == "zarr.json" and not state["failed"]:
            state["failed"] += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real_set(self, key, value)

    monkeypatch.setattr(LocalStore, "set", full_disk_once)
    with pytest.raises(CacheError, match="writing a commit failed.*No space left.*keeps its previous commit "
                                         r"point \(4 utterances\)"):
        with CacheWriter(path, attrs(), layout=LAYOUT, commit_frames=60) as w:
            for k in range(12):
                if k == 4:
                    state["armed"] = True  # the commit point of the batch u4, u5 hits a full disk
                w.add(row(k), *data[k])
                w.commit_if_due()
    assert state["failed"] == 1
    r = CacheReader(path)
    assert list(r.table["utt_id"]) == ["u0", "u1", "u2", "u3"]
    assert verify_cache(str(path)).ok
    r.close()
    write_cache(path, 25)  # the rerun resumes from the commit point on disk
    assert_same_cache(ref, path)
    assert verify_cache(str(path)).ok


def test_failed_final_commit_is_not_retried_on_exit(tmp_path, monkeypatch):
    path = tmp_path / "c.zarr"
    rng = np.random.default_rng(0)
    w = CacheWriter(path, attrs(), layout=LAYOUT)
    w.add(row(0), *fake_states(rng, 0))
    real = CacheWriter._write_attrs
    calls = []

    def fail_once(self, a):
        calls.append(a["n_committed"])
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, a)

    monkeypatch.setattr(CacheWriter, "_write_attrs", fail_once)
    with pytest.raises(CacheError, match="No space left"):
        w.close()
    with pytest.raises(CacheError, match="stopped after"):
        w.__exit__(None, None, None)
    w.__exit__(KeyError, KeyError("x"), None)  # the error path releases without committing
    assert calls == [1] and CacheReader(path).n == 0


# --- 6. --overwrite under a reader ------------------------------------------------------------

def test_overwrite_refused_while_a_reader_holds_the_cache(tmp_path):
    path = tmp_path / "c.zarr"
    data = write_cache(path, 25)
    other = attrs(identity={"k": 2})
    reader = CacheReader(path)
    with pytest.raises(CacheError, match="open for reading.*--overwrite would replace"):
        CacheWriter(path, other, layout=LAYOUT, overwrite=True)
    np.testing.assert_array_equal(reader.read_states(3, reader.selection("enc:0"))[0], data[3][0][0])
    write_cache(path, 26)  # an appending writer is not blocked by readers
    reader.close()
    CacheWriter(path, other, layout=LAYOUT, overwrite=True).close()
    assert CacheReader(path).n == 0
    with CacheReader(path):
        with pytest.raises(CacheError, match="open for reading"):
            CacheWriter(path, attrs(), layout=LAYOUT, overwrite=True)
    CacheReader(path)  # dropped at once: garbage collection releases it
    CacheWriter(path, attrs(), layout=LAYOUT, overwrite=True).close()


def test_overwrite_killed_mid_delete_leaves_a_cache_or_none(tmp_path, monkeypatch):
    """The old cache is renamed aside before deletion, so a crash while deleting it leaves no
    half-deleted folder at --out; the rerun finishes the job and cleans up."""
    path = tmp_path / "c.zarr"
    write_cache(path, 5)
    real_rmtree = shutil.rmtree

    def killed(p, *a, **k):
        if not str(p).endswith(".c.zarr.replaced"):
            return real_rmtree(p, *a, **k)
        (p / "zarr.json").unlink()  # the delete got this far
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        CacheWriter(path, attrs(identity={"k": 2}), layout=LAYOUT, overwrite=True)
    monkeypatch.undo()
    assert CacheReader(path).n == 0  # the new, empty cache is already in place
    with CacheWriter(path, attrs(identity={"k": 2}), layout=LAYOUT, overwrite=True) as w:
        w.add(row(0), *fake_states(np.random.default_rng(0), 0))
    assert CacheReader(path).n == 1 and not list(tmp_path.glob(".c.zarr.replaced"))


def test_overwrite_refused_while_another_process_reads(tmp_path):
    path = tmp_path / "c.zarr"
    write_cache(path, 5)
    (tmp_path / "alias.zarr").symlink_to(path)
    code = ("import sys; from pipeline.cache.reader import CacheReader; "
            f"r = CacheReader({str(tmp_path / 'alias.zarr')!r}); print('open', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        assert proc.stdout.readline().strip() == "open"
        with pytest.raises(CacheError, match="open for reading"):
            CacheWriter(path, attrs(identity={"k": 2}), layout=LAYOUT, overwrite=True)
        assert CacheReader(path).n == 5
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    CacheWriter(path, attrs(identity={"k": 2}), layout=LAYOUT, overwrite=True).close()


def test_reader_works_where_no_lock_file_can_be_made(tmp_path, monkeypatch):
    """Best effort: a cache on a read-only file system is read without the lock."""
    path = tmp_path / "c.zarr"
    write_cache(path, 3)
    for lock in tmp_path.glob(".c.zarr.nser-*"):
        lock.unlink()
    real_open = os.open

    def read_only_fs(file, flags, *args):
        if str(file).endswith(".nser-readers"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, flags, *args)

    monkeypatch.setattr(os, "open", read_only_fs)  # the os module the locks use
    with CacheReader(path) as r:
        assert r.n == 3 and r.read_states(0, r.selection("enc:0"))[0].shape[0] == 10
    assert not list(tmp_path.glob(".c.zarr.nser-readers"))


def test_trainer_releases_the_cache_when_done(tmp_path):
    from pipeline.train.config import TrainConfig
    from pipeline.train.trainer import train_on_cache
    from tests.helpers import make_cache
    path = make_cache(tmp_path / "c.zarr")
    train_on_cache(path, tmp_path / "run", TrainConfig(fusion="single", layers="enc:1", epochs=1, batch_size=4,
                                                       threads=1), progress=False)
    CacheWriter(path, attrs(), layout=LAYOUT, overwrite=True).close()


# --- 9. --overwrite deletes only a cache -------------------------------------------------------

def test_overwrite_refuses_a_folder_that_is_not_a_cache(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    for overwrite in (True, False):
        with pytest.raises(CacheError, match=r"results is a folder holding thesis.tex, not an nser-pipeline "
                                             "cache; nothing was changed"):
            CacheWriter(out, attrs(), layout=LAYOUT, overwrite=overwrite)
    assert (out / "thesis.tex").read_text() == "years of work"
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w")  # a Zarr group, but not this tool's
    with pytest.raises(CacheError, match="holding zarr.json, not an nser-pipeline cache.*only a cache or an empty"):
        CacheWriter(plain, attrs(), layout=LAYOUT, overwrite=True)
    assert (plain / "zarr.json").exists()


def test_out_is_a_file_refused(tmp_path):
    out = tmp_path / "c.zarr"
    out.write_text("not a folder")
    for overwrite in (True, False):
        with pytest.raises(CacheError, match="c.zarr is a file, not an nser-pipeline cache"):
            CacheWriter(out, attrs(), layout=LAYOUT, overwrite=overwrite)
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("overwrite", [True, False])
def test_empty_folder_becomes_the_cache(tmp_path, overwrite):
    out = tmp_path / "c.zarr"
    out.mkdir()
    with CacheWriter(out, attrs(), layout=LAYOUT, overwrite=overwrite) as w:
        w.add(row(0), *fake_states(np.random.default_rng(0), 0))
    assert CacheReader(out).n == 1


def test_extract_cli_out_not_a_cache_is_a_clear_error(tmp_path, emodb_root, cache_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    src = sorted(emodb_root.glob("03a0*.flac"))[0]
    shutil.copy(src, corpus / src.name)
    (corpus / "manifest.csv").write_text(f"path,label,speaker\n{src.name},{src.stem[5]},03\n")
    folder, file = tmp_path / "mine", tmp_path / "file.zarr"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    file.write_text("x")
    for out, extra, says in ((folder, ["--overwrite"], "is a folder holding keep.txt, not an nser-pipeline cache"),
                             (file, [], "file.zarr is a file, not an nser-pipeline cache")):
        res = subprocess.run([sys.executable, "-m", "pipeline.cli", "extract", "--corpus", "csv", "--data-root",
                              str(corpus), "--model", "bundled:tiny.en", "--out", str(out), "--quiet", *extra],
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert says in res.stderr
    assert (folder / "keep.txt").exists() and file.read_text() == "x"
