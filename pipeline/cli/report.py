"""`nser-report RESULTS_DIR_OR_CSV` (`nser report`): figures and tables of a grid's results (docs/grid.md)."""

from __future__ import annotations

import click

from pipeline.cli.common import NserCommand


@click.command("report", cls=NserCommand)
@click.argument("source", metavar="RESULTS_DIR_OR_CSV", type=click.Path(exists=True),
                help="A grid's results folder (results.parquet or results.csv inside), or such a table.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for report.md and its files (default: <results dir>/report).")
@click.option("--paper-table", "paper_tables", multiple=True, type=click.Choice(["iv", "v"]),
              help="A paper table the runs reproduce (repeatable): its paper-layout table shows the paper's "
                   "value and our difference beside each cell. Needs --paper-dataset.")
@click.option("--paper-dataset", help="The paper's dataset the runs are (the corpus name: iemocap, meld).")
def report_command(source, out, paper_tables, paper_dataset):
    """Write report.md with layer-wise curves, the fusion table, SNR robustness and confusion matrices."""
    from pipeline.report.build import build_report  # pandas, matplotlib

    rep = build_report(source, out, tuple(paper_tables), paper_dataset)
    click.echo(f"{rep.path}: sections {', '.join(rep.written) or 'none'}; "
               f"skipped {', '.join(rep.skipped) or 'none'}; {len(rep.files)} files")
