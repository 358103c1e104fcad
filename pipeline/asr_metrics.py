"""ASR quality of a cache: WER (CER for Chinese) of Whisper's stored greedy hypotheses against the
corpus transcripts, per utterance and per cache (the paper's Fig. 6 pairs it with emotion F1).

Why from the cache: extraction already stored both texts for every (noisy) utterance, so the ASR
side of the analysis costs no model run. Scoring follows Whisper's evaluation: both texts pass
through Whisper's own normaliser (the English one, with the model's British-to-American spelling
map when its folder has `normalizer.json`; the basic one otherwise), then `jiwer` counts word
(or, for Chinese, character) edits. The cache-level rate is total edits over total reference
units, not a mean of per-utterance rates (short utterances would dominate).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError

CHARACTER_LANGUAGES = {"zh", "ja", "ko", "th", "yue"}  # no spaces between words: score characters


@dataclass
class UtteranceScore:
    utt_id: str
    reference: str
    hypothesis: str
    errors: int
    units: int

    @property
    def rate(self) -> float:
        return self.errors / self.units if self.units else float("nan")


@dataclass
class AsrMetrics:
    cache: str
    model: str
    condition: str
    metric: str  # "wer" or "cer"
    value: float  # total edits / total reference units
    n_scored: int
    n_skipped: int  # utterances without a reference transcript
    normalizer: str
    per_utterance: list[UtteranceScore] = field(default_factory=list)

    def to_dict(self, per_utterance: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["per_utterance"] = [dict(asdict(u), rate=u.rate) for u in self.per_utterance] if per_utterance else []
        return d


def _normalizer(language: str, model_name: str) -> tuple[Any, str]:
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if language != "en":
        return BasicTextNormalizer(remove_diacritics=False, split_letters=False), "whisper-basic"
    spelling: dict[str, str] = {}
    try:
        from pipeline.models.loader import resolve_model_dir
        candidate = Path(resolve_model_dir(model_name)) / "normalizer.json"
        if candidate.is_file():
            spelling = json.loads(candidate.read_text())
    except (NserError, OSError, ImportError, ValueError):
        pass  # a hub id without a local copy: the rules without the spelling map
    return EnglishTextNormalizer(spelling), f"whisper-english ({len(spelling)} spelling mappings)"


def asr_metrics(cache: str | Path | CacheReader, storage_options: dict[str, Any] | None = None) -> AsrMetrics:
    import jiwer

    reader = cache if isinstance(cache, CacheReader) else CacheReader(cache, storage_options)
    if reader.meta.extraction.token_source != "hypothesis":
        raise NserError(f"{reader.location} was extracted with --tokens transcript: it holds no Whisper "
                        "hypotheses to score; extract with --tokens hypothesis (the default)")
    t = reader.table
    languages = {str(x) for x in t["language"]} or {reader.meta.corpus.language}
    if len(languages) > 1:
        raise NserError(f"{reader.location} mixes languages {sorted(languages)}; score one language at a time")
    language = languages.pop()
    normalize, normalizer_name = _normalizer(language, reader.meta.model.name)
    by_char = language in CHARACTER_LANGUAGES
    scores, skipped = [], 0
    for utt, ref_raw, hyp_raw in zip(t["utt_id"], t["transcript"], t["hypothesis"]):
        ref, hyp = normalize(str(ref_raw)).strip(), normalize(str(hyp_raw)).strip()
        if not ref:
            skipped += 1
            continue
        if by_char:
            ref_units, hyp_units = " ".join(ref.replace(" ", "")), " ".join(hyp.replace(" ", ""))
        else:
            ref_units, hyp_units = ref, hyp
        out = jiwer.process_words(ref_units, hyp_units or "")
        errors = out.substitutions + out.deletions + out.insertions
        scores.append(UtteranceScore(str(utt), ref, hyp, int(errors), len(ref_units.split())))
    if not scores:
        raise NserError(f"{reader.location}: no utterance has a reference transcript to score against")
    value = sum(s.errors for s in scores) / sum(s.units for s in scores)
    return AsrMetrics(cache=reader.location, model=reader.meta.model.name,
                      condition=reader.meta.condition.name, metric="cer" if by_char else "wer",
                      value=value, n_scored=len(scores), n_skipped=skipped, normalizer=normalizer_name,
                      per_utterance=scores)
