"""Where one layer-adapter epoch's time goes: batches (reading + collate) vs model (forward, backward, Adam).

    python bench/epoch_profile.py CACHE THREADS

Fold 0's training part, enc:all,dec:all, batch 32; batches per-utterance and read once, then the
model over the read-once batches (the same batches)."""
import sys, time, torch
from pipeline.cache.reader import CacheReader
from pipeline.folds import fold_plan
from pipeline.train.dataset import PerUtteranceData
from pipeline.train.resident import RunData
from pipeline.train.fusion import build_fusion
torch.set_num_threads(int(sys.argv[2]))
r = CacheReader(sys.argv[1]); sel = r.selection("enc:all,dec:all")
_, tr, va, te = fold_plan(r)[0]
ids = {c: i for i, c in enumerate(r.classes)}
t = time.perf_counter(); data = RunData(r, [sel], tr + va + te, 2**40).prepare(); t_load = time.perf_counter() - t
for name, src in (("per-utterance", PerUtteranceData(r)), ("read once", data)):
    t = time.perf_counter(); batches = list(src.loader(tr, sel, ids, 32, "p", torch.Generator().manual_seed(0))); tb = time.perf_counter() - t
    print(f"{name}: batches of the training part ({len(tr)} utts): {tb:.2f} s")
print(f"read once: one-time read of {data.nbytes/2**20:.0f} MiB: {t_load:.2f} s")
torch.manual_seed(0)
m = build_fusion("l-adapter", n_layers=14, d_in=r.d_model, n_classes=len(ids), hidden=256, dropout=0.5)
opt = torch.optim.Adam(m.parameters(), 1e-4)
T = dict(fwd=0.0, bwd=0.0, adam=0.0)
for b in batches:
    t0 = time.perf_counter(); loss = torch.nn.functional.cross_entropy(m(b["layers"], b["lengths"]), b["labels"]); t1 = time.perf_counter()
    opt.zero_grad(); loss.backward(); t2 = time.perf_counter(); opt.step(); t3 = time.perf_counter()
    T["fwd"] += t1 - t0; T["bwd"] += t2 - t1; T["adam"] += t3 - t2
print("model over the epoch:", ", ".join(f"{k} {v:.2f} s" for k, v in T.items()))
