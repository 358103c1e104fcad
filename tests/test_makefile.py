"""The Makefile front door as a user types it (`make -n` shows the commands without running them)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def make(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


def test_snr_without_noise_extracts_the_three_demand_conditions(tmp_path):
    data, demand = tmp_path / "IEMOCAP", tmp_path / "DEMAND"
    data.mkdir()
    demand.mkdir()
    res = make("-n", "extract", "DATASET=iemocap", "SNR=-5", f"DATA_ROOT={data}", f"DEMAND_ROOT={demand}")
    assert res.returncode == 0, res.stderr
    for preset in ("human", "park", "traffic"):
        assert (f"--noise {demand} --noise-preset {preset} --snr -5 "
                f"--out caches/iemocap/{preset}_-5dB/openai_whisper-small.zarr") in res.stdout


def test_missing_default_paths_are_named(tmp_path):
    res = make("extract", "DATASET=iemocap", "SNR=-5", f"DATA_ROOT={tmp_path / 'nowhere'}")
    assert res.returncode != 0
    assert f"DATA_ROOT={tmp_path / 'nowhere'} does not exist" in res.stdout
    res = make("extract", "DATASET=iemocap", "SNR=-5", f"DATA_ROOT={tmp_path}", f"DEMAND_ROOT={tmp_path / 'D'}")
    assert res.returncode != 0
    assert f"DEMAND_ROOT={tmp_path / 'D'} does not exist" in res.stdout and "NOISE=" in res.stdout


def test_help_lists_variables_with_defaults():
    res = make("help")
    assert res.returncode == 0
    for var in ("DATASET=emodb", "DEMAND_ROOT=data/DEMAND", "NOISE_PRESETS=human park traffic", "SNR=clean"):
        assert var in res.stdout
