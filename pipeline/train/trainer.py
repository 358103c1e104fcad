"""Cross-validated training of a fusion model on a cache; writes config, per-epoch log and metrics.

A run killed mid-way resumes from its last epoch checkpoint when the same command runs again
(same config and cache), and ends with the same metrics as an uninterrupted run.

Per test fold, a validation part made as `--validation` says (pipeline/folds.py; by default the
next fold, speaker-independent) picks the epoch; the test fold is only scored once, at the end.
`--fusion best` trains a single-layer model per selected layer on the same folds, picks the layer
per test fold by that fold's validation UAR, and only then scores each fold's chosen model on its test fold.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError
from pipeline.failpoints import failpoint
from pipeline.folds import NOT_EXTRACTED, check_cache_complete, check_class_coverage, corpus_folds, fold_plan, left_out, \
    resolve_validation, select_folds
from pipeline.layers import LayerSelection
from pipeline.train.checkpoint import CheckpointError, RunCheckpoints
from pipeline.train.config import AUTOCAST_DTYPES, TrainConfig, result_settings
from pipeline.train.dataset import NonFiniteError, PerUtteranceData
from pipeline.train.fusion import build_fusion, layer_weights_of
from pipeline.train.fusion_specs import FusionSpec, fusion_spec
from pipeline.train.metrics import classification_metrics, summarize_folds
from pipeline.train.resident import STACKS, RunData, default_memory_budget
from pipeline.train.tensorboard import EpochBoard
from pipeline.train.run_metrics import FoldMetrics, LayerChoice, RunMetrics, choose_on_validation
from pipeline.safe_files import atomic_write
from pipeline.version import code_version


def resolve_device(device: str) -> str:
    """`auto`: cuda when torch sees a GPU, else cpu. An explicit cuda without one is refused rather
    than run on the CPU, which would take ~hours where the user planned minutes."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NserError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU here; use --device cpu "
                        "or auto, or install a CUDA build of torch (docs/gpu.md)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _forward(model: torch.nn.Module, batch: dict[str, Any], cfg: TrainConfig) -> torch.Tensor:
    """The model's float32 logits for a batch, under autocast with `precision` float16 (a CUDA
    device) or bfloat16 (the CPU; _prepare_run refuses each elsewhere). On CUDA float16, not
    bfloat16: torch's autocast runs cuDNN RNNs in float16 whatever dtype it is given (ATen's
    AutocastRNN), so the GRUs, most of the work, would be float16 either way, and float16 needs the
    loss scaling _train_fold applies. On the CPU bfloat16, which needs no loss scaling (float32's
    range) and which CPUs with bfloat16 instructions (AVX512-BF16, AMX) multiply faster.
    non_blocking: pinned (streamed) batches copy to the GPU while the previous step runs."""
    dtype = getattr(torch, AUTOCAST_DTYPES.get(cfg.precision, "float32"))
    with torch.autocast(torch.device(cfg.device).type, dtype=dtype, enabled=cfg.precision in AUTOCAST_DTYPES):
        logits = model([x.to(cfg.device, non_blocking=True) for x in batch["layers"]], batch["lengths"])
    return logits.float()


def _evaluate(model: torch.nn.Module, loader: DataLoader, cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """Labels and predictions; a NaN state or output is an error, not a prediction (argmax of NaN
    logits is some class, which would score)."""
    model.eval()
    y_true, y_pred = [], []
    with torch.no_grad():
        for batch in loader:
            loader.dataset.check_finite(batch)
            logits = _forward(model, batch, cfg)
            if not bool(torch.isfinite(logits).all()):
                raise NonFiniteError(f"the model's outputs are not finite on the {loader.dataset.part}: its "
                                     "weights diverged; lower the learning rate (--lr)")
            y_pred += logits.argmax(dim=1).tolist()
            y_true += batch["labels"].tolist()
    return y_true, y_pred


def _loader(data: RunData | PerUtteranceData, indices: list[int], selection: LayerSelection,
            class_ids: dict[str, int], cfg: TrainConfig, part: str, generator: torch.Generator | None = None):
    """Shuffled (reproducibly) exactly when a generator is given: the training part."""
    return data.loader(indices, selection, class_ids, cfg.batch_size, part, generator,
                       length_buckets=cfg.length_buckets and generator is not None)


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam at cfg.lr; the learned layer weights (softmax logits) at cfg.layer_weight_lr when set."""
    if cfg.layer_weight_lr is None:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    named = list(model.named_parameters())
    weights = [p for n, p in named if n.endswith("logits")]
    rest = [p for n, p in named if not n.endswith("logits")]
    return torch.optim.Adam([{"params": rest}, {"params": weights, "lr": cfg.layer_weight_lr}], lr=cfg.lr)


def _train_fold(reader: CacheReader, data: RunData | PerUtteranceData, selection: LayerSelection, class_ids: dict[str, int], cfg: TrainConfig,
                train_idx: list[int], val_idx: list[int], log: "RunLog", tag: dict[str, Any],
                progress: bool, ckpt: RunCheckpoints) -> tuple[torch.nn.Module, float | None, int]:
    """Train on one fold's training part; return the model at the epoch with the best validation UAR,
    that UAR and the epoch (without a validation part: the last epoch, UAR None). Never sees the
    test part. Resumes from this fold's checkpoint if any."""
    key = "_".join(f"{k}-{v}" for k, v in tag.items())
    seed_everything(cfg.seed)
    model = build_fusion(cfg.fusion, n_layers=len(selection), d_in=reader.d_model, n_classes=len(class_ids),
                         hidden=cfg.hidden, dropout=cfg.dropout, adapter_dropout=cfg.adapter_dropout,
                         n_encoder=len(selection.encoder), n_decoder=len(selection.decoder),
                         state_norm=cfg.state_norm).to(cfg.device)
    done = ckpt.load_done(key)
    if done is not None:
        model.load_state_dict(done["model"])
        log.restore(key, done["entries"])
        return model, done["best_val"], done["best_epoch"]
    desc = " ".join(f"{k} {v}" for k, v in tag.items())
    if hasattr(model, "fit_input_stats"):  # standardised input (a head's, or --state-norm): training part only
        model.fit_input_stats(_loader(data, train_idx, selection, class_ids, cfg, f"training part of {desc}"))
    opt = _optimizer(model, cfg)
    # loss scaling for float16 gradients; disabled (a pass-through) at float32
    scaler = torch.amp.GradScaler(torch.device(cfg.device).type, enabled=cfg.precision == "float16")
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = _loader(data, train_idx, selection, class_ids, cfg, f"training part of {desc}", generator=gen)
    val_loader = _loader(data, val_idx, selection, class_ids, cfg, f"validation part of {desc}") if val_idx else None
    best: tuple[float | None, int, dict | None] = (-1.0, -1, None)  # model None: the model as it is
    first = 1
    state = ckpt.load_epoch(key)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        best = (state["best_val"], state["best_epoch"], ckpt.best_model(key, state))
        torch.set_rng_state(state["torch_rng"])
        gen.set_state(state["shuffle_rng"])
        log.restore(key, state["entries"])
        first = state["epoch"] + 1
    for epoch in tqdm(range(first, cfg.epochs + 1), desc=desc, disable=not progress, initial=first - 1,
                      total=cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        losses = []
        for batch in train_loader:
            train_loader.dataset.check_finite(batch)
            logits = _forward(model, batch, cfg)
            loss = torch.nn.functional.cross_entropy(logits, batch["labels"].to(cfg.device))
            if not bool(torch.isfinite(loss)):  # before the step: a NaN step would poison every weight
                raise NonFiniteError(f"{desc}, epoch {epoch}: the training loss is {loss.item()}, the model "
                                     f"diverged; lower the learning rate (--lr, now {cfg.lr})")
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
        t_train = time.perf_counter() - t0
        val = classification_metrics(*_evaluate(model, val_loader, cfg), len(class_ids)) if val_loader else None
        if val is None:
            best = (None, epoch, None)
        elif val["uar"] > best[0]:
            best = (val["uar"], epoch, copy.deepcopy(model.state_dict()))
            if epoch < cfg.epochs:  # on disk once per improvement, for a resumed run's end
                ckpt.save_best(key, epoch, best[2])
        log.write(key, {**tag, "epoch": epoch, "train_loss": float(np.mean(losses)),
                        "val_uar": val["uar"] if val else None, "val_macro_f1": val["macro_f1"] if val else None,
                        "train_seconds": t_train,
                        "epoch_seconds": time.perf_counter() - t0})
        if epoch < cfg.epochs:
            ckpt.save_epoch(key, {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                  **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
                                  "best_val": best[0], "best_epoch": best[1],
                                  "torch_rng": torch.get_rng_state(), "shuffle_rng": gen.get_state(),
                                  "entries": log.entries(key)})
        failpoint("train:epoch-end")
    if best[2] is None and val_loader is not None:
        raise CheckpointError(f"{desc}: the best epoch's model ({best[1]}) was not found in {ckpt.dir}; delete it "
                              "to train this run from its start")
    kept = model.state_dict() if best[2] is None else best[2]
    ckpt.save_done(key, {"model": kept, "best_val": best[0], "best_epoch": best[1], "entries": log.entries(key)})
    model.load_state_dict(kept)
    model.zero_grad(set_to_none=True)  # `best` holds a fold's models a while; drop their gradients
    return model, best[0], best[1]


class RunLog:
    """log.jsonl, one line per epoch; on resume it is rebuilt from the checkpoints' entries, so a
    crash between an epoch's log line and its checkpoint leaves no duplicate or missing line."""

    def __init__(self, path: Path, board: EpochBoard | None = None):
        self.path = path
        self._by_key: dict[str, list[dict[str, Any]]] = {}
        self._fh = path.open("w")
        self._board = board  # --tensorboard: each entry as scalars too

    def entries(self, key: str) -> list[dict[str, Any]]:
        return list(self._by_key.get(key, []))

    def restore(self, key: str, entries: list[dict[str, Any]]) -> None:
        for e in entries:
            self.write(key, e)

    def write(self, key: str, entry: dict[str, Any]) -> None:
        self._by_key.setdefault(key, []).append(entry)
        self._fh.write(json.dumps(entry) + "\n")
        self._fh.flush()
        if self._board:
            self._board.write(key, entry)

    def close(self) -> None:
        self._fh.close()
        if self._board:
            self._board.close()


def _test_fold(model: torch.nn.Module, data: RunData | PerUtteranceData, selection: LayerSelection, class_ids: dict[str, int],
               cfg: TrainConfig, test_fold: str, test_idx: list[int], best_val: float, best_epoch: int, n_train: int,
               n_val: int) -> FoldMetrics:
    loader = _loader(data, test_idx, selection, class_ids, cfg, f"test fold {test_fold}")
    test = classification_metrics(*_evaluate(model, loader, cfg), len(class_ids))
    learned = layer_weights_of(model)
    weights = dict(zip(selection.names, learned.detach().tolist())) if learned is not None else None
    return FoldMetrics(**test, best_epoch=best_epoch, val_uar=best_val, n_train=n_train, n_val=n_val,
                       layer_weights=weights)


def check_cache_for_training(reader: CacheReader, cfg: TrainConfig, folds: set[str]) -> None:
    """Refuse caches that cannot give the numbers asked for, with the reason and the way out."""
    if cfg.expect_model and reader.meta.model.name != cfg.expect_model:
        raise NserError(f"cache {reader.where} was extracted with {reader.meta.model.name}, not {cfg.expect_model}")
    check_cache_complete(reader, folds, cfg.allow_missing)


def train_on_cache(cache: str | Path | CacheReader, out_dir: str | Path, cfg: TrainConfig,
                   progress: bool = True, *, per_utterance: bool = False, data: RunData | None = None
                   ) -> dict[str, Any]:
    """`per_utterance`: read every utterance from the cache every epoch, as training did before its
    states were read once (pipeline/train/resident.py); for bench/train.py and the test that the
    two give the same results. `data`: states already read from `cache` (an open reader) for
    several runs (shared_run_data), used instead of reading this run's own."""
    cfg.check()
    if isinstance(cache, CacheReader):
        return _train_on_reader(cache, out_dir, cfg, progress, per_utterance, data)
    if data is not None:
        raise NserError("shared run data comes with the CacheReader it was read from, not a cache path")
    # Held open (the cache's shared readers lock) until training ends: --overwrite is refused meanwhile.
    with CacheReader(cache) as reader:
        return _train_on_reader(reader, out_dir, cfg, progress, per_utterance)


def run_candidates(reader: CacheReader, cfg: TrainConfig) -> list[LayerSelection]:
    """The layer selections a run trains (one, or each layer of a fusion chosen on validation)."""
    return fusion_spec(cfg.fusion).candidates(reader.selection(cfg.layers), reader.n_encoder_states,
                                              reader.n_decoder_states)


def _needed(plan: list[tuple[str, list[int], list[int], list[int]]]) -> list[int]:
    """Every utterance a run's folds train, validate or test on."""
    return [i for p in plan for part in p[1:] for i in part]


def shared_run_data(reader: CacheReader, cfgs: list[TrainConfig]) -> RunData:
    """One RunData (not read yet) for runs that differ only in what they train (fusion, layers,
    seed, ...): the union of their layers over their common folds' utterances, read once and
    trained from by each run in turn. A run's batches from it equal those from its own RunData
    (RunData.make_batch takes the run's layers from the buffer, whichever others it holds)."""
    shared = {(c.folds, c.memory_budget, c.device) for c in cfgs}
    if len(shared) != 1:
        raise NserError(f"runs sharing their states need the same folds, memory budget and device, got {shared}")
    cfg = cfgs[0]
    plan = select_folds(fold_plan(reader), cfg.folds)
    return RunData(reader, [s for c in cfgs for s in run_candidates(reader, c)], _needed(plan),
                   cfg.memory_budget or default_memory_budget(), resolve_device(cfg.device))


def _check_shared(data: RunData, reader: CacheReader, candidates: list[LayerSelection], needed: list[int]) -> None:
    missing = {s: sorted({i for c in candidates for i in getattr(c, s)} - set(data.layers[s])) for s in STACKS}
    if data.reader is not reader or any(missing.values()) or set(needed) - set(data.indices.tolist()):
        raise NserError(f"the shared run data does not hold this run's states (missing layers {missing})")
    if data.mode != "memory":
        raise NserError("shared run data must be in memory: a streamed run reads its own states")


_Trained = tuple[torch.nn.Module, float, int]  # a fold's model at its best epoch, that validation UAR, the epoch


@dataclass
class _Run:
    """What a run's steps share, fixed before training starts (by _prepare_run)."""

    reader: CacheReader
    out: Path
    cfg: TrainConfig  # with the device resolved
    spec: FusionSpec
    candidates: list[LayerSelection]
    layer_names: list[str]  # of every candidate
    class_ids: dict[str, int]
    plan: list[tuple[str, list[int], list[int], list[int]]]  # (test fold, train, validation, test) per fold
    used_folds: set[str]
    warnings: list[str]
    data: RunData | PerUtteranceData
    ckpt: RunCheckpoints
    log: RunLog
    progress: bool

    def train_fold(self, selection: LayerSelection, train_idx: list[int], val_idx: list[int],
                   tag: dict[str, Any]) -> _Trained:
        return _train_fold(self.reader, self.data, selection, self.class_ids, self.cfg, train_idx, val_idx,
                           self.log, tag, self.progress, self.ckpt)


def _train_on_reader(reader: CacheReader, out_dir: str | Path, cfg: TrainConfig, progress: bool,
                     per_utterance: bool = False, data: RunData | None = None) -> dict[str, Any]:
    run = _prepare_run(reader, Path(out_dir), cfg, progress, per_utterance, data)
    t_run = time.perf_counter()
    selections, trained, choice = _choose_layer(run)
    per_fold = _train_and_test_folds(run, selections, trained)
    run.log.close()
    metrics = _run_metrics(run, per_fold, choice, time.perf_counter() - t_run)
    _write_metrics(run.out / "metrics.json", metrics)
    run.ckpt.clear()
    return metrics.to_dict()


def _prepare_run(reader: CacheReader, out: Path, cfg: TrainConfig, progress: bool, per_utterance: bool,
                 shared: RunData | None = None) -> _Run:
    """Check the cache and settings, claim the run dir (or resume it), read the states as the
    data mode allows (or use `shared`, states read for several runs), and write config.json."""
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = fusion_spec(cfg.fusion)
    spec.check_source(reader.source, reader.meta.model.per_utterance)
    candidates = run_candidates(reader, cfg)
    layer_names = [n for sel in candidates for n in sel.names]
    classes = reader.classes
    present = set(map(str, reader.table["label"]))
    if present - set(classes):
        raise NserError(f"cache labels {sorted(present - set(classes))} are not in its class list {classes}")
    plan = select_folds(fold_plan(reader, cfg.validation, cfg.seed), cfg.folds)
    used_folds = corpus_folds(reader, plan)
    check_cache_for_training(reader, cfg, used_folds)
    data_warnings = check_class_coverage(reader, plan)  # also issued as ClassCoverageWarning
    run_info = {"config": asdict(cfg), "seed": cfg.seed, "code_version": code_version(),
                "cache": {"path": reader.location, "identity_hash": reader.identity_hash,
                          "identity": reader.meta.identity, "n_utterances": reader.n,
                          # an unfinished cache: which utterances it held (its identity stays as it grows)
                          **({"partial": reader.partial_hash} if reader.partial_hash else {})},
                "layers": layer_names, "classes": classes, "torch": torch.__version__,
                "validation": resolve_validation(cfg.validation, reader.meta.corpus.protocol)}
    board = EpochBoard(cfg.tensorboard) if cfg.tensorboard else None  # before any work: refused if not installed
    device = resolve_device(cfg.device)
    if cfg.device == "auto":
        print(f"nser-train: training on {device}"
              + (f" ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else ""), file=sys.stderr)
    if cfg.precision == "float16" and not device.startswith("cuda"):
        raise NserError(f"--precision float16 is for a CUDA device (with loss scaling), and this run trains on "
                        f"{device}: use bfloat16 for reduced precision on a CPU, or float32 (docs/training.md)")
    if cfg.precision == "bfloat16" and device.startswith("cuda"):
        raise NserError("--precision bfloat16 is for the CPU: under CUDA autocast the cuDNN GRUs run in float16 "
                        "whatever dtype is asked, without the loss scaling float16 needs; use float16 on a GPU "
                        "(docs/gpu.md)")
    run_info["device"] = device
    cfg = replace(cfg, device=device)  # what the rest of the run uses; config.json keeps what was asked
    if per_utterance:
        data: RunData | PerUtteranceData = PerUtteranceData(reader)
    elif shared is not None:
        _check_shared(shared, reader, candidates, _needed(plan))
        data = shared
    else:
        data = RunData(reader, candidates, _needed(plan), cfg.memory_budget or default_memory_budget(), cfg.device)
    run_info["data_mode"] = data.mode
    ckpt = RunCheckpoints(out)
    _claim_run_dir(out, run_info, ckpt)
    # This run's results replace them: a run killed from here on must not leave them beside its
    # config.json (done.json: the grid's marker that metrics.json is complete).
    for stale in ("metrics.json", "done.json"):
        (out / stale).unlink(missing_ok=True)
    if isinstance(data, RunData):
        data.prepare()
    atomic_write(out / "config.json", json.dumps(run_info, indent=2))
    return _Run(reader=reader, out=out, cfg=cfg, spec=spec, candidates=candidates, layer_names=layer_names,
                class_ids={c: i for i, c in enumerate(classes)}, plan=plan, used_folds=used_folds,
                warnings=data_warnings, data=data, ckpt=ckpt, log=RunLog(out / "log.jsonl", board), progress=progress)


def _choose_layer(run: _Run) -> tuple[dict[str, LayerSelection], dict[str, _Trained], LayerChoice | None]:
    """The selection whose model is scored on each test fold, the models already trained for them
    (fold -> _Trained), and how they were chosen. A fusion not chosen on validation has one
    candidate and trains nothing here.

    Chosen on validation only: every candidate trains on every fold, and each test fold takes the
    candidate with the best best-epoch validation UAR on its own validation part (ties: the
    earlier layer; why per fold: choose_on_validation). The test parts are read only afterwards,
    for each fold's chosen layer's model."""
    if not run.spec.chosen_on_validation:
        (selection,) = run.candidates
        return {p[0]: selection for p in run.plan}, {}, None
    kept: dict[str, tuple[LayerSelection, _Trained]] = {}
    val_uar: dict[str, dict[str, float]] = {}
    for sel in run.candidates:
        name = sel.names[0]
        trained = {test_fold: run.train_fold(sel, train_idx, val_idx, {"layer": name, "fold": test_fold})
                   for test_fold, train_idx, val_idx, _ in run.plan}
        val_uar[name] = {fold: t[1] for fold, t in trained.items()}
        leaders = choose_on_validation(val_uar).best_layer_folds
        # only each fold's leader's model stays in memory
        kept.update({fold: (sel, t) for fold, t in trained.items() if leaders[fold] == name})
    return ({fold: sel for fold, (sel, _) in kept.items()}, {fold: t for fold, (_, t) in kept.items()},
            choose_on_validation(val_uar))


def _train_and_test_folds(run: _Run, selections: dict[str, LayerSelection],
                          trained: dict[str, _Trained]) -> dict[str, FoldMetrics]:
    """Score each fold's model on its test part, training it first unless _choose_layer did."""
    per_fold: dict[str, FoldMetrics] = {}
    for test_fold, train_idx, val_idx, test_idx in run.plan:
        selection = selections[test_fold]
        # One fold's model in memory at a time, unless the layer choice trained them all already.
        if test_fold in trained:
            model, best_val, best_epoch = trained.pop(test_fold)
        else:
            model, best_val, best_epoch = run.train_fold(selection, train_idx, val_idx, {"fold": test_fold})
        per_fold[test_fold] = _test_fold(model, run.data, selection, run.class_ids, run.cfg, test_fold, test_idx,
                                         best_val, best_epoch, len(train_idx), len(val_idx))
    return per_fold


def _run_metrics(run: _Run, per_fold: dict[str, FoldMetrics], choice: LayerChoice | None,
                 seconds: float) -> RunMetrics:
    summary = summarize_folds({fold: m.to_dict() for fold, m in per_fold.items()})
    return RunMetrics(**summary, folds=per_fold, classes=run.reader.classes, layers=run.layer_names,
                      fusion=run.cfg.fusion, layer_choice=choice, epochs=run.cfg.epochs, seed=run.cfg.seed,
                      validation=resolve_validation(run.cfg.validation, run.reader.meta.corpus.protocol),
                      cache_identity=run.reader.identity_hash, seconds=seconds,
                      left_out=_left_out(run), warnings=run.warnings,
                      data=run.data.describe())


def _left_out(run: _Run) -> dict[str, int]:
    """Entries of the manifest that are not in these numbers (--allow-missing): pipeline.folds.left_out."""
    return left_out(run.reader, run.used_folds)


def _write_metrics(path: Path, metrics: RunMetrics) -> None:
    """Atomically: a run killed while writing leaves no partial metrics.json."""
    atomic_write(path, json.dumps(metrics.to_dict(), indent=2))


def _claim_run_dir(out: Path, run_info: dict[str, Any], ckpt: RunCheckpoints) -> None:
    """A run dir holds one run: resuming it (checkpoints) or redoing it (finished: metrics.json, no
    checkpoints) needs the same result settings and data; anything else is refused, so a rerun
    with a forgotten --out never replaces finished results. A dir with neither (new, or a start
    killed before its first checkpoint) has nothing to lose."""
    has_ckpt, has_metrics = ckpt.dir.exists(), (out / "metrics.json").exists()
    if not (has_ckpt or has_metrics) or (has_ckpt and not (out / "config.json").exists()):
        return  # nothing to lose; or checkpoints alone, each refused under another fold/layer key (RunCheckpoints)
    held, what = (("checkpoints", ckpt.dir) if has_ckpt
                  else ("the finished results (metrics.json)", out / "metrics.json"))
    try:
        old = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        raise NserError(f"{out} holds {held} but no readable config.json, so which run they are of is unknown; "
                        f"use another --out or delete {what}") from None

    def result_config(info: dict[str, Any]) -> dict[str, Any]:
        # the utterances too: a cache's identity stays while an extraction appends to it
        cache = info["cache"]
        return {"config": result_settings(info["config"]), "cache": cache["identity_hash"],
                "utterances": (cache["n_utterances"], cache.get("partial"))}

    if result_config(old) != result_config(run_info):
        old_cfg, new_cfg = result_config(old)["config"], result_config(run_info)["config"]
        differ = sorted(k for k in old_cfg.keys() | new_cfg.keys() if old_cfg.get(k) != new_cfg.get(k))
        if old["cache"]["identity_hash"] != run_info["cache"]["identity_hash"]:
            differ.append("cache identity")
        elif result_config(old)["utterances"] != result_config(run_info)["utterances"]:
            differ.append(f"cached utterances: {old['cache']['n_utterances']} then, {run_info['cache']['n_utterances']} now")
        raise NserError(f"{out} holds {held} of a run with other settings ({', '.join(differ)}); use another "
                        f"--out or delete {what}")
    if not has_ckpt:
        return  # the same run redone from its start: its data mode may differ
    before, now = old.get("data_mode", "per-utterance"), run_info["data_mode"]
    if {before, now} == {"memory", "stream"}:  # per-utterance and memory give the same batches
        raise NserError(f"{out} holds checkpoints of a run whose states were {'in memory' if before == 'memory' else 'streamed'}"
                        f", but now they are {'in memory' if now == 'memory' else 'streamed'} (--memory-budget "
                        f"{run_info['config']['memory_budget'] or 'default'}); streamed batches differ, so resume with a "
                        f"memory budget that gives the same mode, use another --out, or delete {ckpt.dir}")


def format_metrics_table(metrics: dict[str, Any]) -> str:
    lines = ["| fold | n test | best epoch | UAR | macro-F1 |", "|---|---|---|---|---|"]
    for fold, m in metrics["folds"].items():
        lines.append(f"| {fold} | {m['n']} | {m['best_epoch']} | {m['uar']:.4f} | {m['macro_f1']:.4f} |")
    lines.append(f"| mean ± std | | | {metrics['uar']:.4f} ± {metrics['uar_std']:.4f} | "
                 f"{metrics['macro_f1']:.4f} ± {metrics['macro_f1_std']:.4f} |")
    for w in metrics.get("warnings", []):
        lines.append(f"\nwarning: {w}")
    failed = {f: n for f, n in metrics.get("left_out", {}).items() if f != NOT_EXTRACTED}
    if failed:
        lines.append("\nleft out (failed extraction, --allow-missing): "
                     + ", ".join(f"fold {f}: {n}" for f, n in failed.items()))
    if metrics.get("left_out", {}).get(NOT_EXTRACTED):
        lines.append(f"\nleft out (never extracted, --allow-missing): {metrics['left_out'][NOT_EXTRACTED]} "
                     "manifest entries of an unfinished cache")
    if metrics.get("best_layer_folds"):
        lines.append("\nbest layer by each test fold's validation UAR: " + ", ".join(
            f"fold {f}: {name} ({metrics['layer_val_uar_folds'][name][f]:.4f})"
            for f, name in metrics["best_layer_folds"].items()))
    elif "best_layer" in metrics:  # runs from before the choice was per fold
        lines.append(f"\nbest layer by mean validation UAR: {metrics['best_layer']} "
                     f"({metrics['layer_val_uar'][metrics['best_layer']]:.4f})")
    return "\n".join(lines)
