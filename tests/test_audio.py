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


def _write_long_wav(path, seconds: int, rate: int) -> None:
    """Low-amplitude noise written in 10 s blocks, so the test itself never holds the whole file."""
    rng = np.random.default_rng(1)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as fh:
        for _ in range(seconds // 10):
            fh.write(0.01 * rng.standard_normal(10 * rate))


def _peak_bytes(fn):
    import tracemalloc
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_long_file_reads_only_what_is_kept(tmp_path):
    """An 8-minute 48 kHz file cut to 30 s: the truncated seconds come from the header, and memory
    stays near what 30 s need instead of a whole decode (8 min x 48 kHz x 4 bytes = 92 MB float32)."""
    path = tmp_path / "long48k.wav"
    _write_long_wav(path, 480, 48000)
    full_decode = 480 * 48000 * 4
    with pytest.warns(UserWarning, match=r"480\.0 s is over 30 s; truncated"):
        a, peak = _peak_bytes(lambda: load_audio(path))
    assert len(a.samples) == 30 * 16000 and a.source_rate == 48000
    assert abs(a.truncated_seconds - 450.0) < 1e-6
    assert peak < full_decode / 4, f"peak {peak / 1e6:.0f} MB"
    # The kept samples are those of resampling the whole file and cutting afterwards.
    head, _ = sf.read(path, frames=31 * 48000, dtype="float32")
    from scipy.signal import resample_poly
    np.testing.assert_array_equal(a.samples, resample_poly(head, 1, 3).astype(np.float32)[:30 * 16000])


def test_long_container_stops_decoding(tmp_path):
    """AAC in .m4a (PyAV): decoding stops once 30 s are in hand; the truncated seconds come from the
    stream's duration."""
    av = pytest.importorskip("av")
    path, rate, seconds = tmp_path / "long.m4a", 48000, 150
    rng = np.random.default_rng(2)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        for _ in range(seconds // 10):
            frame = av.AudioFrame.from_ndarray((0.05 * rng.standard_normal((1, 10 * rate))).astype(np.float32),
                                               format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    full_decode = seconds * rate * 4
    with pytest.warns(UserWarning, match="truncated"):
        a, peak = _peak_bytes(lambda: load_audio(path))
    assert len(a.samples) == 30 * 16000
    assert abs(a.truncated_seconds - (seconds - 30)) < 0.1  # AAC priming/padding: a few 1024-sample frames
    assert peak < full_decode / 2, f"peak {peak / 1e6:.0f} MB"
