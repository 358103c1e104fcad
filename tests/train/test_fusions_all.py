"""Every fusion of the paper's Table IV: shapes, gradients, padding, stack handling, and `best` choosing
on validation only (on a tiny fake cache written with CacheWriter)."""

from __future__ import annotations

import pytest
import torch

from pipeline.cache.reader import CacheReader
from pipeline.cache.writer import CacheLayout
from pipeline.errors import LayerSelectionError
from pipeline.layers import LayerSelection
from pipeline.train import trainer
from pipeline.train.config import TrainConfig
from pipeline.train.fusion import FUSIONS, build_fusion
from pipeline.train.fusion_specs import resolve_layers
from tests.helpers import Signal, row, write_cache

D, HIDDEN, N_CLASSES = 12, 6, 3
MULTI = ["mean", "attention", "scalar-mix", "weighted-sum", "l-adapter"]
SINGLE = ["single", "last", "best"]
WEIGHTED = {"scalar-mix", "weighted-sum", "l-adapter"}


def make(name: str, n_encoder: int, n_decoder: int = 0, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_fusion(name, n_layers=n_encoder + n_decoder, d_in=D, n_classes=N_CLASSES, hidden=HIDDEN,
                        n_encoder=n_encoder, n_decoder=n_decoder, **kw)


def batch(n_encoder: int, n_decoder: int = 0, t_enc: int = 9, t_dec: int = 4, seed: int = 1):
    """Encoder layers share [B, t_enc], decoder layers [B, t_dec]; the second utterance is shorter."""
    g = torch.Generator().manual_seed(seed)
    enc_len, dec_len = torch.tensor([t_enc, t_enc - 4]), torch.tensor([t_dec, t_dec - 2])
    layers = ([torch.randn(2, t_enc, D, generator=g) * (i + 1) for i in range(n_encoder)]
              + [torch.randn(2, t_dec, D, generator=g) for _ in range(n_decoder)])
    lengths = [enc_len] * n_encoder + [dec_len] * n_decoder
    for x, n in zip(layers, lengths):  # collate pads with zeros
        x[1, n[1]:] = 0
    return layers, lengths


def fusion_cases():
    for name in MULTI:
        yield name, 3, 0
        yield name, 2, 3
        yield name, 0, 2
    for name in SINGLE:
        yield name, 1, 0
        yield name, 0, 1


def test_registry_lists_every_method_of_the_paper():
    assert set(FUSIONS) == {"single", "last", "best", "mean", "attention", "scalar-mix", "weighted-sum",
                            "l-adapter", "fc", "mean-fc"}  # the last two: the baseline heads of Table II


@pytest.mark.parametrize("name,n_enc,n_dec", list(fusion_cases()))
def test_shapes_gradients_and_layer_weights(name, n_enc, n_dec):
    model = make(name, n_enc, n_dec)
    layers, lengths = batch(n_enc, n_dec)
    logits = model(layers, lengths)
    assert logits.shape == (2, N_CLASSES)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    grus = [m for m in model.modules() if isinstance(m, torch.nn.GRU)]
    assert grus and all(g.weight_ih_l0.grad.abs().sum() > 0 for g in grus)
    classifier = model.classifier
    assert classifier.weight.grad.abs().sum() > 0
    fusion_params = [p for n, p in model.named_parameters() if n.startswith("mixers.") or n == "layer_logits"]
    if n_enc + n_dec > 1 and name in ("attention", "scalar-mix", "weighted-sum", "l-adapter"):
        assert fusion_params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion_params)
    if name in ("mean", *SINGLE):
        assert fusion_params == []
    assert hasattr(model, "layer_weights") == (name in WEIGHTED)
    if name in WEIGHTED:
        w = model.layer_weights().detach()
        assert w.shape == (n_enc + n_dec,)
        if name != "l-adapter":  # one softmax per stack
            stacks = [s for s in (w[:n_enc], w[n_enc:]) if len(s)]
            assert all(abs(float(s.sum()) - 1) < 1e-6 for s in stacks)


@pytest.mark.parametrize("name,n_enc,n_dec", list(fusion_cases()))
def test_padded_frames_are_masked(name, n_enc, n_dec):
    model = make(name, n_enc, n_dec).eval()
    layers, lengths = batch(n_enc, n_dec)
    base = model(layers, lengths)
    noisy = [x.clone() for x in layers]
    for x, n in zip(noisy, lengths):
        x[1, n[1]:] = 1e3 * torch.randn_like(x[1, n[1]:])
    assert torch.allclose(base, model(noisy, lengths), atol=1e-5)
    alone = model([x[1:2, :n[1]] for x, n in zip(layers, lengths)], [n[1:2] for n in lengths])
    assert torch.allclose(base[1], alone[0], atol=1e-5)


def test_single_needs_exactly_one_layer():
    with pytest.raises(LayerSelectionError, match="exactly one layer"):
        make("single", 2)
    with pytest.raises(LayerSelectionError, match="exactly one layer"):
        resolve_layers("single", LayerSelection((3, 4), ()), 7, 7)


def test_single_is_one_layer_adapter_and_untrained_mixers_equal_the_mean():
    """Same head, same initialization: `single` is a one-layer l-adapter, and weighted-sum, attention
    and scalar-mix (without its layer norm) start exactly at `mean`, so only the fusion differs."""
    layers, lengths = batch(1)
    single, adapter = make("single", 1).eval(), make("l-adapter", 1).eval()
    assert torch.allclose(single(layers, lengths), adapter(layers, lengths), atol=1e-6)
    layers, lengths = batch(2, 2)
    mean = make("mean", 2, 2).eval()(layers, lengths)
    for name, kw in (("weighted-sum", {}), ("attention", {}), ("scalar-mix", {"layer_norm": False})):
        assert torch.allclose(mean, make(name, 2, 2, **kw).eval()(layers, lengths), atol=1e-5), name


def test_mean_is_single_on_the_averaged_layer():
    layers, lengths = batch(3)
    avg = torch.stack(layers).mean(dim=0)
    assert torch.allclose(make("mean", 3).eval()(layers, lengths), make("single", 1).eval()([avg], lengths[:1]),
                          atol=1e-6)


def test_scalar_mix_layer_norm_removes_layer_scale():
    """With the default per-frame layer norm, scaling one layer by 100 does not change the output."""
    model = make("scalar-mix", 2).eval()
    layers, lengths = batch(2)
    scaled = [layers[0] * 100, layers[1]]
    assert torch.allclose(model(layers, lengths), model(scaled, lengths), atol=1e-4)
    raw = make("scalar-mix", 2, layer_norm=False).eval()
    assert not torch.allclose(raw(layers, lengths), raw(scaled, lengths), atol=1e-4)


def test_layers_of_one_stack_must_share_the_time_axis():
    layers, lengths = batch(2, 1)
    with pytest.raises(ValueError, match="share a time axis"):
        make("mean", 3)(layers, lengths)  # told all three are encoder layers: T=9, 9, 4


def test_resolve_layers():
    enc_all, dec_all = LayerSelection(tuple(range(7)), ()), LayerSelection((), tuple(range(7)))
    assert resolve_layers("last", enc_all, 7, 7) == [LayerSelection((6,), ())]
    assert resolve_layers("last", dec_all, 7, 7) == [LayerSelection((), (6,))]
    assert resolve_layers("last", LayerSelection((6,), ()), 7, 7) == [LayerSelection((6,), ())]
    with pytest.raises(LayerSelectionError, match="one stack"):
        resolve_layers("last", LayerSelection((6,), (6,)), 7, 7)
    with pytest.raises(LayerSelectionError, match="enc6"):
        resolve_layers("last", LayerSelection((0, 1), ()), 7, 7)
    both = LayerSelection((1, 2), (0,))
    assert [s.names for s in resolve_layers("best", both, 7, 7)] == [["enc1"], ["enc2"], ["dec0"]]
    assert resolve_layers("weighted-sum", both, 7, 7) == [both]


def test_parameter_counts_for_whisper_base():
    """The counts in docs/fusions.md: d=512, 7 encoder + 7 decoder states, 4 classes, 256 per direction."""
    def count(name, n_enc, n_dec):
        m = build_fusion(name, n_layers=n_enc + n_dec, d_in=512, n_classes=4, n_encoder=n_enc, n_decoder=n_dec)
        return sum(p.numel() for p in m.parameters())
    head = 1_185_796
    assert count("single", 1, 0) == head
    assert {n: count(n, 7, 0) - head for n in ("mean", "weighted-sum", "scalar-mix", "attention")} == {
        "mean": 0, "weighted-sum": 7, "scalar-mix": 8, "attention": 512}
    both = count("mean", 7, 7)
    assert both == 2_369_540
    assert {n: count(n, 7, 7) - both for n in ("weighted-sum", "scalar-mix", "attention")} == {
        "weighted-sum": 14, "scalar-mix": 16, "attention": 1024}
    assert count("l-adapter", 7, 7) == 16_574_482


# --- trainer: `best`, `last`, stack info, on a tiny fake cache -------------------------------------

N_ENC, N_DEC, D_CACHE, SIGNAL_LAYER = 3, 2, 8, 1


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """3 folds x 12 utterances, 2 classes; only encoder layer 1 carries the label (a shift of +-1.5)."""
    path = tmp_path_factory.mktemp("fusions") / "tiny.zarr"
    layout = CacheLayout(encoder_chunk_frames=16, encoder_shard_frames=64, decoder_chunk_tokens=8,
                         decoder_shard_tokens=32)
    write_cache(path, 36, rows=lambda k: row(k, utt_id=f"u{k:02d}", speaker=f"s{k % 3}{k % 2}",
                                             label="ab"[(k // 3) % 2], transcript="", hypothesis="", duration=None),
                lengths=lambda rng, k: (int(rng.integers(6, 16)), int(rng.integers(3, 7))),
                signal=Signal("encoder", SIGNAL_LAYER, {"a": 1.5, "b": -1.5}), n_enc=N_ENC, n_dec=N_DEC, d=D_CACHE,
                identity={"test": "fusions"}, layout=layout)
    return path


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 4, "lr": 1e-2, "hidden": 8, "threads": 1, **kw})


def test_best_chooses_on_validation_only(tiny_cache, tmp_path, monkeypatch):
    calls: list[tuple[tuple[str, ...], tuple[int, ...]]] = []
    real = trainer._evaluate

    def spy(model, loader, device):
        calls.append((tuple(loader.dataset.selection.names), tuple(loader.dataset.indices)))
        return real(model, loader, device)

    monkeypatch.setattr(trainer, "_evaluate", spy)
    # next-fold: the tiny cache's carved training parts would lose a class
    c = cfg(fusion="best", layers="enc:all,dec:all", validation="next-fold")
    metrics = trainer.train_on_cache(tiny_cache, tmp_path / "run", c, progress=False)
    names = ["enc0", "enc1", "enc2", "dec0", "dec1"]
    assert metrics["best_layer"] == f"enc{SIGNAL_LAYER}"
    assert set(metrics["layer_val_uar"]) == set(names) == set(metrics["layer_val_uar_folds"])
    assert max(metrics["layer_val_uar"], key=metrics["layer_val_uar"].get) == metrics["best_layer"]
    assert metrics["layer_val_uar"]["enc1"] > 0.9 and metrics["uar"] > 0.9
    # Calls: every candidate x fold x epoch on the validation part, then the chosen layer on each test part.
    plan = trainer.fold_plan(CacheReader(tiny_cache), c.validation, c.seed)
    n_val = len(names) * len(plan) * c.epochs
    assert len(calls) == n_val + len(plan)
    expected_val = [((name,), tuple(val)) for name in names for _, _, val, _ in plan for _ in range(c.epochs)]
    assert calls[:n_val] == expected_val
    assert calls[n_val:] == [(("enc1",), tuple(test)) for _, _, _, test in plan]
    for fold, m in metrics["folds"].items():
        assert m["val_uar"] == metrics["layer_val_uar_folds"]["enc1"][fold]


def test_last_resolves_against_the_cache(tiny_cache, tmp_path):
    m = trainer.train_on_cache(tiny_cache, tmp_path / "run", cfg(fusion="last", layers="dec:all", epochs=1,
                                                                  folds="0"), progress=False)
    assert m["layers"] == ["dec1"] and "layer_weights" not in m["folds"]["0"]
    with pytest.raises(LayerSelectionError, match="one stack"):
        trainer.train_on_cache(tiny_cache, tmp_path / "r2", cfg(fusion="last"), progress=False)


def test_mixed_stacks_through_the_trainer(tiny_cache, tmp_path):
    m = trainer.train_on_cache(tiny_cache, tmp_path / "run",
                               cfg(fusion="weighted-sum", layers="enc:all,dec:all", epochs=1, folds="1"), progress=False)
    weights = m["folds"]["1"]["layer_weights"]
    assert list(weights) == ["enc0", "enc1", "enc2", "dec0", "dec1"]
    assert abs(sum(weights[n] for n in ("enc0", "enc1", "enc2")) - 1) < 1e-6
    assert abs(weights["dec0"] + weights["dec1"] - 1) < 1e-6
