"""TrainConfig: the settings of one training run, without torch (the grid and the CLIs build and
check them before any model code is imported)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pipeline.errors import NserError
from pipeline.folds import VALIDATIONS
from pipeline.layers import PAPER_LAYERS
from pipeline.train.fusion_specs import FUSION_SPECS


@dataclass
class TrainConfig:
    fusion: str = "l-adapter"
    layers: str = PAPER_LAYERS
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-4
    # Adam's rate for the learned layer weights (l-adapter's, weighted-sum's and scalar-mix's softmax
    # logits); None: lr, the paper's recipe. Adam moves a parameter by about lr per step, so at 1e-4
    # a few hundred steps leave the weights near uniform (docs/training.md).
    layer_weight_lr: float | None = None
    dropout: float = 0.5  # before the classifier
    adapter_dropout: float = 0.5  # on each layer adapter's BiGRU output (the paper's 0.5; 0: none)
    hidden: int = 256
    seed: int = 0
    folds: str = "all"  # comma-separated test folds to run, or all
    device: str = "auto"  # auto: cuda when available, else cpu
    threads: int = 0  # torch CPU threads; 0 = torch's default
    allow_missing: bool = False  # train even if utterances of the selected folds failed extraction
    expect_model: str | None = None  # refuse a cache made with another model
    memory_budget: int = 0  # bytes for the run's states in memory (0: half the available RAM); else streamed
    length_buckets: bool = False  # training batches of similar lengths (pipeline/train/batching.py)
    validation: str = "paper"  # how the epoch-picking part is made (pipeline/folds.py, docs/training.md)
    tensorboard: str | None = None  # folder for per-epoch TensorBoard scalars (needs the tensorboard package)
    # float32, the recipe; float16: CUDA mixed precision, autocast + loss scaling (docs/gpu.md);
    # bfloat16: CPU autocast, for CPUs with bfloat16 instructions (docs/training.md)
    precision: str = "float32"
    # each selected layer standardised per feature with training-part statistics before the fusion
    # (pipeline/train/fusion.py StandardizedStates); not the paper's recipe, which feeds raw states
    state_norm: bool = False

    def check(self) -> None:
        """Refuse values no run can use, naming each setting: otherwise epochs 0 crashes after the
        data is read, batch size 0 or a NaN lr fails deep in torch, and a negative seed in numpy.
        nser-train, the API and grid specs all come through here."""
        def whole(value: Any, lo: int, hi: int | None = None) -> bool:
            return (isinstance(value, int) and not isinstance(value, bool) and value >= lo
                    and (hi is None or value <= hi))

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        problems = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("epochs", self.epochs, whole(self.epochs, 1), "a whole number >= 1"),
            ("batch_size", self.batch_size, whole(self.batch_size, 1), "a whole number >= 1"),
            ("lr", self.lr, number(self.lr) and self.lr > 0, "a finite number > 0"),
            ("layer_weight_lr", self.layer_weight_lr,
             self.layer_weight_lr is None or (number(self.layer_weight_lr) and self.layer_weight_lr > 0),
             "a finite number > 0, or null (the learning rate)"),
            ("dropout", self.dropout, number(self.dropout) and 0 <= self.dropout < 1, "in [0, 1)"),
            ("adapter_dropout", self.adapter_dropout, number(self.adapter_dropout) and 0 <= self.adapter_dropout < 1,
             "in [0, 1)"),
            ("hidden", self.hidden, whole(self.hidden, 1), "a whole number >= 1"),
            ("seed", self.seed, whole(self.seed, 0, 2**32 - 1), "a whole number in 0..2**32-1"),
            ("threads", self.threads, whole(self.threads, 0), "a whole number >= 0 (0: torch's default)"),
            ("memory_budget", self.memory_budget, whole(self.memory_budget, 0),
             "a whole number of bytes >= 0 (0: half the available memory)"),
            ("device", self.device, isinstance(self.device, str) and bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device)),
             "auto, cpu, cuda or cuda:N"),
            ("fusion", self.fusion, self.fusion in FUSION_SPECS, f"one of {', '.join(sorted(FUSION_SPECS))}"),
            ("folds", self.folds, isinstance(self.folds, str) and bool(self.folds.strip(" ,")),
             "'all' or comma-separated fold names"),
            ("length_buckets", self.length_buckets, isinstance(self.length_buckets, bool), "true or false"),
            ("validation", self.validation, self.validation in VALIDATIONS, f"one of {', '.join(VALIDATIONS)}"),
            ("precision", self.precision, self.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
            ("state_norm", self.state_norm, isinstance(self.state_norm, bool), "true or false"),
        ) if not ok]
        if (self.layer_weight_lr is not None and self.fusion in FUSION_SPECS
                and not FUSION_SPECS[self.fusion].learned_layer_weights):
            learned = ", ".join(n for n, f in FUSION_SPECS.items() if f.learned_layer_weights)
            problems.append(f"layer_weight_lr: fusion {self.fusion} has no learned layer weights ({learned} have)")
        if self.state_norm is True and self.fusion in FUSION_SPECS and FUSION_SPECS[self.fusion].standardises_input:
            problems.append(f"state_norm: fusion {self.fusion} standardises its input vector already")
        if self.validation == "none" and self.fusion in FUSION_SPECS and FUSION_SPECS[self.fusion].chosen_on_validation:
            problems.append(f"fusion {self.fusion} chooses its layer on validation, which --validation none leaves out")
        if problems:
            raise ConfigError("; ".join(problems))


PRECISIONS = ("float32", "float16", "bfloat16")
AUTOCAST_DTYPES = {"float16": "float16", "bfloat16": "bfloat16"}  # precision -> torch dtype name under autocast


class ConfigError(NserError):
    """A TrainConfig value no run can use."""


# Settings that do not change results: a rerun with other values still resumes the same run.
# memory_budget only decides whether the states fit in memory; a run streamed for want of memory
# (other batches) records that as its data mode, and is not resumed in the other mode.
NON_RESULT_FIELDS = ("threads", "device", "allow_missing", "expect_model", "memory_budget", "tensorboard")


# Settings added after runs existed, at the values that give those runs' results: left out of the
# result settings at such a value, so earlier run keys and run dirs stay valid. validation: a split
# cache's next fold is its dev part (pipeline/folds.py), so both are what runs did before.
LATER_NEUTRAL: dict[str, tuple[Any, ...]] = {"length_buckets": (False,), "validation": ("next-fold", "dev"),
                                              "layer_weight_lr": (None,), "precision": ("float32",),
                                              "state_norm": (False,)}


def result_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig as a dict (`asdict`, or read back from a run's config.json) less
    NON_RESULT_FIELDS (and LATER_NEUTRAL fields at their neutral value): two runs with equal result
    settings on one cache give the same results."""
    return {k: v for k, v in config.items()
            if k not in NON_RESULT_FIELDS and not (k in LATER_NEUTRAL and v in LATER_NEUTRAL[k])}


def result_setting(settings: dict[str, Any], name: str) -> Any:
    """One setting of `result_settings`' output: a LATER_NEUTRAL field it leaves out is at its
    (first) neutral value; any other field it lacks, None."""
    return settings.get(name, LATER_NEUTRAL.get(name, (None,))[0])
