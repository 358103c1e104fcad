"""Seconds per training epoch on one cache and fold: the naive loop, per-utterance streaming, read once.

    python bench/train.py --cache CACHE [--data-root AUDIO] [--fold 0] [--threads 2] [--naive-batches N]

(a) naive: what users write without a cache (s3prl style): every batch of every epoch loads and
    noises its audio and runs the frozen Whisper with output_hidden_states, then the adapter step;
(b) streaming: nser-train before the states were read once, every utterance's layers read from the
    cache every epoch (`train_on_cache(per_utterance=True)`);
(c) read once: today's nser-train (states read once into memory, float16, pipeline/train/resident.py).

An epoch here is one pass over the fold's training part (forward, backward, Adam step), the
number the ratios use; (b) and (c) also print the whole epoch with validation, and (c) the one-time
read. Each model runs for the layer adapter over enc:all,dec:all and for the single last encoder
layer. The last lines are `speed-up vs streaming: N.Nx` (b/c) and `speed-up vs naive: N.Nx` (a/c),
both for the layer adapter.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from pipeline.cache.reader import CacheReader
from pipeline.folds import fold_plan, select_folds
from pipeline.train.fusion import build_fusion
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import seed_everything, train_on_cache


def cached_epochs(reader: CacheReader, cfg: TrainConfig, per_utterance: bool) -> dict[str, float]:
    """Train `cfg.epochs` epochs of one fold; the last epoch's times. The one-time read of (c) happens
    before the first epoch and is reported on its own, not in the epoch."""
    with tempfile.TemporaryDirectory() as out:
        metrics = train_on_cache(reader, out, cfg, progress=False, per_utterance=per_utterance)
        log = [json.loads(x) for x in (Path(out) / "log.jsonl").read_text().splitlines()]
    return {"train": log[-1]["train_seconds"], "epoch": log[-1]["epoch_seconds"],
            "read": metrics["data"].get("read_seconds", 0.0), "uar": metrics["uar"]}


def naive_epoch(reader: CacheReader, cfg: TrainConfig, fold: str, data_root: str,
                max_batches: int | None) -> tuple[float, int]:
    """One epoch of the training part the naive way; returns (seconds, batches run). Encoder-only
    selections skip the decoder, as a user would."""
    from pipeline.audio import load_audio
    from pipeline.corpora.manifest import read_corpus
    from pipeline.extract.whisper_layers import n_encoder_frames
    from pipeline.models.loader import load_whisper
    from pipeline.noise import NoiseBank

    meta = reader.meta
    sel = reader.selection(cfg.layers)
    corpus_name = meta.corpus.name
    by_id = {u.utt_id: u for u in read_corpus(corpus_name, data_root).utterances}
    cond = meta.condition
    bank = NoiseBank(cond.noise_folder, seed=int(cond.seed)) if cond.noise_folder else None
    whisper = load_whisper(meta.model.name)
    model_w, fe = whisper.model.eval(), whisper.processor.feature_extractor
    eot = whisper.processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    (_, train_idx, _, _), = select_folds(fold_plan(reader), fold)
    classes = {c: i for i, c in enumerate(reader.classes)}
    seed_everything(cfg.seed)
    model = build_fusion(cfg.fusion, n_layers=len(sel), d_in=reader.d_model, n_classes=len(classes),
                         hidden=cfg.hidden, dropout=cfg.dropout, n_encoder=len(sel.encoder), n_decoder=len(sel.decoder))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    order = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    batches = [[train_idx[k] for k in order[i:i + cfg.batch_size]] for i in range(0, len(order), cfg.batch_size)]
    batches = batches[:max_batches] if max_batches else batches
    t0 = time.perf_counter()
    for batch in batches:
        utts = [by_id[str(reader.table["utt_id"][i])] for i in batch]
        audios = []
        for u in utts:
            samples = load_audio(u.path, start=u.start, end=u.end).samples
            audios.append(bank.mix(samples, u.utt_id, float(cond.snr_db)).samples if bank else samples)
        feats = fe(audios, sampling_rate=16000, return_tensors="pt").input_features
        frames = [n_encoder_frames(len(a)) for a in audios]
        with torch.no_grad():
            if sel.decoder:
                toks = [reader.tokens(i).tolist() for i in batch]
                ids = torch.tensor([t + [eot] * (max(map(len, toks)) - len(t)) for t in toks])
                out = model_w.model(input_features=feats, decoder_input_ids=ids, output_hidden_states=True)
                enc_states, dec_states = out.encoder_hidden_states, out.decoder_hidden_states
            else:
                enc_states = model_w.model.encoder(feats, output_hidden_states=True).hidden_states
                toks, dec_states = [], ()
        layers, lengths = [], []
        for j in sel.encoder:  # each utterance's own frames, zero-padded to the batch's longest
            x = torch.zeros(len(batch), max(frames), reader.d_model)
            for b, n in enumerate(frames):
                x[b, :n] = enc_states[j][b, :n]
            layers.append(x)
            lengths.append(torch.tensor(frames))
        for j in sel.decoder:
            n_tok = [len(t) for t in toks]
            x = torch.zeros(len(batch), max(n_tok), reader.d_model)
            for b, n in enumerate(n_tok):
                x[b, :n] = dec_states[j][b, :n]
            layers.append(x)
            lengths.append(torch.tensor(n_tok))
        model.train()
        labels = torch.tensor([classes[str(reader.table["label"][i])] for i in batch])
        loss = torch.nn.functional.cross_entropy(model(layers, lengths), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0, len(batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--data-root", help="the corpus audio, for (a) (default: ../shared/data/<corpus>)")
    ap.add_argument("--fold", default=None, help="test fold (default: the first)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--naive-batches", type=int, default=0,
                    help="time only the first N naive batches and scale to the epoch (0: the whole epoch)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of (b) and (c); the last one is timed")
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reader = CacheReader(args.cache)
    plan = fold_plan(reader)
    fold = args.fold or plan[0][0]
    (_, train_idx, val_idx, _), = select_folds(plan, fold)
    last_enc = f"enc:{reader.n_encoder_states - 1}"
    print(f"cache {args.cache}: {reader.n} utterances, model {reader.meta.model.name}; fold {fold}: "
          f"{len(train_idx)} train + {len(val_idx)} val; batch {args.batch_size}; torch threads "
          f"{torch.get_num_threads()}")
    ratios: dict[str, dict[str, float]] = {}
    for fusion, layers in (("l-adapter", "enc:all,dec:all"), ("single", last_enc)):
        cfg = TrainConfig(fusion=fusion, layers=layers, epochs=args.epochs, folds=fold, batch_size=args.batch_size,
                          threads=args.threads)
        name = f"{fusion} {layers}"
        c = cached_epochs(reader, cfg, per_utterance=False)
        print(f"{name}: (c) read once:  {c['train']:.2f} s/epoch (train part); {c['epoch']:.2f} s with "
              f"validation; one-time read {c['read']:.2f} s")
        b = cached_epochs(reader, cfg, per_utterance=True)
        print(f"{name}: (b) streaming:  {b['train']:.2f} s/epoch (train part); {b['epoch']:.2f} s with validation")
        ratios[fusion] = {"streaming": b["train"] / c["train"]}
        if not args.skip_naive:
            root = args.data_root or str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                         / reader.meta.corpus.name)
            seconds, n = naive_epoch(reader, cfg, fold, root, args.naive_batches or None)
            n_all = -(-len(train_idx) // args.batch_size)
            a = seconds * n_all / n
            note = f" ({n} of {n_all} batches timed, scaled)" if n < n_all else ""
            print(f"{name}: (a) naive:      {a:.2f} s/epoch (train part){note}")
            ratios[fusion]["naive"] = a / c["train"]
        print(f"{name}: speed-up vs streaming {ratios[fusion]['streaming']:.1f}x"
              + (f", vs naive {ratios[fusion]['naive']:.1f}x" if "naive" in ratios[fusion] else ""))
    print(f"speed-up vs streaming: {ratios['l-adapter']['streaming']:.1f}x")
    if "naive" in ratios["l-adapter"]:
        print(f"speed-up vs naive: {ratios['l-adapter']['naive']:.1f}x")


if __name__ == "__main__":
    main()
