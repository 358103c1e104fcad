"""`nser-grid GRID.yaml` (`nser grid`): expand a grid spec, run what is unfinished on Dask, write the
results table."""

from __future__ import annotations

import sys
import warnings

import click

from pipeline.cli.common import NserCommand, quiet_option


@click.command("grid", cls=NserCommand)
@click.argument("grid_file", metavar="GRID.yaml", type=click.Path(dir_okay=False),
                help="Grid spec: caches, fusions, layers, seeds and training settings (docs/grid.md).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Dask scheduler to use (e.g. tls://host:8786); default: a local cluster of worker processes. "
                   "Dask runs pickled code on its workers: only use a cluster you trust (docs/grid.md).")
@click.option("--tls-ca-file", type=click.Path(exists=True, dir_okay=False),
              help="tls:// scheduler: the CA certificate its certificate must chain to.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="tls:// scheduler: this client's certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="tls:// scheduler: this client's private key, unless it is in --tls-cert's file.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Local cluster workers (default: one per usable core; one on a CUDA machine).")
@click.option("--out", type=click.Path(file_okay=False), help="Results folder (overrides the spec's `out`).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set a top-level spec key (folds, seeds, caches, missing_caches, ...) or train.FIELD, the value "
                   "read as YAML: e.g. --set folds=[2] --set train.threads=1 (repeatable; docs/grid.md).")
@click.option("--dry-run", is_flag=True, help="List the runs (and which are finished) without running anything.")
@click.option("--no-derive", is_flag=True,
              help="Train every best/last run, even where the grid's single runs give its results (docs/grid.md).")
@click.option("--no-pack", is_flag=True,
              help="One run per task: do not train runs that share their states from one read (docs/grid.md).")
@click.option("--collect", is_flag=True,
              help="Train nothing: write the results table of the runs finished so far (the rest `pending`), "
                   "e.g. to report on a grid that is finished in parts.")
@click.option("--records", type=click.Path(file_okay=False),
              help="A folder of run records (each finished run's run.json, config.json, metrics.json and "
                   "done.json; no checkpoints): runs whose record it holds are finished from it instead of "
                   "trained, and every finished run's record is kept there. For grids finished in parts on "
                   "machines whose run folders do not last (docs/grid.md, \"Run records\").")
@quiet_option
def grid_command(grid_file, scheduler, tls_ca_file, tls_cert, tls_key, workers, out, sets, dry_run, no_derive,
                 no_pack, collect, records, quiet):
    """Run an ablation grid (fusions x layers x caches x seeds) and aggregate its results.

    Finished runs (a done.json in their run dir) are skipped, so rerunning the same command
    resumes an interrupted grid and retries failed runs. Exits with status 1 if any run failed."""
    from pipeline.grid.packing import describe_packs, plan_packs
    from pipeline.grid.records import has_record
    from pipeline.grid.runner import (default_workers, is_done, run_grid, scheduler_security, scheduler_warning,
                                      stale_derived)
    from pipeline.grid.spec import load_grid

    tls = (tls_ca_file, tls_cert, tls_key)
    if scheduler and workers:
        raise click.UsageError("--workers sizes the local cluster; with --scheduler the cluster has its own workers")
    if any(tls) and not scheduler:
        raise click.UsageError("--tls-ca-file/--tls-cert/--tls-key go with a tls:// --scheduler; the local "
                               "cluster listens on 127.0.0.1 only")
    security = scheduler_security(scheduler, *tls) if scheduler else None  # settings checked before the spec
    spec = load_grid(grid_file, out=out, sets=sets)
    runs = _expand(spec, derive=not no_derive)
    n_done = sum(is_done(r) for r in runs)
    n_derived = sum(r.derived for r in runs)
    in_records = {r.key for r in runs if records and not r.derived and not is_done(r) and has_record(records, r.key)}
    click.echo(f"{grid_file}: {len(runs)} runs ({len(runs) - n_derived} trained, {n_derived} derived from them), "
               f"{n_done} already finished" + (f", {len(in_records)} more in {records}" if records else "")
               + f"; out: {spec.out}", err=True)
    if dry_run:
        stale = {r.key for r in stale_derived(runs)}  # finished, but their sources changed: derived again
        for r in runs:
            click.echo(("stale   " if r.key in stale else "done    " if is_done(r) else
                        "record  " if r.key in in_records else "todo    ") + r.describe())
        todo = [r for r in runs if not r.derived and not is_done(r) and r.key not in in_records]
        n = workers or default_workers()
        # a scheduler's cluster is not asked at --dry-run: the split assumes --workers or the local default
        click.echo(f"{describe_packs(plan_packs(todo, n, not no_pack))} for {n} worker(s)", err=True)
        return
    warning = scheduler_warning(scheduler) if scheduler else None
    if warning:
        click.echo(f"warning: {warning}", err=True)
    outcome = run_grid(runs, spec.out, scheduler=scheduler, n_workers=workers, security=security,
                       progress=not quiet, pack=not no_pack, train=not collect, records=records)
    click.echo(outcome.summary(), err=True)
    for w in outcome.record_warnings:
        click.echo(f"warning: {w}", err=True)
    failed = outcome.table[outcome.table["status"] == "failed"]
    for _, row in failed.head(20).iterrows():
        click.echo(f"  failed {row['run_key']} ({row['fusion']} {row['layers']} on {row['condition']}): "
                   f"{row['error']}; see {row['run_dir']}/error.txt", err=True)
    if len(failed):
        sys.exit(1)


def _expand(spec, derive: bool) -> list:
    """The spec's runs; its missing-cache warning is echoed like the command's other notices, as
    `warning: ...` without Python's file:line header and source line."""
    from pipeline.grid.spec import MissingCacheWarning, expand

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingCacheWarning)
        runs = expand(spec, derive=derive)
    for w in caught:
        if issubclass(w.category, MissingCacheWarning):
            click.echo(f"warning: {w.message}", err=True)
        else:  # any other warning as Python would have shown it
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return runs
