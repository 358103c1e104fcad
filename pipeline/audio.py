"""Audio loading with the checks a corpus of thousands of files needs: every failure names the file."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from pipeline.errors import AudioError

SAMPLE_RATE = 16000
MAX_SECONDS = 30.0  # Whisper's context; longer input is truncated (policy in docs/extraction.md)
SILENCE_PEAK = 1e-5


@dataclass
class LoadedAudio:
    samples: np.ndarray  # float32, mono, 16 kHz
    source_rate: int
    source_channels: int
    truncated_seconds: float  # audio dropped beyond MAX_SECONDS

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_audio(
    path: str | Path,
    *,
    start: float | None = None,
    end: float | None = None,
    max_seconds: float = MAX_SECONDS,
) -> LoadedAudio:
    """Read any format soundfile knows, downmix to mono, resample to 16 kHz, validate."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
        first = int(round((start or 0.0) * info.samplerate))
        last = int(round(end * info.samplerate)) if end is not None else -1
        data, rate = sf.read(str(path), start=first, stop=None if last < 0 else last,
                             dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"{path}: unreadable or corrupt audio ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != SAMPLE_RATE:
        g = math.gcd(int(rate), SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // g, int(rate) // g).astype(np.float32)
    limit = int(max_seconds * SAMPLE_RATE)
    dropped = 0.0
    if len(mono) > limit:
        dropped = (len(mono) - limit) / SAMPLE_RATE
        warnings.warn(f"{path}: {len(mono) / SAMPLE_RATE:.1f} s is over {max_seconds:.0f} s; "
                      f"truncated to {max_seconds:.0f} s", stacklevel=2)
        mono = mono[:limit]
    if len(mono) < SAMPLE_RATE // 100:
        raise AudioError(f"{path}: shorter than 10 ms after resampling")
    if float(np.max(np.abs(mono))) < SILENCE_PEAK:
        raise AudioError(f"{path}: audio is silent (peak < {SILENCE_PEAK}); nothing to recognise "
                         "and the SNR of a noisy mix would be undefined")
    return LoadedAudio(np.ascontiguousarray(mono, dtype=np.float32), int(rate), int(data.shape[1]), dropped)
