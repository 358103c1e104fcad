"""`nser-extract` (`nser extract`): one feature-source pass (Whisper, mel, openSMILE) per (noisy)
utterance into a layer cache."""

from __future__ import annotations

import click

from pipeline.cli.common import NserCommand, RegistryChoice, quiet_option
from pipeline.errors import NserError


def _corpus_names() -> list[str]:
    from pipeline.corpora.manifest import corpus_readers
    return sorted(corpus_readers())


def _preset_names() -> list[str]:
    from pipeline.noise_presets import load_presets
    return sorted(load_presets()["presets"])


def _dtype_names() -> list[str]:
    from pipeline.extract.run import DTYPES  # torch: only when --dtype is parsed or shown
    return ["auto", *DTYPES]


def _snr_option(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refused at parsing (NaN, inf, beyond the documented range), not at the first file."""
    if value is None:
        return None
    from pipeline.noise import check_snr
    try:
        return check_snr(value)
    except NserError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


@click.command("extract", cls=NserCommand)
@click.option("--corpus", type=RegistryChoice(_corpus_names),
              help="Corpus reader (layouts: docs/corpora.md); required unless --text-from.")
@click.option("--data-root", type=click.Path(file_okay=False), help="Corpus folder; required unless --text-from.")
@click.option("--text-from", type=click.Path(exists=True, file_okay=False),
              help="Make a text cache instead: encode the texts of this (Whisper) cache with --model "
                   "text:<BERT-style id or dir>; corpus, noise and SNR are the cache's.")
@click.option("--text", "text_field", type=click.Choice(["transcript", "hypothesis"]),
              help="With --text-from: which text, the corpus transcript or the cache's ASR hypothesis.")
@click.option("--model", default="openai/whisper-small", show_default=True,
              help="Feature source (docs/extraction.md): a Whisper model (Hugging Face id, local model dir, "
                   "bundled:tiny.en / bundled:base); mel (Whisper's 80-bin log-mel frames); opensmile:<set> "
                   "(functionals: IS09_emotion, IS10_paraling, IS11_speaker_state, IS12_speaker_trait, "
                   "IS13_ComParE, eGeMAPSv02); hf-encoder:<id or dir> (every hidden state of a wav2vec2, "
                   "HuBERT, WavLM or data2vec-audio encoder; the prefix is required); text:<id or dir> (a "
                   "BERT-style text encoder, with --text-from). --context and --tokens apply to Whisper only.")
@click.option("--out", required=True, type=click.Path(), help="Cache path (a .zarr folder).")
@click.option("--noise", type=click.Path(exists=True), help="Folder of noise recordings, or one recording.")
@click.option("--snr", type=float, callback=_snr_option, help="SNR in dB for --noise, -50 to 50.")
@click.option("--noise-type", help="Name of the noise recorded in the cache (default: folder name).")
@click.option("--noise-preset", type=RegistryChoice(_preset_names),
              help="DEMAND environment by paper name; --noise is then the DEMAND root. Only channel ch01 is used.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for noise file/offset choice.")
@click.option("--context", type=click.Choice(["padded", "trimmed"]), default="padded", show_default=True,
              help="Encoder input: Whisper's 30 s padded window, or the utterance alone (docs/extraction.md).")
@click.option("--tokens", "token_source", type=click.Choice(["hypothesis", "transcript"]), default="hypothesis",
              show_default=True, help="Decoder input: Whisper's greedy hypothesis or the ground-truth text.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Utterances per Whisper forward.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=RegistryChoice(_dtype_names), default="auto", show_default=True,
              help="Compute dtype (auto: fp16 on GPU, fp32 on CPU); storage is fp16.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N utterances of the manifest (quick runs).")
@click.option("--overwrite", is_flag=True, help="Replace a cache made with other settings.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any file failed (default: only if none worked).")
@click.option("--commit-frames", type=click.IntRange(min=1), hidden=True,
              help="Encoder frames buffered per commit (tests).")
@click.option("--dry-run", type=click.IntRange(min=1), is_flag=False, flag_value=1,
              help="Write nothing: print utterances, audio hours, cache size and time for this condition, "
                   "and for N such conditions with --dry-run N (docs/gpu.md).")
@click.option("--measure", type=click.IntRange(min=1), help="With --dry-run: time N utterances here for the rate.")
@click.option("--parts", type=click.IntRange(min=1),
              help="Split the manifest into N parts of whole batches; with --part K, extract only part K into "
                   "OUT.parts/part-K-of-N.zarr (then: nser cache combine OUT.parts --out OUT).")
@click.option("--part", type=click.IntRange(min=0), help="Which part to extract, 0 to N-1 (with --parts).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Extract N parts as Dask tasks (N local worker processes, one GPU each where there are "
                   "several), then combine them into OUT (docs/extraction.md).")
@click.option("--scheduler", help="Dask scheduler address for --workers (default: a local cluster).")
@quiet_option
@click.pass_context
def extract_command(ctx, corpus, data_root, text_from, text_field, model, out, noise, snr, noise_type, noise_preset,
                    seed, context, token_source, batch_size, device, dtype, limit, overwrite, strict, commit_frames,
                    dry_run, measure, parts, part, workers, scheduler, quiet):
    """Run a feature source once per (noisy) utterance and cache its states: every Whisper encoder and
    decoder layer, mel frames, openSMILE functionals, SSL encoder layers; or, with --text-from, every
    layer of a text encoder over a cache's transcripts or hypotheses."""
    from pipeline.corpora.manifest import read_corpus
    from pipeline.extract.run import ExtractionOptions, run_extraction
    from pipeline.noise_presets import resolve_noise

    if text_from or text_field or model.startswith("text:"):
        return _text_cache(ctx, text_from, text_field, model, out, batch_size, device, dtype, overwrite,
                           commit_frames, strict, quiet)
    for name, value in (("--corpus", corpus), ("--data-root", data_root)):
        if value is None:
            raise click.UsageError(f"Missing option {name} (or --text-from CACHE for a text cache)")
    _check_split_options(parts, part, workers, scheduler)
    noise, preset_type = resolve_noise(noise, noise_preset)
    noise_type = noise_type or preset_type
    c = read_corpus(corpus, data_root)
    if limit is not None:
        c.utterances = c.utterances[:limit]
        c.rejected = []  # a quick run covers only its first N entries; the rest are not its failures
    click.echo(c.summary(), err=True)
    opts = ExtractionOptions(model=model, noise=noise, noise_type=noise_type, snr_db=snr, seed=seed,
                             context=context, token_source=token_source, batch_size=batch_size,
                             device=device, dtype=dtype, overwrite=overwrite, commit_frames=commit_frames)
    if dry_run or measure:
        from pipeline.estimate import dry_run_report
        return click.echo(dry_run_report(c, opts, dry_run, measure))
    if workers:
        from pipeline.extract.parts import extract_with_workers
        rep = extract_with_workers(c, out, opts, workers, scheduler, progress=not quiet)
    elif parts:
        from pipeline.extract.parts import extract_part
        rep = extract_part(c, out, opts, part, parts, progress=not quiet)
    else:
        rep = run_extraction(c, out, opts, progress=not quiet)
    _report(rep, strict)


# Options a text cache takes from its source cache or does not use.
NOT_FOR_TEXT = ("corpus", "data_root", "noise", "snr", "noise_type", "noise_preset", "seed", "context",
                "token_source", "limit", "dry_run", "measure", "parts", "part", "workers", "scheduler")


def _text_cache(ctx: click.Context, text_from, text_field, model, out, batch_size, device, dtype, overwrite,
                commit_frames, strict, quiet) -> None:
    from click.core import ParameterSource

    from pipeline.extract.text_run import TextOptions, run_text_extraction, text_model_spec

    if not text_from or not text_field:
        raise click.UsageError("a text cache needs --text-from CACHE, --text transcript|hypothesis and "
                               "--model text:<id or dir>")
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    given = [flags[n] for n in NOT_FOR_TEXT if ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT, None)]
    if given:
        raise click.UsageError(f"--text-from takes its utterances, corpus and condition from {text_from}: "
                               f"leave out {', '.join(given)}")
    try:
        text_model_spec(model)
    except NserError as exc:
        raise click.UsageError(str(exc)) from exc
    opts = TextOptions(text_from=text_from, field=text_field, model=model, batch_size=batch_size, device=device,
                       dtype=dtype, overwrite=overwrite, commit_frames=commit_frames)
    _report(run_text_extraction(out, opts, progress=not quiet), strict)


def _report(rep, strict: bool) -> None:
    from pipeline.cache.records import FAILED, REJECTED

    rejected = [e for e in rep.errors if e.kind == REJECTED]
    n_rejected = len(rejected)
    click.echo(f"{rep.path}: {rep.n_done} utterances cached ({rep.n_new} new) in {rep.seconds:.1f} s; "
               f"{len(rep.errors)} failed ({n_rejected} rejected by the corpus reader, "
               f"{len(rep.errors) - n_rejected} during extraction)", err=True)
    # Both kinds are shown, so many rejections (a whole unknown folder) cannot hide audio failures.
    for group in ([e for e in rep.errors if e.kind == FAILED], rejected):
        for e in group[:10]:
            click.echo(f"  error {e.utt_id}: {e.error}", err=True)
        if len(group) > 10:
            click.echo(f"  ... {len(group) - 10} more", err=True)
    if len(rep.errors) > 10:
        click.echo(f"  full list: nser cache errors {rep.path}", err=True)
    if rep.n_done == 0:
        raise click.ClickException("nothing usable was extracted")
    if strict and rep.errors:
        raise click.ClickException(f"--strict: {len(rep.errors)} file(s) failed")


def _check_split_options(parts: int | None, part: int | None, workers: int | None, scheduler: str | None) -> None:
    if (parts is None) != (part is None):
        raise click.UsageError("--parts N and --part K go together")
    if part is not None and part >= parts:
        raise click.UsageError(f"--part {part}: parts are numbered 0 to {parts - 1}")
    if workers and parts:
        raise click.UsageError("--workers runs every part itself; leave out --parts/--part")
    if scheduler and not workers:
        raise click.UsageError("--scheduler goes with --workers")
