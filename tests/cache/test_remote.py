"""Caches read over a URL: a real HTTP server on loopback serving a cache folder (fsspec + aiohttp)."""

import functools
import json
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from pipeline.cache.reader import CacheReader
from pipeline.errors import CacheError
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train_on_cache
from tests.helpers import make_cache

pytest.importorskip("aiohttp", reason="https:// caches need aiohttp (pip install 'nser-pipeline[remote]')")


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with HTTP Range requests (as nginx, S3 or GCS serve them): zarr reads a shard's
    index and chunks by byte range. The standard library's handler ignores Range."""

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        spec = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not spec or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        lo, _, hi = spec.removeprefix("bytes=").partition("-")
        start, end = (size - int(hi), size - 1) if lo == "" else (int(lo), min(size - 1, int(hi)) if hi else size - 1)
        fh = path.open("rb")
        fh.seek(start)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._range_left = end - start + 1
        return fh

    def copyfile(self, source, outputfile) -> None:
        left = getattr(self, "_range_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(left))
        self._range_left = None


@pytest.fixture
def served(tmp_path):
    """(local cache path, its URL) with a static HTTP server over the folder holding it."""
    root = tmp_path / "www"
    root.mkdir()
    local = make_cache(root / "c.zarr")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield local, f"http://127.0.0.1:{server.server_address[1]}/c.zarr"
    server.shutdown()
    server.server_close()


def test_reads_the_same_values_over_http(served):
    local, url = served
    with CacheReader(local) as a, CacheReader(url) as b:
        assert b.path is None and b.location == url
        assert b.identity_hash == a.identity_hash and b.n == a.n == 18
        for col in a.table:
            assert list(b.table[col]) == list(a.table[col]) or col == "realized_snr_db"
        sel = a.selection("enc:all,dec:all")
        for k in range(a.n):
            for x, y in zip(a.read_states(k, sel), b.read_states(k, sel)):
                np.testing.assert_array_equal(x, y)
        info = b.info()
        assert info["path"] == url and info["bytes"] is None and info["n_utterances"] == 18


def test_training_from_a_url_matches_the_local_run(served, tmp_path):
    local, url = served
    cfg = TrainConfig(fusion="mean", layers="enc:all", epochs=2, batch_size=4, hidden=8)
    m_local = train_on_cache(local, tmp_path / "r_local", cfg, progress=False)
    m_url = train_on_cache(url, tmp_path / "r_url", cfg, progress=False)
    assert m_url["folds"] == m_local["folds"]
    assert json.loads((tmp_path / "r_url" / "config.json").read_text())["cache"]["path"] == url


def test_missing_shard_is_refused_over_http(served):
    local, url = served
    shard = next(p for p in sorted((local / "encoder" / "layer_01" / "c").rglob("*")) if p.is_file())
    shard.unlink()
    with CacheReader(url) as r:
        with pytest.raises(CacheError, match="lacks 1 stored file"):
            r.read_states(0, r.selection("enc:1"))


def test_absent_url_and_misplaced_options_are_clear_errors(served, tmp_path):
    local, url = served
    with pytest.raises(CacheError):
        CacheReader(url.replace("c.zarr", "nothing.zarr"))
    with pytest.raises(CacheError, match="apply to URLs"):
        CacheReader(local, {"anon": True})


def test_cli_info_and_train_from_a_url(served, tmp_path):
    local, url = served
    nser = Path(sys.executable).with_name("nser")
    if not nser.exists():
        pytest.skip("console scripts not installed (pip install -e .)")
    res = subprocess.run([str(nser), "cache", "info", "--json", url], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n_utterances"] == 18
    bad = subprocess.run([str(nser), "cache", "info", url, "--storage-options", "{nope"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "not JSON" in bad.stderr
    res = subprocess.run([str(nser.with_name("nser-train")), "--cache", url, "--fusion", "mean", "--layers", "enc:1",
                          "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "mean ± std" in res.stdout
