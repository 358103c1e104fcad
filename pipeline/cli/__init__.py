"""The `nser` command group. Each command group lives in its own module and is registered here;
`nser-extract`, `nser-train`, `nser-grid`, `nser-report` and `nser-probe` are the same commands
run alone (setup.cfg)."""

from __future__ import annotations

import click

from pipeline import __version__
from pipeline.cli.cache import cache_group
from pipeline.cli.common import NserGroup
from pipeline.cli.demo import demo_corpus
from pipeline.cli.extract import extract_command
from pipeline.cli.grid import grid_command
from pipeline.cli.probe import probe_command
from pipeline.cli.report import report_command
from pipeline.cli.train import train_command


@click.group(cls=NserGroup)
@click.version_option(__version__, prog_name="nser", message="%(prog)s %(version)s")
def main():
    """nser-pipeline: Whisper layer caches and layer-adapter training for noisy speech emotion recognition."""


for _command in (extract_command, train_command, cache_group, probe_command, grid_command, report_command,
                 demo_corpus):
    main.add_command(_command)
