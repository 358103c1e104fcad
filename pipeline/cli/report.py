"""`nser-report RESULTS_DIR_OR_CSV...` (`nser report`): figures and tables of a grid's results (docs/grid.md)."""

from __future__ import annotations

import click

from pipeline.cli.common import NserCommand
from pipeline.report import PAPER_TABLES


@click.command("report", cls=NserCommand)
@click.argument("sources", metavar="RESULTS_DIR_OR_CSV...", nargs=-1, required=True, type=click.Path(exists=True),
                help="A grid's results folder (results.parquet or results.csv inside), or such a table; several "
                     "are pooled (a grid finished in parts), each run once.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for report.md and its files (default: <results dir>/report).")
@click.option("--paper-table", "paper_tables", multiple=True, type=click.Choice(PAPER_TABLES),
              help="A paper table the runs reproduce (repeatable; iii: feature sources, iv: fusions, v: SNRs, "
                   "vi: text vs speech): its paper-layout table shows the paper's value and our difference beside "
                   "each cell. Needs --paper-dataset.")
@click.option("--paper-dataset", help="The paper's dataset the runs are (the corpus name: iemocap, meld).")
@click.option("--compare", nargs=2, multiple=True, metavar="METHOD_A METHOD_B",
              help="Instead of the report: a paired t-test and Wilcoxon signed-rank test of the two methods' UAR "
                   "over their common (condition, test fold) scores, seeds both ran averaged per fold. Methods as "
                   "the fusion table names them "
                   "(e.g. l-adapter, 'single [enc:12]'; 'enc+dec mean' where a method runs on several stacks). "
                   "Repeatable: several pairs end with one table of them, the t-test's p also Holm-adjusted for "
                   "the number of pairs tested.")
@click.option("--records", "records", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A run records folder (nser-grid --records; repeatable): a run's metrics.json is looked for "
                   "there when its run dir is not here, for the learned layer weights.")
def report_command(sources, out, paper_tables, paper_dataset, compare, records):
    """Write report.md with layer-wise curves, the fusion table, SNR robustness and confusion matrices."""
    if compare:
        from pipeline.report.aggregate import load_results
        from pipeline.report.compare import compare_methods, summary_table

        df = load_results(*sources)[0]
        done = [compare_methods(df, a, b) for a, b in compare]  # all checked before any is printed
        click.echo("\n\n".join(c.describe() for c in done))
        if len(done) > 1:
            click.echo("\n" + summary_table(done))
        return
    from pipeline.report.build import build_report  # pandas, matplotlib

    rep = build_report(sources, out, tuple(paper_tables), paper_dataset, records=tuple(records))
    click.echo(f"{rep.path}: sections {', '.join(rep.written) or 'none'}; "
               f"skipped {', '.join(rep.skipped) or 'none'}; {len(rep.files)} files")
