"""Fault injection on real Zarr caches: flipped bytes, truncated and missing shards, a second writer."""

import json
import subprocess
import sys

import pytest

from pipeline.cache.lock import WriterLock
from pipeline.cache.reader import CacheReader
from pipeline.cache.verify import verify_cache
from pipeline.cache.writer import CacheWriter
from pipeline.errors import CacheError
from tests.helpers import LAYOUT, attrs, write_cache


@pytest.fixture
def cache(tmp_path):
    path = tmp_path / "c.zarr"
    write_cache(path, 25)
    return path


def affected_by(path, layer, rows):
    t = CacheReader(path).table
    return {str(t["utt_id"][k]) for k in range(len(t["utt_id"]))
            if t["frame_offset"][k] < rows[1] and t["frame_offset"][k] + t["n_frames"][k] > rows[0]}


def test_clean_cache_verifies(cache):
    rep = verify_cache(str(cache))
    assert rep.ok and rep.chunks_checked > 0, rep.problems


def test_flipped_byte_is_found_and_mapped_to_utterances(cache):
    shard = cache / "encoder/layer_01/c/0/0"
    data = bytearray(shard.read_bytes())
    data[40] ^= 0x01  # inside the first inner chunk (rows 0-15)
    shard.write_bytes(bytes(data))
    rep = verify_cache(str(cache))
    assert not rep.ok
    assert any("encoder/layer_01: rows 0-16" in p and "checksum" in p for p in rep.problems), rep.problems
    assert set(rep.affected) == affected_by(cache, "encoder/layer_01", (0, 16))


def test_truncated_and_missing_shards(cache):
    shard = cache / "encoder/layer_02/c/1/0"
    shard.write_bytes(shard.read_bytes()[:300])
    (cache / "decoder/layer_00/c/0/0").unlink()
    rep = verify_cache(str(cache))
    assert any(p.startswith("encoder/layer_02: rows 128-") for p in rep.problems), rep.problems
    assert any("decoder/layer_00" in p and "missing" in p for p in rep.problems), rep.problems
    assert affected_by(cache, "encoder/layer_02", (128, 256)) <= set(rep.affected)


def test_verify_cli_exit_status(cache):
    exe = [sys.executable, "-m", "pipeline.cli", "cache", "verify", str(cache), "--json"]
    ok = subprocess.run(exe, capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"]
    shard = cache / "encoder/layer_00/c/0/0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = subprocess.run(exe, capture_output=True, text=True)
    assert bad.returncode == 1 and json.loads(bad.stdout)["affected_utterances"]


def test_second_writer_refused_and_dead_writer_releases(tmp_path):
    path = tmp_path / "c.zarr"
    first = CacheWriter(path, attrs(), layout=LAYOUT)
    with pytest.raises(CacheError, match="being written by pid"):
        CacheWriter(path, attrs(), layout=LAYOUT)
    first.close()
    CacheWriter(path, attrs(), layout=LAYOUT).close()  # released on close
    # A writer killed with SIGKILL leaves no stuck lock: the OS drops flock locks with the process.
    code = (f"from pipeline.cache.lock import WriterLock; import os, signal, pathlib; "
            f"WriterLock(pathlib.Path({str(path)!r})).acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    lock = WriterLock(path)
    lock.acquire()
    lock.release()
