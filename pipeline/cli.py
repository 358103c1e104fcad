"""Command line: `nser` (group), `nser-extract`, `nser-train`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline import __version__
from pipeline.cli_common import storage_options_option
from pipeline.errors import NserError


class NserCommand(click.Command):
    """Prints NserError messages without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NserError as exc:
            raise click.ClickException(str(exc)) from exc


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
@click.option("--corpus", required=True,
              help="Corpus reader: emodb, iemocap, meld, casia, ravdess, csv (layouts: docs/corpora.md).")
@click.option("--data-root", required=True, type=click.Path(file_okay=False), help="Corpus folder.")
@click.option("--model", default="openai/whisper-small", show_default=True,
              help="Hugging Face id, local model dir, or bundled:tiny.en / bundled:base.")
@click.option("--out", required=True, type=click.Path(), help="Cache path (a .zarr folder).")
@click.option("--noise", type=click.Path(exists=True), help="Folder of noise recordings, or one recording.")
@click.option("--snr", type=float, callback=_snr_option, help="SNR in dB for --noise, -50 to 50.")
@click.option("--noise-type", help="Name of the noise recorded in the cache (default: folder name).")
@click.option("--noise-preset", help="DEMAND environment by paper name (human, park, traffic); "
              "--noise is then the DEMAND root. Only channel ch01 is used.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for noise file/offset choice.")
@click.option("--context", type=click.Choice(["padded", "trimmed"]), default="padded", show_default=True)
@click.option("--tokens", "token_source", type=click.Choice(["hypothesis", "transcript"]), default="hypothesis",
              show_default=True, help="Decoder input: Whisper's greedy hypothesis or the ground-truth text.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
              show_default=True, help="Compute dtype (auto: fp16 on GPU, fp32 on CPU); storage is fp16.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N utterances of the manifest (quick runs).")
@click.option("--overwrite", is_flag=True, help="Replace a cache made with other settings.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any file failed (default: only if none worked).")
@click.option("--commit-frames", type=click.IntRange(min=1), hidden=True,
              help="Encoder frames buffered per commit (tests).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def extract_command(corpus, data_root, model, out, noise, snr, noise_type, noise_preset, seed, context, token_source,
                    batch_size, device, dtype, limit, overwrite, strict, commit_frames, quiet):
    """Run Whisper once per (noisy) utterance and cache every encoder and decoder layer."""
    from pipeline.corpora.manifest import read_corpus
    from pipeline.extract.run import ExtractionOptions, run_extraction
    from pipeline.noise_presets import resolve_noise

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
    rep = run_extraction(c, out, opts, progress=not quiet)
    rejected = [e for e in rep.errors if e.kind == "rejected"]
    n_rejected = len(rejected)
    click.echo(f"{rep.path}: {rep.n_done} utterances cached ({rep.n_new} new) in {rep.seconds:.1f} s; "
               f"{len(rep.errors)} failed ({n_rejected} rejected by the corpus reader, "
               f"{len(rep.errors) - n_rejected} during extraction)", err=True)
    # Both kinds are shown, so many rejections (a whole unknown folder) cannot hide audio failures.
    for part in ([e for e in rep.errors if e.kind == "failed"], rejected):
        for e in part[:10]:
            click.echo(f"  error {e['utt_id']}: {e['error']}", err=True)
        if len(part) > 10:
            click.echo(f"  ... {len(part) - 10} more", err=True)
    if len(rep.errors) > 10:
        click.echo(f"  full list: nser cache errors {rep.path}", err=True)
    if rep.n_done == 0:
        raise click.ClickException("nothing usable was extracted")
    if strict and rep.errors:
        raise click.ClickException(f"--strict: {len(rep.errors)} file(s) failed")


class FusionChoice(click.Choice):
    """The FUSIONS registry keys, read on first use so that commands other than train (and
    `nser --help`) do not pay torch's import."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        from pipeline.train.fusion import FUSIONS
        return tuple(FUSIONS)

    @choices.setter
    def choices(self, _value) -> None:
        """click.Choice.__init__ assigns the (empty) choices; the registry is the source."""


def _positive_finite(ctx, param, value: float) -> float:
    """click.FloatRange lets nan and inf through; a learning rate must be neither."""
    import math

    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a finite number > 0, got {value}")
    return value


@click.command("train", cls=NserCommand)
@click.option("--cache", "cache", required=True, help="Cache made by nser-extract: a path, or a URL (read-only).")
@storage_options_option
@click.option("--out", required=True, type=click.Path(), help="Run dir for config, log and metrics.")
@click.option("--fusion", type=FusionChoice(), default="l-adapter", show_default=True,
              help="single: one layer; last: a stack's last state; best: the single layer with the best "
                   "validation UAR; mean / attention / scalar-mix / weighted-sum: layers mixed per frame "
                   "before one shared head; l-adapter: the paper's adapter per layer (docs/fusions.md).")
@click.option("--layers", default="enc:all,dec:all", show_default=True,
              help="e.g. enc:all,dec:all | dec:0-4 | enc:10,12 | enc:last")
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True, callback=_positive_finite)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--folds", default="all", show_default=True, help="Test folds to run (comma-separated).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: cuda when torch sees a GPU (said on stderr), else cpu; the states then live on the GPU "
                   "when they fit (docs/gpu.md).")
@click.option("--memory-budget", default="0", show_default=True,
              help="Bytes for the run's states in memory, e.g. 8G (0: half the available memory); larger "
                   "selections are streamed from the cache every epoch, in other batches (docs/training.md).")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="torch CPU threads (0: default).")
@click.option("--model", "expect_model", help="Refuse a cache extracted with another model.")
@click.option("--allow-missing", is_flag=True, help="Train even if some utterances failed extraction.")
@click.option("--quiet", is_flag=True)
def train_command(cache, storage_options, out, fusion, layers, epochs, batch_size, lr, seed, folds, device,
                  memory_budget, threads,
                  expect_model, allow_missing, quiet):
    """Train a fusion model on cached layers with speaker-independent cross-validation."""
    from pipeline.cache.reader import CacheReader
    from pipeline.folds import echo_coverage_warnings
    from pipeline.train.resident import parse_size
    from pipeline.train.trainer import TrainConfig, format_metrics_table, train_on_cache

    cfg = TrainConfig(fusion=fusion, layers=layers, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      folds=folds, device=device, threads=threads, expect_model=expect_model,
                      allow_missing=allow_missing, memory_budget=parse_size(memory_budget))
    cfg.check()  # before the cache is opened: a bad setting is named even if the cache is also wrong
    with CacheReader(cache, storage_options) as reader, \
            echo_coverage_warnings(lambda line: click.echo(line, err=True)):  # when they happen, not hours later
        metrics = train_on_cache(reader, out, cfg, progress=not quiet)
    click.echo(format_metrics_table(metrics))
    click.echo(f"metrics: {Path(out) / 'metrics.json'}")


@click.group()
@click.version_option(__version__, prog_name="nser", message="%(prog)s %(version)s")
def main():
    """nser-pipeline: Whisper layer caches and layer-adapter training for noisy speech emotion recognition."""


@main.group("cache")
def cache_group():
    """Inspect caches."""


@cache_group.command("info", cls=NserCommand)
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@storage_options_option
def cache_info(path, as_json, storage_options):
    """Summary of a cache (a path or a URL): utterances, classes, folds, layers, bytes per audio second."""
    from pipeline.cache.reader import CacheReader

    with CacheReader(path, storage_options) as reader:
        info = reader.info()
    if as_json:
        click.echo(json.dumps(info))
        return
    for key, value in info.items():
        click.echo(f"{key:>24}: {value}")


@cache_group.command("errors", cls=NserCommand)
@click.argument("path", type=click.Path())
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header (utt_id,fold,label,path,error).")
@storage_options_option
def cache_errors(path, as_csv, storage_options):
    """Every manifest entry the cache could not hold, with its fold, raw label and reason."""
    import csv as csv_module

    from pipeline.cache.reader import CacheReader

    with CacheReader(path, storage_options) as reader:
        errors = reader.errors
    if as_csv:
        fields = ["utt_id", "fold", "label", "path", "error"]
        w = csv_module.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(e.to_dict() for e in errors)
        return
    click.echo(f"{path}: {len(errors)} failed")
    for e in errors:
        click.echo(f"  {e['utt_id']}  fold {e['fold']}  label {e['label']}: {e['error']}")


@cache_group.command("verify", cls=NserCommand)
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@storage_options_option
def cache_verify(path, as_json, storage_options):
    """Check schema, table/array consistency and every chunk's checksum; name affected utterances."""
    from pipeline.cache.verify import verify_cache

    rep = verify_cache(path, storage_options)
    if as_json:
        click.echo(json.dumps(rep.as_dict()))
    else:
        click.echo(f"{path}: {rep.n_utterances} utterances, {rep.chunks_checked} chunks checked: "
                   + ("OK" if rep.ok else f"{len(rep.problems)} problem(s)"))
        for p in rep.problems:
            click.echo(f"  {p}")
        if rep.affected:
            click.echo(f"  affected utterances ({len(rep.affected)}): {', '.join(sorted(rep.affected)[:50])}")
    if not rep.ok:
        sys.exit(1)


@cache_group.command("export", cls=NserCommand)
@click.argument("path", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["hdf5", "npy"]), required=True,
              help="hdf5: one file, /<layer>/<utt_id> datasets + /utterances table; "
                   "npy: <layer>/<utt_id>.npy files + index.csv.")
@click.option("--layers", default="enc:all,dec:all", show_default=True, help="Layers to export, e.g. enc:4,dec:all.")
@click.option("--out", required=True, type=click.Path(), help="Output file (hdf5) or folder (npy).")
@click.option("--pool", type=click.Choice(["none", "mean"]), default="none", show_default=True,
              help="mean: one vector per utterance and layer (mean over frames or tokens).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export at --out.")
@storage_options_option
def cache_export(path, fmt, layers, out, pool, overwrite, storage_options):
    """Write selected layers per utterance, with the utterance table, for other tools (layouts: docs/cache.md)."""
    from pipeline.cache.export import export_cache
    from pipeline.cache.reader import CacheReader

    with CacheReader(path, storage_options) as reader:
        result = export_cache(reader, out, fmt=fmt, layers=layers, pool=pool, overwrite=overwrite)
    click.echo(f"{result}: {fmt} export of {layers} ({'mean-pooled' if pool == 'mean' else 'per frame/token'})")


@cache_group.command("asr-metrics", cls=NserCommand)
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object (with every utterance's score).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write per-utterance scores here.")
@storage_options_option
def cache_asr_metrics(path, as_json, csv_path, storage_options):
    """WER (CER for Chinese) of the stored Whisper hypotheses against the transcripts, Whisper-normalised."""
    import csv as csv_module

    from pipeline.asr_metrics import asr_metrics

    m = asr_metrics(path, storage_options)
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            w = csv_module.writer(fh)
            w.writerow(["utt_id", "errors", "units", "rate", "reference", "hypothesis"])
            for u in m.per_utterance:
                w.writerow([u.utt_id, u.errors, u.units, u.rate, u.reference, u.hypothesis])
    if as_json:
        click.echo(json.dumps(m.to_dict()))
        return
    click.echo(f"{m.cache}: {m.metric.upper()} {100 * m.value:.2f}% over {m.n_scored} utterances "
               f"({m.n_skipped} without a transcript); model {m.model}, condition {m.condition}, "
               f"normaliser {m.normalizer}")


@main.command("demo-corpus", cls=NserCommand)
@click.argument("out", type=click.Path())
@click.option("--voices", default=6, show_default=True)
@click.option("--sentences", default=8, show_default=True)
@click.option("--folds", default=3, show_default=True)
@click.option("--seed", default=0, show_default=True)
def demo_corpus(out, voices, sentences, folds, seed):
    """Synthesize the small espeak-ng demo corpus and a babble noise folder (see README)."""
    from pipeline.corpora.synthetic import build_babble_noise, build_demo_corpus

    corpus = build_demo_corpus(Path(out) / "corpus", n_voices=voices, n_sentences=sentences, n_folds=folds,
                               seed=seed)
    noise = build_babble_noise(Path(out) / "noise" / "babble", seed=seed)
    click.echo(f"corpus: {corpus}\nnoise: {noise}")


main.add_command(extract_command)
main.add_command(train_command)

from pipeline.probe import probe_command  # noqa: E402  (kept at the end: probe's imports are light)

main.add_command(probe_command, "probe")

from pipeline.grid.cli import grid_command  # noqa: E402  (at the end, like probe: the module is light)
from pipeline.report.cli import report_command  # noqa: E402

main.add_command(grid_command, "grid")
main.add_command(report_command, "report")

if __name__ == "__main__":
    sys.exit(main())
