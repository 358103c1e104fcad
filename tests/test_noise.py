import numpy as np
import pytest

from pipeline.audio import load_audio
from pipeline.noise import NoiseBank, mix_at_snr


@pytest.mark.parametrize("snr", [-10, -5, 0, 5, 10])
def test_exact_snr_on_real_speech_and_noise(emodb_root, noise_root, snr):
    speech = load_audio(emodb_root / "03a01Fa.flac").samples
    bank = NoiseBank(noise_root / "traffic", seed=3)
    res = bank.mix(speech, "03a01Fa", snr)
    assert abs(res.realized_snr_db - snr) < 0.1
    noise_part = res.samples.astype(np.float64) - speech
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise_part ** 2))
    assert abs(measured - snr) < 0.1


def test_deterministic_and_varied(emodb_root, noise_root):
    speech = load_audio(emodb_root / "03a01Fa.flac").samples
    a = NoiseBank(noise_root / "babble", seed=0).mix(speech, "u1", 0.0)
    b = NoiseBank(noise_root / "babble", seed=0).mix(speech, "u1", 0.0)
    c = NoiseBank(noise_root / "babble", seed=0).mix(speech, "u2", 0.0)
    d = NoiseBank(noise_root / "babble", seed=1).mix(speech, "u1", 0.0)
    assert np.array_equal(a.samples, b.samples)
    assert (a.noise_file, a.noise_offset) != (c.noise_file, c.noise_offset)
    assert (a.noise_file, a.noise_offset) != (d.noise_file, d.noise_offset)


def test_short_noise_loops():
    speech = np.sin(np.arange(16000) / 5).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(1000)
    mixed, realized = mix_at_snr(speech, np.tile(noise, 16), 5.0)
    assert abs(realized - 5.0) < 1e-6 and mixed.shape == speech.shape


def test_fingerprint_follows_content_not_size(tmp_path, noise_root):
    """Same names and sizes, other audio: another fingerprint (it used to hash names and sizes only)."""
    import soundfile as sf
    x, rate = sf.read(sorted((noise_root / "park").glob("*.flac"))[0], frames=5 * 16000, dtype="float32")
    sf.write(tmp_path / "n.wav", x, rate, subtype="PCM_16")
    before, size = NoiseBank(tmp_path).fingerprint(), (tmp_path / "n.wav").stat().st_size
    sf.write(tmp_path / "n.wav", x[::-1], rate, subtype="PCM_16")
    assert (tmp_path / "n.wav").stat().st_size == size
    assert NoiseBank(tmp_path).fingerprint() != before


@pytest.mark.parametrize("snr", [float("nan"), float("inf"), 1e9, -50.01, "5", True])
def test_check_snr_refuses(snr):
    from pipeline.errors import NserError
    from pipeline.noise import check_snr
    with pytest.raises(NserError, match="SNR"):
        check_snr(snr)
    assert check_snr(-50) == -50.0 and check_snr(np.float32(7.5)) == 7.5
