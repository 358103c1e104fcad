"""Both notebooks run top to bottom with nbclient on caches and a probe.csv made in the test, and
end with a figure; the committed files carry no outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("xarray")

from pipeline.cache.reader import CacheReader  # noqa: E402
from pipeline.probe import probe_layers, probe_report, write_probe_outputs  # noqa: E402
from tests.helpers import probe_cache  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory) -> Path:
    return probe_cache(tmp_path_factory.mktemp("nb") / "fake.zarr")


@pytest.fixture
def kernel_env(tmp_path, monkeypatch) -> None:
    """A `python3` kernel spec that runs this very interpreter, first on JUPYTER_PATH, so that a
    python3 kernel installed elsewhere (another Python, without this package) is never picked."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("NSER_RESULTS", raising=False)
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable


def execute(name: str):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name} is committed with outputs"
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return [c for c in nb.cells if c.cell_type == "code"]


def text(cell) -> str:
    parts = []
    for out in cell.outputs:
        parts.append(out.get("text", ""))
        parts += [str(out.get("data", {}).get(kind, "")) for kind in ("text/plain", "text/html")]
    return "\n".join(parts)


def has_png(cell) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.outputs)


@pytest.mark.parametrize("which", ["fake", "real"])
def test_open_cache_notebook(which, fake_cache, kernel_env, monkeypatch, request):
    cache = fake_cache if which == "fake" else request.getfixturevalue("small_cache")
    reader = CacheReader(cache)
    monkeypatch.setenv("NSER_CACHE", str(cache))
    cells = execute("01_open_cache.ipynb")
    everything = "\n".join(text(c) for c in cells)
    assert f"identity_hash: {reader.identity_hash}" in everything
    last_enc, last_dec = reader.n_encoder_states - 1, reader.n_decoder_states - 1
    assert all(f"{v}" in everything for v in ("enc0", f"enc{last_enc}", "dec0", f"dec{last_dec}", "frame_utt"))
    stats = next(c for c in cells if "max_abs" in "".join(c.source) and "dask.compute" in "".join(c.source))
    table = next(out["data"]["text/plain"] for out in stats.outputs if "text/plain" in out.get("data", {}))
    lines = table.splitlines()
    assert "max_abs" in lines[0]
    assert sum(" encoder " in ln for ln in lines) == reader.n_encoder_states
    assert sum(" decoder " in ln for ln in lines) == reader.n_decoder_states
    assert has_png(cells[-1])


def test_layerwise_notebook(fake_cache, tmp_path, kernel_env, monkeypatch):
    reader = CacheReader(fake_cache)
    rows = probe_layers(reader, "enc:all,dec:all", seed=0)
    paths = write_probe_outputs(probe_report(reader, rows, seed=0, pooling="mean", layers="enc:all,dec:all",
                                             seconds=0.0), tmp_path / "probe")
    grid = tmp_path / "results.csv"
    grid.write_text(  # the columns of nser-grid's results.csv that matter here (docs/grid.md)
        "run_key,status,condition,fusion,layers,stack,uar,uar_std\n"
        "k1,done,babble_0dB,single,enc:1,enc,0.5,0.1\nk2,done,babble_0dB,single,enc:2,enc,0.9,0.05\n"
        "k3,done,babble_0dB,single,dec:0,dec,0.4,0.1\nk4,failed,babble_0dB,single,dec:1,dec,,\n"
        "k5,done,babble_0dB,l-adapter,\"enc:all,dec:all\",enc+dec,0.95,0.02\n")
    monkeypatch.setenv("NSER_PROBE_CSV", str(paths["csv"]))
    monkeypatch.setenv("NSER_RESULTS", str(grid))
    cells = execute("02_layerwise_results.ipynb")
    everything = "\n".join(text(c) for c in cells)
    assert "enc2" in everything
    assert "3 single-layer runs of 5" in everything  # the failed run and the fusion are left out
    assert has_png(cells[-1])

    monkeypatch.delenv("NSER_RESULTS")  # the probe alone is enough
    cells = execute("02_layerwise_results.ipynb")
    assert "grid: absent" in text(cells[0]) and has_png(cells[-1])
