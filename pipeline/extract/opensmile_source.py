"""The `opensmile:<set>` source: openSMILE functionals (the paper's HSF baselines), one vector per
utterance, from the `opensmile` package (audEERING).

The sets by their paper names (Table I), the openSMILE configuration each one runs, and its
dimension (checked against Table I: 384, 1582, 4368, 6125, 6373, 88; tests assert them). IS10 and
IS12 run openSMILE's `_compat` configurations, the ones the opensmile package ships for them.
Functionals of IS11-IS13 reach ~6.5e11 (spectral variances), beyond float16's 65504, so every set
is stored as float32."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.extract.sources import SourceError, encoder_only, register_source

# paper name -> (opensmile.FeatureSet member, dimension in paper Table I)
SETS: dict[str, tuple[str, int]] = {
    "IS09_emotion": ("IS09", 384),
    "IS10_paraling": ("IS10", 1582),
    "IS11_speaker_state": ("IS11", 4368),
    "IS12_speaker_trait": ("IS12", 6125),
    "IS13_ComParE": ("IS13", 6373),
    "eGeMAPSv02": ("eGeMAPSv02", 88),
}


class OpenSmileSource:
    def __init__(self, spec: str, feature_set: str):
        import opensmile

        from pipeline.audio import MAX_SECONDS
        from pipeline.cache.records import ExtractionRecord, ModelRecord

        member = opensmile.FeatureSet[SETS[feature_set][0]]
        self.smile = opensmile.Smile(feature_set=member, feature_level=opensmile.FeatureLevel.Functionals)
        d = len(self.smile.feature_names)
        self.model = ModelRecord(spec, _config_hash(opensmile, member.value), n_encoder_states=1, n_decoder_states=0,
                                 d_model=d, frame_rate=0.0, source="opensmile")
        self.extraction = ExtractionRecord(context="trimmed", token_source="none", dtype="float32",
                                           compute_dtype="float32", device="cpu", max_seconds=MAX_SECONDS)

    def check_audio(self, samples) -> None:
        pass

    def check_transcript(self, transcript: str) -> None:
        pass

    def features(self, audio: np.ndarray) -> np.ndarray:
        """[1, d] float32 functionals of one utterance."""
        return self.smile.process_signal(np.asarray(audio, dtype=np.float32), 16000).to_numpy(dtype=np.float32)

    def extract(self, audios: Sequence[np.ndarray], transcripts: Sequence[str]):
        return [encoder_only([self.features(a)]) for a in audios]


def _config_hash(opensmile, config: str) -> str:
    """The package version and the set's configuration file (with the files it includes, which ship
    with the same version): what the stored values depend on."""
    conf = Path(opensmile.__file__).parent / "core" / "config" / f"{config}.conf"
    h = hashlib.sha256(opensmile.__version__.encode())
    h.update(conf.read_bytes())
    return h.hexdigest()[:16]


@register_source("opensmile", f"opensmile:<set>: openSMILE functionals, one vector per utterance; sets "
                              f"{', '.join(SETS)}")
def open_opensmile(argument: str | None, spec: str, opts, language: str | None) -> OpenSmileSource:
    if argument not in SETS:
        raise SourceError(f"--model {spec}: unknown openSMILE set {argument!r}; the sets are "
                          f"{', '.join(f'opensmile:{s}' for s in SETS)}")
    try:
        import opensmile  # noqa: F401
    except ImportError as exc:
        raise SourceError(f"--model {spec} needs the opensmile package: pip install 'nser-pipeline[opensmile]'") from exc
    return OpenSmileSource(spec, argument)
