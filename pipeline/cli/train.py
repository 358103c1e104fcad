"""`nser-train` (`nser train`): fusion training on a cache, speaker-independent cross-validation or a corpus split."""

from __future__ import annotations

import math
import re
from pathlib import Path

import click

from pipeline.cli.common import NserCommand, RegistryChoice, cache_option, layers_option, quiet_option, \
    seed_option, storage_options_option
from pipeline.folds import VALIDATIONS
from pipeline.layers import PAPER_LAYERS
from pipeline.train.config import PRECISIONS


def _fusion_names():
    from pipeline.train.fusion_specs import FUSION_SPECS
    return FUSION_SPECS


class DeviceType(click.ParamType):
    """auto, cpu, cuda or cuda:N, checked at parsing; whether that GPU exists is the trainer's to say."""

    name = "device"

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "[auto|cpu|cuda|cuda:N]"

    def convert(self, value, param, ctx) -> str:
        if isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            return value
        self.fail(f"{value!r} is not one of auto, cpu, cuda, cuda:N (N: a GPU index)", param, ctx)


def _positive_finite(ctx, param, value: float | None) -> float | None:
    """click.FloatRange lets nan and inf through; a learning rate must be neither."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a finite number > 0, got {value}")
    return value


@click.command("train", cls=NserCommand)
@cache_option
@storage_options_option
@click.option("--out", required=True, type=click.Path(), help="Run dir for config, log and metrics.")
@click.option("--fusion", type=RegistryChoice(_fusion_names), default="l-adapter", show_default=True,
              help="single: one layer; last: a stack's last state; best: the single layer with the best "
                   "validation UAR; mean / attention / scalar-mix / weighted-sum: layers mixed per frame "
                   "before one shared head; l-adapter: the paper's adapter per layer (docs/fusions.md).")
@layers_option("Default: every block of both stacks, as the paper (enc:blocks = 1..L); enc:all adds the "
               "embedding output (0). E.g. enc:all,dec:all | dec:0-4 | enc:10,12 | enc:last", default=PAPER_LAYERS)
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Epochs per fold; the epoch with the best validation UAR is tested.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Utterances per training step.")
@click.option("--lr", type=float, default=1e-4, show_default=True, callback=_positive_finite,
              help="Learning rate (Adam).")
@click.option("--layer-weight-lr", type=float, callback=_positive_finite,
              help="Adam's rate for the learned layer weights of l-adapter, weighted-sum and scalar-mix (default: "
                   "--lr, the paper's recipe; at 1e-4 they stay near uniform on small corpora, docs/training.md).")
@click.option("--length-buckets", is_flag=True,
              help="Training batches of similar lengths: fewer padded GRU steps on real-length speech, other "
                   "batches than the paper's random ones (docs/training.md); needs the states in memory.")
@click.option("--state-norm", is_flag=True,
              help="Standardise each selected layer's states per feature (mean and std of the training part's "
                   "frames) before the fusion; the paper feeds raw states, whose scales differ by orders of "
                   "magnitude across layers (docs/training.md). Its own run key.")
@click.option("--adapter-dropout", type=float, default=0.5, show_default=True,
              help="Dropout on each layer adapter's BiGRU output, the paper's 0.5; 0 keeps only the dropout "
                   "before the classifier (this tool's behaviour before the option existed).")
@click.option("--validation", type=click.Choice(VALIDATIONS), default="paper", show_default=True,
              help="The part that picks the epoch. paper (default): speaker-carve on cv caches, train+dev on split "
                   "caches, the paper's training data; next-fold: the fold after the test fold (cv; on a split "
                   "cache: dev), this tool's default before the option existed; speaker-carve: speakers carved from "
                   "the training folds (cv), so training sees every fold but the test fold; dev: train on train, "
                   "pick on dev (split); train+dev: train on train+dev less carved speakers (split); none: no "
                   "validation, the last epoch is kept (docs/training.md).")
@seed_option("Seed of weight initialisation, batch order and carved validation speakers.")
@click.option("--folds", default="all", show_default=True, help="Test folds to run (comma-separated).")
@click.option("--device", type=DeviceType(), default="auto", show_default=True,
              help="auto: cuda when torch sees a GPU (said on stderr), else cpu; cuda:N picks a GPU; the states "
                   "then live on the GPU when they fit (docs/gpu.md).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="float32", show_default=True,
              help="float16: CUDA mixed precision (GRUs and matrix products in float16 under autocast, loss "
                   "scaling, float32 weights), with a drift docs/gpu.md measures; refused on a CPU. bfloat16: "
                   "CPU autocast (float32 weights), faster on CPUs with bfloat16 instructions, slower on others "
                   "(docs/training.md); refused on CUDA.")
@click.option("--memory-budget", default="0", show_default=True,
              help="Bytes for the run's states in memory, e.g. 8G (0: half the available memory); larger "
                   "selections are streamed from the cache every epoch, in other batches (docs/training.md).")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="torch CPU threads (0: default).")
@click.option("--model", "expect_model", help="Refuse a cache extracted with another model.")
@click.option("--allow-missing", is_flag=True, help="Train even if some utterances failed extraction.")
@click.option("--tensorboard", type=click.Path(file_okay=False),
              help="Folder for per-epoch training loss and validation UAR as TensorBoard scalars "
                   "(needs the tensorboard package: pip install tensorboard).")
@quiet_option
def train_command(cache, storage_options, out, fusion, layers, epochs, batch_size, lr, layer_weight_lr, length_buckets,
                  state_norm, adapter_dropout, validation, seed, folds, device, precision, memory_budget, threads, expect_model,
                  allow_missing, tensorboard, quiet):
    """Train a fusion model on cached layers: speaker-independent cross-validation (folds sharing a speaker
    are refused), or the train/dev/test split of a split-protocol corpus (MELD: as released, speakers recur)."""
    from pipeline.cache.reader import CacheReader
    from pipeline.folds import echo_coverage_warnings
    from pipeline.train.resident import parse_size
    from pipeline.train.config import TrainConfig
    from pipeline.train.trainer import format_metrics_table, train_on_cache

    cfg = TrainConfig(fusion=fusion, layers=layers, epochs=epochs, batch_size=batch_size, lr=lr,
                      layer_weight_lr=layer_weight_lr,
                      adapter_dropout=adapter_dropout, length_buckets=length_buckets, validation=validation, seed=seed,
                      folds=folds, device=device, threads=threads, expect_model=expect_model,
                      allow_missing=allow_missing, memory_budget=parse_size(memory_budget), tensorboard=tensorboard,
                      precision=precision, state_norm=state_norm)
    cfg.check()  # before the cache is opened: a bad setting is named even if the cache is also wrong
    with CacheReader(cache, storage_options) as reader, \
            echo_coverage_warnings(lambda line: click.echo(line, err=True)):  # when they happen, not hours later
        metrics = train_on_cache(reader, out, cfg, progress=not quiet)
    click.echo(format_metrics_table(metrics))
    click.echo(f"metrics: {Path(out) / 'metrics.json'}")
