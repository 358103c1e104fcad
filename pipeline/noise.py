"""Additive noise at an exact SNR.

SNR definition: speech power is the mean square over the whole utterance (pauses included, as
the paper's mixing of whole utterances does), noise power is the mean square of the noise
segment over the same span. The noise is scaled so the ratio is exactly the target; the realized
SNR is computed back from the signals actually summed and recorded per utterance.
A noise file and an offset are chosen from a hash of (seed, utterance id), so a condition is
reproducible and independent of processing order; noise shorter than the utterance is looped.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.audio import load_audio
from pipeline.errors import AudioError, NserError

NOISE_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf"}
# Target SNRs accepted. Beyond +-50 dB a mix is clean speech or pure noise for any recognizer, so a
# value out there is a typo (500 for 5.00); far beyond, the noise gain overflows (1e9 dB) or is
# zero (inf), and NaN makes every mixed sample, and so every cached state, NaN.
SNR_RANGE_DB = (-50.0, 50.0)


def check_snr(snr_db: object) -> float:
    """`snr_db` as a float, or NserError for a non-number, a non-finite value or one outside SNR_RANGE_DB."""
    lo, hi = SNR_RANGE_DB
    if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float, np.integer, np.floating)):
        raise NserError(f"SNR must be a number of dB, not {snr_db!r}")
    if not math.isfinite(snr_db) or not lo <= snr_db <= hi:
        raise NserError(f"SNR {snr_db} dB is outside {lo:g}..{hi:g} dB (docs/extraction.md)")
    return float(snr_db)


@dataclass
class MixResult:
    samples: np.ndarray
    noise_file: str
    noise_offset: int
    realized_snr_db: float


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, float]:
    """Scale `noise` (same length as speech) to `snr_db` and add it; returns (mix, realized SNR)."""
    ps, pn = _power(speech), _power(noise)
    if ps <= 0:
        raise AudioError("speech is silent: SNR is undefined")
    if pn <= 0:
        raise AudioError("noise segment is silent: SNR is undefined")
    gain = np.sqrt(ps / (pn * 10.0 ** (snr_db / 10.0)))
    scaled = (noise.astype(np.float64) * gain)
    realized = 10.0 * np.log10(ps / _power(scaled))
    return (speech.astype(np.float64) + scaled).astype(np.float32), float(realized)


def file_digest(path: Path, block: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in blocks (a DEMAND channel is ~30 MB). Not cached by
    (size, mtime): a rewrite within the clock's resolution would then go unseen, and hashing a
    noise folder once per extraction run takes well under a second."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


class NoiseBank:
    """A folder of noise recordings, or one recording (any rate or channel count); the file and the
    offset are chosen per utterance by hash."""

    def __init__(self, source: str | Path, seed: int = 0):
        source = Path(source)
        if source.is_file():
            self.folder, self.files = source.parent, [source]
        elif source.is_dir():
            self.folder = source
            self.files = sorted(p for p in source.rglob("*")
                                if p.suffix.lower() in NOISE_SUFFIXES and p.is_file())
        else:
            raise NserError(f"noise folder or file not found: {source}")
        if not self.files:
            raise NserError(f"no noise recordings ({', '.join(sorted(NOISE_SUFFIXES))}) in {self.folder}")
        self.seed = seed
        self._loaded: dict[Path, np.ndarray] = {}

    @property
    def names(self) -> list[str]:
        return [str(p.relative_to(self.folder)) for p in self.files]

    def fingerprint(self) -> str:
        """Identity of the noise material (names and content), for the cache attributes.

        Why content: names and sizes let a resumed run accept other recordings saved under the same
        names (a re-export, another channel of the same length), and half the cache would hold
        another noise."""
        h = hashlib.sha256()
        for p in self.files:
            h.update(f"{p.relative_to(self.folder)}:{file_digest(p)};".encode())
        return h.hexdigest()[:16]

    def _noise(self, path: Path) -> np.ndarray:
        if path not in self._loaded:
            info = sf.info(str(path))
            # Noise files may be long; no 30 s cap applies to them.
            self._loaded[path] = load_audio(path, max_seconds=info.duration + 1.0).samples
        return self._loaded[path]

    def segment(self, utt_id: str, n_samples: int) -> tuple[np.ndarray, Path, int]:
        digest = hashlib.sha256(f"{self.seed}:{utt_id}".encode()).digest()
        path = self.files[int.from_bytes(digest[:8], "little") % len(self.files)]
        noise = self._noise(path)
        offset = int.from_bytes(digest[8:16], "little") % len(noise)
        reps = -(-(offset + n_samples) // len(noise))
        looped = np.tile(noise, reps) if reps > 1 else noise
        return looped[offset:offset + n_samples], path, offset

    def mix(self, speech: np.ndarray, utt_id: str, snr_db: float) -> MixResult:
        seg, path, offset = self.segment(utt_id, len(speech))
        mixed, realized = mix_at_snr(speech, seg, snr_db)
        return MixResult(mixed, str(path.relative_to(self.folder)), offset, realized)
