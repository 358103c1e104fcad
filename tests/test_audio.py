import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import load_audio
from pipeline.errors import AudioError


def test_real_flac(emodb_root):
    a = load_audio(emodb_root / "03a01Fa.flac")
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert a.source_rate == 16000 and abs(a.duration - 2.0) < 1e-3


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampled_stereo(tmp_path, rate):
    t = np.arange(int(rate * 1.5)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / f"s{rate}.wav"
    sf.write(path, np.stack([tone, tone], axis=1), rate)
    a = load_audio(path)
    assert a.source_channels == 2 and a.source_rate == rate
    assert abs(len(a.samples) - 24000) <= 1
    spectrum = np.abs(np.fft.rfft(a.samples))
    assert abs(np.argmax(spectrum) * 16000 / len(a.samples) - 440) < 2


def test_long_audio_truncated(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(16000 * 31), 16000)
    with pytest.warns(UserWarning, match="truncated"):
        a = load_audio(path)
    assert len(a.samples) == 16000 * 30 and abs(a.truncated_seconds - 1.0) < 1e-6


def test_bad_inputs(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF" + bytes(range(200)))
    with pytest.raises(AudioError, match="corrupt"):
        load_audio(tmp_path / "junk.wav")
    sf.write(tmp_path / "silent.wav", np.zeros(16000), 16000)
    with pytest.raises(AudioError, match="silent"):
        load_audio(tmp_path / "silent.wav")
    bad = np.full(16000, 0.1, dtype=np.float32)
    bad[100] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(tmp_path / "nan.wav")
