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
    """Read any format soundfile knows, downmix to mono, resample to 16 kHz, validate.

    Only the frames that are kept are read (plus a short margin for the resampling filter): a
    10-minute 48 kHz file cut to 30 s would otherwise be decoded whole, ~0.5 GB on the way.
    `truncated_seconds` still counts what was dropped, from the file's length as its header tells it.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    if path.suffix.lower() in CONTAINER_SUFFIXES:
        data, rate, span = _decode_container(path, start, end, max_seconds)
    else:
        try:
            info = sf.info(str(path))
            rate = info.samplerate
            first = int(round((start or 0.0) * rate))
            last = info.frames if end is None else min(int(round(end * rate)), info.frames)
            span = max(0, last - first)
            stop = min(last, first + _frames_to_read(max_seconds, rate))
            data, rate = sf.read(str(path), start=first, stop=max(first, stop), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioError(f"{path}: unreadable or corrupt audio ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    channels = int(data.shape[1])
    del data
    if rate != SAMPLE_RATE:
        g = math.gcd(int(rate), SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // g, int(rate) // g).astype(np.float32)
    limit = int(max_seconds * SAMPLE_RATE)
    dropped = 0.0
    if len(mono) > limit:
        # A header may under-count (some compressed formats): what was read is a lower bound.
        total = max(span, len(mono) * rate / SAMPLE_RATE) / rate
        dropped = max(0.0, total - max_seconds)
        warnings.warn(f"{path}: {total:.1f} s is over {max_seconds:.0f} s; "
                      f"truncated to {max_seconds:.0f} s", stacklevel=2)
        mono = mono[:limit]
    if len(mono) < SAMPLE_RATE // 100:
        raise AudioError(f"{path}: shorter than 10 ms after resampling")
    if float(np.max(np.abs(mono))) < SILENCE_PEAK:
        raise AudioError(f"{path}: audio is silent (peak < {SILENCE_PEAK}); nothing to recognise "
                         "and the SNR of a noisy mix would be undefined")
    return LoadedAudio(np.ascontiguousarray(mono, dtype=np.float32), int(rate), channels, dropped)


def _frames_to_read(max_seconds: float, rate: int) -> int:
    """Source frames needed for `max_seconds` of output, plus 0.1 s so that the resampling
    filter (at most ~10 source samples per 16 kHz step of ratio) sees real audio, not padding,
    at the cut: the kept samples are then the same as when the whole file is resampled."""
    return int(math.ceil(max_seconds * rate)) + rate // 10 + 64


def _decode_container(path: Path, start: float | None, end: float | None,
                      max_seconds: float) -> tuple[np.ndarray, int, int]:
    """First audio stream as float32 (samples, channels) at its native rate, decoded only as far as
    `max_seconds` (plus margin) from `start` needs, and the frames the span [start, end) holds
    (from the stream's duration when decoding stopped early). The caller downmixes and resamples
    as for any other file. Every decoder failure becomes an AudioError naming the file."""
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
            if rate <= 0:
                raise AudioError(f"{path}: contains no decodable audio")
            first = int(round((start or 0.0) * rate))
            last = int(round(end * rate)) if end is not None else None
            wanted = first + _frames_to_read(max_seconds, rate)
            if last is not None:
                wanted = min(wanted, last)
            # Planar float output keeps the channels apart; the mean downmix is then the same as for wav.
            resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
            chunks, pos, stopped = [], 0, False

            def take(frames) -> None:
                nonlocal pos
                for f in frames:
                    x = f.to_ndarray()
                    lo, hi = max(first - pos, 0), min(wanted - pos, x.shape[1])
                    if hi > lo:
                        chunks.append(x[:, lo:hi])
                    pos += x.shape[1]

            for frame in container.decode(stream):
                take(resampler.resample(frame))
                if pos >= wanted:
                    stopped = True
                    break
            if not stopped:
                take(resampler.resample(None))
            total = pos
            if stopped:
                # The rest is not decoded: its length comes from the container's duration.
                if stream.duration is not None and stream.time_base is not None:
                    total = max(total, int(round(float(stream.duration * stream.time_base) * rate)))
                elif container.duration is not None:
                    total = max(total, int(round(container.duration / av.time_base * rate)))
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: unreadable or corrupt audio ({exc})") from exc
    if not chunks:
        raise AudioError(f"{path}: contains no decodable audio")
    data = np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False)
    span = max(0, (total if last is None else min(last, total)) - first)
    return data, rate, span
