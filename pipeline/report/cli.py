"""`nser-report RESULTS_DIR_OR_CSV`: figures and tables of a grid's results (see docs/grid.md).

Like pipeline/grid/cli.py, this module does not import pipeline.cli (which registers it as
`nser report`), and imports pandas/matplotlib only when the command runs."""

from __future__ import annotations

import click

from pipeline.errors import NserError


@click.command("report")
@click.argument("source", metavar="RESULTS_DIR_OR_CSV", type=click.Path(exists=True))
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for report.md and its files (default: <results dir>/report).")
def report_command(source, out):
    """Write report.md with layer-wise curves, the fusion table, SNR robustness and confusion matrices."""
    from pipeline.report.build import build_report

    try:
        rep = build_report(source, out)
    except NserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{rep.path}: sections {', '.join(rep.written) or 'none'}; "
               f"skipped {', '.join(rep.skipped) or 'none'}; {len(rep.files)} files")


if __name__ == "__main__":
    report_command()
