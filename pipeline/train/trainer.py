"""Cross-validated training of a fusion model on a cache; writes config, per-epoch log and metrics.

Per test fold, a validation part is carved from the training folds (the next fold in order, so it
stays speaker-independent) and picks the epoch; the test fold is only scored once, at the end.
`--fusion best` trains a single-layer model per selected layer on the same folds, picks the layer
by mean validation UAR, and only then scores that layer's models on the test folds.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError
from pipeline.train.dataset import CachedLayerDataset, make_collate
from pipeline.layers import LayerSelection
from pipeline.train.fusion import build_fusion, resolve_layers
from pipeline.train.metrics import classification_metrics, summarize_folds
from pipeline.version import code_version


@dataclass
class TrainConfig:
    fusion: str = "l-adapter"
    layers: str = "enc:all,dec:all"
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-4
    dropout: float = 0.5
    hidden: int = 256
    seed: int = 0
    folds: str = "all"  # comma-separated test folds to run, or all
    device: str = "cpu"
    threads: int = 0  # torch CPU threads; 0 = torch's default


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fold_plan(reader: CacheReader) -> list[tuple[str, list[int], list[int], list[int]]]:
    """(test fold, train indices, validation indices, test indices) for each fold."""
    folds = np.array([str(f) for f in reader.table["fold"]])
    protocol = reader.attrs["corpus"]["protocol"]
    if protocol == "split":
        idx = {name: np.flatnonzero(folds == name).tolist() for name in ("train", "dev", "test")}
        if not idx["train"] or not idx["test"]:
            raise NserError("a split-protocol cache needs 'train' and 'test' utterances")
        return [("test", idx["train"], idx["dev"] or idx["train"][-len(idx["train"]) // 10:], idx["test"])]
    names = sorted(set(folds), key=lambda s: (len(s), s))
    if len(names) < 3:
        raise NserError(f"cross-validation needs at least 3 folds (test, validation, train); cache has {names}")
    plan = []
    for k, test in enumerate(names):
        val = names[(k + 1) % len(names)]
        train = [i for i, f in enumerate(folds) if f not in (test, val)]
        plan.append((test, train, np.flatnonzero(folds == val).tolist(), np.flatnonzero(folds == test).tolist()))
    return plan


def _evaluate(model: torch.nn.Module, loader: DataLoader, device: str) -> tuple[list[int], list[int]]:
    model.eval()
    y_true, y_pred = [], []
    with torch.no_grad():
        for batch in loader:
            logits = model([x.to(device) for x in batch["layers"]], batch["lengths"])
            y_pred += logits.argmax(dim=1).tolist()
            y_true += batch["labels"].tolist()
    return y_true, y_pred


def _loader(reader: CacheReader, indices: list[int], selection: LayerSelection, class_ids: dict[str, int],
            cfg: TrainConfig, generator: torch.Generator | None = None) -> DataLoader:
    """Shuffled (reproducibly) exactly when a generator is given: the training part."""
    return DataLoader(CachedLayerDataset(reader, indices, selection, class_ids), batch_size=cfg.batch_size,
                      shuffle=generator is not None, generator=generator,
                      collate_fn=make_collate(len(selection.encoder)))


def _train_fold(reader: CacheReader, selection: LayerSelection, class_ids: dict[str, int], cfg: TrainConfig,
                train_idx: list[int], val_idx: list[int], log: TextIO, tag: dict[str, Any],
                progress: bool) -> tuple[torch.nn.Module, float, int]:
    """Train on one fold's training part; return the model at the epoch with the best validation UAR,
    that UAR and the epoch. Never sees the test part."""
    seed_everything(cfg.seed)
    model = build_fusion(cfg.fusion, n_layers=len(selection), d_in=reader.d_model, n_classes=len(class_ids),
                         hidden=cfg.hidden, dropout=cfg.dropout, n_encoder=len(selection.encoder),
                         n_decoder=len(selection.decoder)).to(cfg.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = _loader(reader, train_idx, selection, class_ids, cfg, generator=gen)
    val_loader = _loader(reader, val_idx, selection, class_ids, cfg)
    best = (-1.0, -1, None)
    desc = " ".join(f"{k} {v}" for k, v in tag.items())
    for epoch in tqdm(range(1, cfg.epochs + 1), desc=desc, disable=not progress):
        t0 = time.perf_counter()
        model.train()
        losses = []
        for batch in train_loader:
            logits = model([x.to(cfg.device) for x in batch["layers"]], batch["lengths"])
            loss = torch.nn.functional.cross_entropy(logits, batch["labels"].to(cfg.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        t_train = time.perf_counter() - t0
        val = classification_metrics(*_evaluate(model, val_loader, cfg.device), len(class_ids))
        if val["uar"] > best[0]:
            best = (val["uar"], epoch, copy.deepcopy(model.state_dict()))
        entry = {**tag, "epoch": epoch, "train_loss": float(np.mean(losses)),
                 "val_uar": val["uar"], "val_macro_f1": val["macro_f1"], "train_seconds": t_train,
                 "epoch_seconds": time.perf_counter() - t0}
        log.write(json.dumps(entry) + "\n")
        log.flush()
    model.load_state_dict(best[2])
    model.zero_grad(set_to_none=True)  # `best` holds a fold's models a while; drop their gradients
    return model, best[0], best[1]


def _test_fold(model: torch.nn.Module, reader: CacheReader, selection: LayerSelection, class_ids: dict[str, int],
               cfg: TrainConfig, test_idx: list[int], best_val: float, best_epoch: int, n_train: int,
               n_val: int) -> dict[str, Any]:
    test = classification_metrics(*_evaluate(model, _loader(reader, test_idx, selection, class_ids, cfg),
                                             cfg.device), len(class_ids))
    test.update(best_epoch=best_epoch, val_uar=best_val, n_train=n_train, n_val=n_val)
    if hasattr(model, "layer_weights"):
        test["layer_weights"] = dict(zip(selection.names, model.layer_weights().detach().tolist()))
    return test


def train_on_cache(cache: str | Path | CacheReader, out_dir: str | Path, cfg: TrainConfig,
                   progress: bool = True) -> dict[str, Any]:
    reader = cache if isinstance(cache, CacheReader) else CacheReader(cache)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    requested = reader.selection(cfg.layers)
    candidates = resolve_layers(cfg.fusion, requested, reader.n_encoder_states, reader.n_decoder_states)
    layer_names = [n for sel in candidates for n in sel.names]
    classes = reader.classes
    class_ids = {c: i for i, c in enumerate(classes)}
    present = set(map(str, reader.table["label"]))
    if present - set(classes):
        raise NserError(f"cache labels {sorted(present - set(classes))} are not in its class list {classes}")
    plan = fold_plan(reader)
    if cfg.folds != "all":
        wanted = set(cfg.folds.split(","))
        plan = [p for p in plan if p[0] in wanted]
        if not plan:
            raise NserError(f"--folds {cfg.folds} matches none of the cache's folds")
    run_info = {"config": asdict(cfg), "seed": cfg.seed, "code_version": code_version(),
                "cache": {"path": str(reader.path), "identity_hash": reader.identity_hash,
                          "identity": reader.attrs["identity"], "n_utterances": reader.n},
                "layers": layer_names, "classes": classes, "torch": torch.__version__}
    (out / "config.json").write_text(json.dumps(run_info, indent=2))
    log = (out / "log.jsonl").open("w")
    t_run = time.perf_counter()
    extra: dict[str, Any] = {}
    trained: dict[str, tuple[torch.nn.Module, float, int]] = {}
    if cfg.fusion == "best":
        # Choose on validation only: every candidate trains on every fold, the mean best-epoch
        # validation UAR ranks them (ties: the earlier layer), and the test parts are read only
        # afterwards, for the chosen layer's models.
        chosen: tuple[float, LayerSelection, dict] = (-1.0, candidates[0], {})
        val_uar: dict[str, dict[str, float]] = {}
        for sel in candidates:
            name = sel.names[0]
            trained = {}
            for test_fold, train_idx, val_idx, _ in plan:
                trained[test_fold] = _train_fold(reader, sel, class_ids, cfg, train_idx, val_idx, log,
                                                 {"layer": name, "fold": test_fold}, progress)
            val_uar[name] = {fold: t[1] for fold, t in trained.items()}
            score = float(np.mean(list(val_uar[name].values())))
            if score > chosen[0]:
                chosen = (score, sel, trained)
        _, selection, trained = chosen
        extra = {"best_layer": selection.names[0],
                 "layer_val_uar": {n: float(np.mean(list(v.values()))) for n, v in val_uar.items()},
                 "layer_val_uar_folds": val_uar}
    else:
        (selection,) = candidates
    per_fold: dict[str, dict] = {}
    for test_fold, train_idx, val_idx, test_idx in plan:
        # Other fusions train here, one fold's model in memory at a time; `best` trained its above.
        if test_fold in trained:
            model, best_val, best_epoch = trained.pop(test_fold)
        else:
            model, best_val, best_epoch = _train_fold(reader, selection, class_ids, cfg, train_idx, val_idx,
                                                      log, {"fold": test_fold}, progress)
        per_fold[test_fold] = _test_fold(model, reader, selection, class_ids, cfg, test_idx, best_val,
                                         best_epoch, len(train_idx), len(val_idx))
    log.close()
    metrics = {**summarize_folds(per_fold), "folds": per_fold, "classes": classes,
               "layers": layer_names, "fusion": cfg.fusion, **extra, "epochs": cfg.epochs, "seed": cfg.seed,
               "cache_identity": reader.identity_hash, "seconds": time.perf_counter() - t_run}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def format_metrics_table(metrics: dict[str, Any]) -> str:
    lines = ["| fold | n test | best epoch | UAR | macro-F1 |", "|---|---|---|---|---|"]
    for fold, m in metrics["folds"].items():
        lines.append(f"| {fold} | {m['n']} | {m['best_epoch']} | {m['uar']:.4f} | {m['macro_f1']:.4f} |")
    lines.append(f"| mean ± std | | | {metrics['uar']:.4f} ± {metrics['uar_std']:.4f} | "
                 f"{metrics['macro_f1']:.4f} ± {metrics['macro_f1_std']:.4f} |")
    if "best_layer" in metrics:
        lines.append(f"\nbest layer by mean validation UAR: {metrics['best_layer']} "
                     f"({metrics['layer_val_uar'][metrics['best_layer']]:.4f})")
    return "\n".join(lines)
