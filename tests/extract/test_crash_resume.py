"""SIGKILL nser-extract at several points; reruns resume and end with the same cache as one clean run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.cache.reader import CacheReader
from pipeline.cache.schema import table_columns
from tests.helpers import write_manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, emodb_root):
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for spk in ("03", "08"):
        for src in sorted(emodb_root.glob(f"{spk}a0*.flac"))[:4]:
            shutil.copy(src, root / src.name)
            rows.append({"path": src.name, "label": src.stem[5], "speaker": spk})
    write_manifest(root, rows)
    return root


def extract(corpus: Path, out: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("NSER_FAILPOINT", None)
    if failpoint:
        env["NSER_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "pipeline.cli", "extract", "--corpus", "csv", "--data-root", str(corpus),
           "--model", "bundled:tiny.en", "--batch-size", "2", "--commit-frames", "150", "--quiet",
           "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def assert_same_cache(a: Path, b: Path) -> None:
    ra, rb = CacheReader(a), CacheReader(b)
    assert ra.n == rb.n == 8
    for col in table_columns():
        if col == "duration" or ra.table[col].dtype.kind == "f":
            np.testing.assert_array_equal(ra.table[col], rb.table[col])
        else:
            assert list(ra.table[col]) == list(rb.table[col]), col
    sel = ra.selection("enc:all,dec:all")
    for i in range(ra.n):
        for x, y in zip(ra.read_states(i, sel), rb.read_states(i, sel)):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(ra.tokens(i), rb.tokens(i))


def test_killed_anywhere_resumes_to_identical_cache(corpus, tmp_path, cache_dir):
    ref = tmp_path / "ref.zarr"
    assert extract(corpus, ref).returncode == 0
    out = tmp_path / "crashy.zarr"
    seen = []
    # Early (before any commit), mid-run, between array and table writes, between table writes and
    # the commit point, and right after the final commit: each run resumes the previous one.
    for point in ("extract:batch:1", "extract:batch:3", "commit:arrays-written:1",
                  "commit:table-written:1", "commit:done:1"):
        res = extract(corpus, out, point)
        assert res.returncode == -9, (point, res.stderr[-2000:])
        if (out / "zarr.json").exists():
            partial = CacheReader(out)
            seen.append(partial.n)  # a reader only ever sees committed utterances
            assert partial.info()["complete"] is False
    assert seen == sorted(seen) and seen[-1] < 8
    final = extract(corpus, out)
    assert final.returncode == 0, final.stderr
    assert_same_cache(ref, out)
    assert CacheReader(out).info()["complete"] is True
    assert not list(out.parent.glob(".crashy.zarr.creating"))
