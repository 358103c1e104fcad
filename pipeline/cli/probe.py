"""`nser-probe` (`nser probe`): a linear probe per cached layer, a fast layer scan (docs/probe.md)."""

from __future__ import annotations

import json
import time

import click

from pipeline.cli.common import NserCommand, RegistryChoice, cache_option, json_option, layers_option, \
    quiet_option, seed_option, storage_options_option


def _pooling_names():
    from pipeline.probe import POOLINGS
    return POOLINGS


@click.command("probe", cls=NserCommand)
@cache_option
@storage_options_option
@layers_option("Layers to probe, e.g. enc:all,dec:0-4.")
@click.option("--out", type=click.Path(file_okay=False), help="Write probe.csv, probe.json and probe.png here.")
@click.option("--pooling", type=RegistryChoice(_pooling_names), default="mean", show_default=True,
              help="Utterance features: mean of the states, or mean and std concatenated.")
@seed_option("Seed of the logistic regression.")
@click.option("--allow-missing", is_flag=True,
              help="Probe a cache with failed or not yet extracted utterances (refused otherwise); "
                   "probe.json's left_out says how many are missing.")
@click.option("--overwrite", is_flag=True,
              help="Replace probe files in --out that another probe (other cache, layers, pooling or seed) wrote.")
@json_option("Print probe.json's object instead of the table.")
@quiet_option
def probe_command(cache, storage_options, layers, out, pooling, seed, allow_missing, overwrite, as_json, quiet):
    """Linear probe per layer (pooled states, logistic regression) on the training folds: a fast layer scan."""
    from pipeline.cache.reader import CacheReader
    from pipeline.folds import echo_coverage_warnings
    from pipeline.probe import check_probe_out, format_probe_table, probe_key, probe_layers, probe_report, \
        write_probe_outputs

    t0 = time.perf_counter()
    reader = CacheReader(cache, storage_options)
    selection = reader.selection(layers)
    if out and not overwrite:  # before minutes of probing, not after
        check_probe_out(out, probe_key(reader, selection.spec(), pooling, seed))
    with echo_coverage_warnings(lambda line: click.echo(line, err=True)):
        rows = probe_layers(reader, selection, seed, pooling=pooling, progress=not quiet, allow_missing=allow_missing)
    report = probe_report(reader, rows, seed=seed, pooling=pooling, layers=selection.spec(),
                          seconds=time.perf_counter() - t0)
    paths = write_probe_outputs(report, out, overwrite) if out else {}
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(format_probe_table(rows))
    click.echo(f"{len(rows)} layers x {len(rows[0]['folds'])} folds in {report['seconds']:.1f} s"
               + (f"; wrote {', '.join(str(p) for p in paths.values())}" if paths else ""), err=True)
