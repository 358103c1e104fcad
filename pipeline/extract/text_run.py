"""Text caches: a BERT-style encoder's states of the transcripts or the ASR hypotheses of an existing
(Whisper) cache, written as an ordinary cache through CacheWriter (same commit protocol, resume and
error table as `run_extraction`).

The text cache holds its Whisper cache's utterances with their labels, folds, speakers and table
columns (duration, noise file, realized SNR, both texts), and its corpus and condition: the text cache
of a babble 0 dB Whisper cache is that condition's text. Its identity adds the Whisper cache's
identity hash and the text field. Rows are tokens ([CLS], word pieces, [SEP]) in the encoder stack;
`frame_rate` is the nominal TEXT_FRAME_RATE. An empty text (an empty hypothesis is a legitimate ASR
output at 0 dB) is that utterance's error-table entry, as are the Whisper cache's own errors."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline import __version__
from pipeline.cache.reader import CacheReader
from pipeline.cache.records import FAILED, CacheAttrs, ErrorRecord, ExtractionRecord, ModelRecord
from pipeline.cache.writer import CacheWriter
from pipeline.errors import NserError
from pipeline.extract.run import ExtractionReport, nonfinite_reason, resolve_device
from pipeline.extract.sources import TEXT_PREFIX as PREFIX, TEXT_SOURCE
from pipeline.extract.text_layers import TextUtterance, empty_text_reason, text_utterances
from pipeline.extract.whisper_layers import TranscriptTooLong
from pipeline.failpoints import failpoint
from pipeline.version import code_version

# Rows are tokens, not time frames; any positive value keeps readers and heads treating them as a
# sequence (0 would mean one vector per utterance). 1: no duration is derived from it.
TEXT_FRAME_RATE = 1.0
# Columns the text cache takes from its Whisper cache's table (the writer sets spans and counts).
COPIED = ("utt_id", "speaker", "label", "fold", "language", "transcript", "hypothesis", "duration",
          "truncated_s", "hyp_loop", "hyp_capped", "noise_file", "noise_offset", "realized_snr_db")


@dataclass
class TextOptions:
    text_from: str  # the Whisper (or any) cache whose texts are encoded
    field: str  # transcript or hypothesis
    model: str = "text:google-bert/bert-base-uncased"
    batch_size: int = 8  # texts per step between commits; each text still runs alone
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False
    commit_frames: int | None = None


def text_model_spec(model: str) -> str:
    """The encoder of a `text:<id or dir>` value."""
    if not model.startswith(PREFIX) or not model[len(PREFIX):]:
        raise NserError(f"--model {model}: a text cache takes --model text:<BERT-style id or dir>, "
                        "e.g. text:google-bert/bert-base-uncased")
    return model[len(PREFIX):]


def run_text_extraction(out: str | Path, opts: TextOptions, progress: bool = True) -> ExtractionReport:
    import torch

    from pipeline.extract.text_layers import TextLayerExtractor
    from pipeline.models.hf_encoder import load_text_encoder

    t_start = time.perf_counter()
    spec = text_model_spec(opts.model)
    texts = text_utterances(opts.text_from, opts.field)
    with CacheReader(opts.text_from) as src:
        table = {c: src.table[c] for c in COPIED}
        meta, src_hash, src_errors = src.meta, src.identity_hash, src.errors
    device, dtype = resolve_device(opts.device, opts.dtype)
    extractor = TextLayerExtractor(load_text_encoder(spec, device=device, dtype=dtype))
    enc = extractor.enc
    model = ModelRecord(opts.model, enc.weights_hash, n_encoder_states=enc.n_states, n_decoder_states=0,
                        d_model=enc.d_model, frame_rate=TEXT_FRAME_RATE, source=TEXT_SOURCE)
    extraction = ExtractionRecord(context="trimmed", token_source="none", dtype="float16",
                                  compute_dtype=str(dtype).removeprefix("torch."), device=torch.device(device).type,
                                  max_seconds=meta.extraction.max_seconds)
    attrs = CacheAttrs(
        code_version=code_version(), corpus=meta.corpus, classes=meta.classes, model=model, extraction=extraction,
        condition=meta.condition, n_manifest=meta.n_manifest,
        identity={"package_version": __version__, "corpus": meta.corpus.to_dict(), "model": model.to_dict(),
                  "extraction": extraction.to_dict(), "condition": meta.condition.identity_dict(),
                  "text": {"from_identity_hash": src_hash, "field": opts.field}})
    writer = CacheWriter(out, attrs.to_dict(), overwrite=opts.overwrite, commit_frames=opts.commit_frames)
    errors = list(src_errors)  # entries the Whisper cache lacks are this cache's too
    index = {t.utt_id: i for i, t in enumerate(texts)}
    blocks = [texts[i:i + opts.batch_size] for i in range(0, len(texts), opts.batch_size)]
    batches = [b for b in ([t for t in blk if t.utt_id not in writer.done_ids] for blk in blocks) if b]
    n_before = len(writer.done_ids)
    bar = tqdm(total=sum(map(len, batches)), desc=f"text {meta.corpus.name}/{meta.condition.name}/{opts.field}",
               unit="utt", disable=not progress)
    with writer:
        for batch in batches:
            failpoint("extract:batch")
            for t in batch:
                if not t.text:
                    errors.append(_error(t, opts.text_from, empty_text_reason(opts.field)))
                    continue
                try:
                    (res,) = extractor.extract(None, [t.text])
                except TranscriptTooLong as exc:
                    errors.append(_error(t, opts.text_from, str(exc)))
                    continue
                bad = nonfinite_reason(res, extraction)
                if bad:
                    errors.append(_error(t, opts.text_from, bad))
                    continue
                row = {c: table[c][index[t.utt_id]] for c in COPIED}
                writer.add(row, res.encoder, res.decoder, res.tokens)
            writer.commit_if_due()
            bar.update(len(batch))
        writer.set_errors(errors)
    bar.close()
    seconds = float(sum(table["duration"][index[i]] for i in writer.done_ids if i in index))
    return ExtractionReport(Path(out), len(writer.done_ids), len(writer.done_ids) - n_before, errors,
                            time.perf_counter() - t_start, seconds)


def _error(t: TextUtterance, source: str, message: str) -> ErrorRecord:
    """A failure of this text (path: the cache it came from, which has no audio path)."""
    return ErrorRecord(t.utt_id, str(source), t.fold, t.label, message, FAILED)
