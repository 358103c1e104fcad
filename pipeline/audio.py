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
# Video/AAC containers (MELD ships .mp4 clips) that libsndfile cannot read: decoded with PyAV (FFmpeg).
CONTAINER_SUFFIXES = {".mp4", ".m4a", ".mkv", ".webm", ".mov", ".aac"}


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
    if path.suffix.lower() in CONTAINER_SUFFIXES:
        data, rate = _decode_container(path, start, end)
    else:
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


def _decode_container(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    """First audio stream as float32 (samples, channels) at its native rate; the caller downmixes
    and resamples as for any other file. Every decoder failure becomes an AudioError naming the file."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is in install_requires
        raise AudioError(f"{path}: decoding {path.suffix} needs PyAV (pip install av)") from exc
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: no audio stream in the container")
            stream = container.streams.audio[0]
            rate = int(stream.rate)
            # Planar float output keeps the channels apart; the mean downmix is then the same as for wav.
            resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
            chunks = [f.to_ndarray() for frame in container.decode(stream) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: unreadable or corrupt audio ({exc})") from exc
    if not chunks or rate <= 0:
        raise AudioError(f"{path}: contains no decodable audio")
    data = np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False)
    first = int(round((start or 0.0) * rate))
    last = int(round(end * rate)) if end is not None else data.shape[0]
    return data[first:last], rate
