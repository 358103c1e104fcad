"""DEMAND presets: single-channel views, other rates/channel counts, realized SNR of the mixes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from pipeline.audio import load_audio
from pipeline.errors import NserError
from pipeline.noise import NoiseBank
from pipeline.noise_presets import resolve_noise
from tests.conftest import EMODB, NOISE

ROOT = Path(__file__).resolve().parents[1]


def noise_material(seconds: float, seed: int) -> np.ndarray:
    """Real babble when the shared noise is there, else coloured random noise (16 kHz)."""
    src = NOISE / "babble"
    files = sorted(src.glob("*.flac")) if src.is_dir() else []
    n = int(seconds * 16000)
    if files:
        return sf.read(files[seed % len(files)], dtype="float32", frames=n)[0]
    white = np.random.default_rng(seed).standard_normal(n + 7)
    return (0.05 * np.convolve(white, np.ones(8) / 8, mode="valid")[:n]).astype(np.float32)


def speech() -> np.ndarray:
    src = EMODB / "audio" / "03a01Fa.flac"
    if src.is_file():
        return sf.read(src, dtype="float32")[0]
    t = np.arange(32000) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture()
def demand_root(tmp_path, monkeypatch) -> Path:
    """Three DEMAND environments in the layouts the resolver accepts, channel 1 distinct from the rest."""
    monkeypatch.setenv("NSER_CACHE_DIR", str(tmp_path / "nser-cache"))
    root = tmp_path / "DEMAND"
    meeting = root / "OMEETING"  # unpacked ENV/ layout, 16 kHz mono channels
    meeting.mkdir(parents=True)
    sf.write(meeting / "ch01.wav", noise_material(1.5, 0), 16000)
    for ch in range(2, 17):
        sf.write(meeting / f"ch{ch:02d}.wav", 10 * noise_material(1.5, ch), 16000)
    park = root / "NPARK_48k" / "NPARK"  # Zenodo zip layout, 48 kHz, and (unlike DEMAND) 2 channels
    park.mkdir(parents=True)
    mono48 = resample_poly(noise_material(1.0, 1), 3, 1).astype(np.float32)
    sf.write(park / "ch01.wav", np.stack([mono48, 0.5 * mono48], axis=1), 48000)
    sf.write(park / "ch02.wav", np.stack([mono48, mono48], axis=1), 48000)
    traffic = root / "STRAFFIC_16k" / "STRAFFIC"
    traffic.mkdir(parents=True)
    for ch in (1, 2, 3):
        sf.write(traffic / f"ch{ch:02d}.wav", noise_material(0.7, ch), 16000)
    return root


@pytest.mark.parametrize("preset,env", [("human", "OMEETING"), ("park", "NPARK"), ("traffic", "STRAFFIC")])
def test_preset_uses_channel_one_only(demand_root, preset, env):
    folder, noise_type = resolve_noise(str(demand_root), preset)
    assert noise_type == preset and Path(folder).parent.name == env and Path(folder).name == "ch01.wav"
    bank = NoiseBank(folder)
    assert bank.names == ["ch01.wav"]
    src = next(demand_root.rglob(f"{env}/ch01.wav"))
    seg, path, offset = bank.segment("Ses01F_impro01_F000", 4000)
    full = load_audio(src, max_seconds=10).samples
    assert np.array_equal(seg, np.tile(full, 2)[offset:offset + 4000])
    assert resolve_noise(str(demand_root), preset) == (folder, noise_type)


def test_48k_two_channel_noise_is_converted(demand_root):
    folder, _ = resolve_noise(str(demand_root), "park")
    raw = load_audio(Path(folder), max_seconds=10)
    assert (raw.source_rate, raw.source_channels) == (48000, 2)
    assert abs(len(raw.samples) - 16000) <= 1  # 1 s at 16 kHz, mono
    expected = 0.75 * noise_material(1.0, 1)  # mean of the two channels, back at 16 kHz
    inner = slice(200, 15800)  # away from the resampler's edge effects
    assert np.corrcoef(raw.samples[inner], expected[inner])[0, 1] > 0.99


@pytest.mark.parametrize("preset", ["human", "park", "traffic"])
def test_realized_snr_is_exact(demand_root, preset):
    folder, _ = resolve_noise(str(demand_root), preset)
    bank = NoiseBank(folder, seed=7)
    s = speech()  # 2 s: longer than the 0.7 s traffic noise, so that one is looped
    ps = np.mean(s.astype(np.float64) ** 2)
    for snr in (-10, -5, 0, 5, 10):
        res = bank.mix(s, f"utt_{snr}", float(snr))
        assert abs(res.realized_snr_db - snr) < 1e-6
        assert res.noise_file == "ch01.wav" and res.samples.shape == s.shape
        noise_part = res.samples.astype(np.float64) - s
        assert abs(10 * np.log10(ps / np.mean(noise_part ** 2)) - snr) < 0.01  # after the float32 sum


def test_demand_environment_without_preset(demand_root):
    folder, noise_type = resolve_noise(str(demand_root / "OMEETING"), None)
    assert noise_type == "OMEETING" and NoiseBank(folder).names == ["ch01.wav"]
    folder, noise_type = resolve_noise(str(demand_root / "OMEETING"), "human")  # env folder itself is fine
    assert noise_type == "human" and NoiseBank(folder).names == ["ch01.wav"]


def test_plain_folder_passes_through(tmp_path):
    plain = tmp_path / "babble"
    plain.mkdir()
    sf.write(plain / "a.wav", noise_material(0.5, 0), 16000)
    assert resolve_noise(str(plain), None) == (str(plain), None)
    assert resolve_noise(None, None) == (None, None)


def test_preset_errors(demand_root, tmp_path):
    with pytest.raises(NserError, match="unknown --noise-preset 'cafe'; known: human, park, traffic"):
        resolve_noise(str(demand_root), "cafe")
    with pytest.raises(NserError, match="needs --noise DEMAND_ROOT"):
        resolve_noise(None, "human")
    with pytest.raises(NserError, match=r"DEMAND environment OMEETING \(preset human\) not found"):
        resolve_noise(str(tmp_path), "human")


def test_demand_root_without_preset_is_refused(demand_root):
    # Every environment and channel mixed together is none of the paper's conditions.
    with pytest.raises(NserError, match=r"holds 3 DEMAND environments \(NPARK, OMEETING, STRAFFIC\): "
                                        r"choose one with --noise-preset human\|park\|traffic"):
        resolve_noise(str(demand_root), None)


def test_cli_has_preset_and_corpora():
    from click.testing import CliRunner

    from pipeline.cli.extract import extract_command

    out = CliRunner().invoke(extract_command, ["--help"]).output
    assert "--noise-preset" in out and "iemocap" in out and "ravdess" in out


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_extract_all_grid():
    cmd = ["make", "-s", "-n", "-C", str(ROOT), "extract-all", "DATASET=emodb", "DATA_ROOT=data/emodb",
           "NOISE_ROOT=noise", "NOISES=babble park traffic", "MODEL=bundled:tiny.en"]
    lines = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(lines) == 16 and all(line.startswith("nser-extract --corpus emodb") for line in lines)
    assert lines[0].endswith("--out caches/emodb/clean/bundled_tiny.en.zarr")
    assert "--noise noise/park --snr -5 --out caches/emodb/park_-5dB/bundled_tiny.en.zarr" in lines[7]
    demand = subprocess.run(cmd[:7] + ["DEMAND_ROOT=/d/DEMAND", "SNRS=0"], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    assert demand[1].endswith("--noise /d/DEMAND --noise-preset human --snr 0 "
                              "--out caches/emodb/human_0dB/openai_whisper-small.zarr")
