"""`nser cache ...`: inspect, check and export caches."""

from __future__ import annotations

import csv
import json
import sys

import click

from pipeline.cli.common import NserGroup, RegistryChoice, json_option, layers_option, storage_options_option


def _export_formats():
    from pipeline.cache.export import FORMATS
    return FORMATS


def _export_pools():
    from pipeline.cache.export import POOLS
    return POOLS


cache_path_argument = click.argument("path", type=click.Path(),
                                     help="Cache made by nser-extract: a path, or a URL (read-only).")


@click.group("cache", cls=NserGroup)
def cache_group():
    """Inspect caches."""


@cache_group.command("info")
@cache_path_argument
@json_option()
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


@cache_group.command("errors")
@cache_path_argument
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header (utt_id,fold,label,path,error).")
@storage_options_option
def cache_errors(path, as_csv, storage_options):
    """Every manifest entry the cache could not hold, with its fold, raw label and reason."""
    from pipeline.cache.reader import CacheReader

    with CacheReader(path, storage_options) as reader:
        errors = reader.errors
    if as_csv:
        fields = ["utt_id", "fold", "label", "path", "error"]
        w = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(e.to_dict() for e in errors)
        return
    click.echo(f"{path}: {len(errors)} failed")
    for e in errors:
        click.echo(f"  {e.utt_id}  fold {e.fold}  label {e.label}: {e.error}")


@cache_group.command("verify")
@cache_path_argument
@json_option()
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


@cache_group.command("export")
@cache_path_argument
@click.option("--format", "fmt", type=RegistryChoice(_export_formats), required=True,
              help="hdf5: one file, /<layer>/<utt_id> datasets + /utterances table; "
                   "npy: <layer>/<utt_id>.npy files + index.csv.")
@layers_option("Layers to export, e.g. enc:4,dec:all.")
@click.option("--out", required=True, type=click.Path(), help="Output file (hdf5) or folder (npy).")
@click.option("--pool", type=RegistryChoice(_export_pools), default="none", show_default=True,
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


@cache_group.command("asr-metrics")
@cache_path_argument
@json_option("One JSON object (with every utterance's score).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write per-utterance scores here.")
@storage_options_option
def cache_asr_metrics(path, as_json, csv_path, storage_options):
    """WER (CER for Chinese) of the stored Whisper hypotheses against the transcripts, Whisper-normalised."""
    from pipeline.asr_metrics import asr_metrics

    m = asr_metrics(path, storage_options)
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["utt_id", "errors", "units", "rate", "reference", "hypothesis"])
            for u in m.per_utterance:
                w.writerow([u.utt_id, u.errors, u.units, u.rate, u.reference, u.hypothesis])
    if as_json:
        click.echo(json.dumps(m.to_dict()))
        return
    click.echo(f"{m.cache}: {m.metric.upper()} {100 * m.value:.2f}% over {m.n_scored} utterances "
               f"({m.n_skipped} without a transcript); model {m.model}, condition {m.condition}, "
               f"normaliser {m.normalizer}")


@cache_group.command("combine")
@click.argument("parts", type=click.Path(file_okay=False),
                help="Folder of part caches written by nser-extract --parts N --part K (OUT.parts).")
@click.option("--out", required=True, type=click.Path(), help="The combined cache (a .zarr folder).")
@click.option("--overwrite", is_flag=True, help="Replace an existing cache at --out.")
def cache_combine(parts, out, overwrite):
    """One cache from every complete part of a split extraction, as a single run would have written it."""
    from pipeline.cache.combine import combine_parts

    rep = combine_parts(parts, out, overwrite=overwrite)
    click.echo(f"{rep.path}: {rep.n_utterances} utterances and {len(rep.errors)} failed from {rep.n_parts} parts; "
               f"identity {rep.identity_hash}", err=True)
