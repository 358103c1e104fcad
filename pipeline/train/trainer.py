"""Cross-validated training of a fusion model on a cache; writes config, per-epoch log and metrics.

Per test fold, a validation part is carved from the training folds (the next fold in order, so it
stays speaker-independent) and picks the epoch; the test fold is only scored once, at the end.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.cache.reader import CacheReader
from pipeline.errors import NserError
from pipeline.train.dataset import CachedLayerDataset, make_collate
from pipeline.train.fusion import build_fusion
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


def train_on_cache(cache: str | Path | CacheReader, out_dir: str | Path, cfg: TrainConfig,
                   progress: bool = True) -> dict[str, Any]:
    reader = cache if isinstance(cache, CacheReader) else CacheReader(cache)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    selection = reader.selection(cfg.layers)
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
                "layers": selection.names, "classes": classes, "torch": torch.__version__}
    (out / "config.json").write_text(json.dumps(run_info, indent=2))
    log = (out / "log.jsonl").open("w")
    collate = make_collate(len(selection.encoder))
    per_fold: dict[str, dict] = {}
    t_run = time.perf_counter()
    for test_fold, train_idx, val_idx, test_idx in plan:
        seed_everything(cfg.seed)
        model = build_fusion(cfg.fusion, n_layers=len(selection), d_in=reader.d_model, n_classes=len(classes),
                             hidden=cfg.hidden, dropout=cfg.dropout).to(cfg.device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        train_loader = DataLoader(CachedLayerDataset(reader, train_idx, selection, class_ids),
                                  batch_size=cfg.batch_size, shuffle=True, generator=gen, collate_fn=collate)
        val_loader = DataLoader(CachedLayerDataset(reader, val_idx, selection, class_ids),
                                batch_size=cfg.batch_size, collate_fn=collate)
        test_loader = DataLoader(CachedLayerDataset(reader, test_idx, selection, class_ids),
                                 batch_size=cfg.batch_size, collate_fn=collate)
        best = (-1.0, -1, None)
        for epoch in tqdm(range(1, cfg.epochs + 1), desc=f"fold {test_fold}", disable=not progress):
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
            val = classification_metrics(*_evaluate(model, val_loader, cfg.device), len(classes))
            if val["uar"] > best[0]:
                best = (val["uar"], epoch, copy.deepcopy(model.state_dict()))
            entry = {"fold": test_fold, "epoch": epoch, "train_loss": float(np.mean(losses)),
                     "val_uar": val["uar"], "val_macro_f1": val["macro_f1"], "train_seconds": t_train,
                     "epoch_seconds": time.perf_counter() - t0}
            log.write(json.dumps(entry) + "\n")
            log.flush()
        model.load_state_dict(best[2])
        test = classification_metrics(*_evaluate(model, test_loader, cfg.device), len(classes))
        test.update(best_epoch=best[1], val_uar=best[0], n_train=len(train_idx), n_val=len(val_idx))
        if hasattr(model, "layer_weights"):
            test["layer_weights"] = dict(zip(selection.names, model.layer_weights().detach().tolist()))
        per_fold[test_fold] = test
    log.close()
    metrics = {**summarize_folds(per_fold), "folds": per_fold, "classes": classes,
               "layers": selection.names, "fusion": cfg.fusion, "epochs": cfg.epochs, "seed": cfg.seed,
               "cache_identity": reader.identity_hash, "seconds": time.perf_counter() - t_run}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def format_metrics_table(metrics: dict[str, Any]) -> str:
    lines = ["| fold | n test | best epoch | UAR | macro-F1 |", "|---|---|---|---|---|"]
    for fold, m in metrics["folds"].items():
        lines.append(f"| {fold} | {m['n']} | {m['best_epoch']} | {m['uar']:.4f} | {m['macro_f1']:.4f} |")
    lines.append(f"| mean ± std | | | {metrics['uar']:.4f} ± {metrics['uar_std']:.4f} | "
                 f"{metrics['macro_f1']:.4f} ± {metrics['macro_f1_std']:.4f} |")
    return "\n".join(lines)
