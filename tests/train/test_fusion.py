import torch

from pipeline.train.fusion import LayerAdapter, LayerAdapterFusion, build_fusion


def test_padded_frames_do_not_change_output():
    torch.manual_seed(0)
    adapter = LayerAdapter(16, hidden=8).eval()
    x = torch.randn(3, 20, 16)
    lengths = torch.tensor([20, 12, 5])
    base = adapter(x, lengths)
    x2 = x.clone()
    x2[1, 12:] = 1e3
    x2[2, 5:] = -1e3
    assert torch.allclose(base, adapter(x2, lengths), atol=1e-6)
    alone = adapter(x[2:3, :5], torch.tensor([5]))
    assert torch.allclose(base[2], alone[0], atol=1e-5)


def test_shapes_and_gradients_reach_every_adapter_and_weight():
    torch.manual_seed(0)
    model = build_fusion("l-adapter", n_layers=3, d_in=16, n_classes=4, hidden=8)
    assert isinstance(model, LayerAdapterFusion)
    layers = [torch.randn(2, 9, 16), torch.randn(2, 9, 16), torch.randn(2, 4, 16)]
    lengths = [torch.tensor([9, 6])] * 2 + [torch.tensor([4, 3])]
    logits = model(layers, lengths)
    assert logits.shape == (2, 4)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    assert model.layer_logits.grad is not None and model.layer_logits.grad.abs().sum() > 0
    for adapter in model.adapters:
        assert adapter.gru.forward_gru.weight_ih_l0.grad.abs().sum() > 0
        assert adapter.gru.backward_gru.weight_ih_l0.grad.abs().sum() > 0
    assert abs(float(model.layer_weights().detach().sum()) - 1.0) < 1e-6


def test_bigru_equals_packed_bidirectional_gru():
    """The unpacked BiGRU computes exactly what a packed nn.GRU(bidirectional=True) computes."""
    from pipeline.train.fusion import BiGRU
    torch.manual_seed(0)
    ours = BiGRU(16, 8)
    ref = torch.nn.GRU(16, 8, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ref, name).copy_(getattr(ours.forward_gru, name))
            getattr(ref, name + "_reverse").copy_(getattr(ours.backward_gru, name))
    x = torch.randn(4, 11, 16)
    lengths = torch.tensor([11, 7, 3, 9])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=11)
    got = ours(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(got[b, :n], expected[b, :n], atol=1e-5)


def test_adapter_dropout_acts_on_the_bigru_output_in_training_only():
    torch.manual_seed(0)
    x, n = torch.randn(4, 9, 6), torch.tensor([9, 7, 3, 1])
    off, on = LayerAdapter(6, 5, dropout=0.0), LayerAdapter(6, 5, dropout=0.5)
    on.load_state_dict(off.state_dict())  # dropout has no parameters: the same adapter twice
    off.train(), on.train()
    state = torch.get_rng_state()
    assert torch.equal(off(x, n), off.eval()(x, n))  # p = 0: no effect ...
    assert torch.equal(torch.get_rng_state(), state)  # ... and no random numbers drawn
    on.train()
    assert not torch.allclose(on(x, n), on.eval()(x, n))  # p = 0.5 changes training outputs
    assert torch.equal(on(x, n), off(x, n))  # and nothing in evaluation


def test_adapter_dropout_reaches_every_fusion_head():
    from pipeline.train.fusion import FUSIONS

    from pipeline.train.fusion_specs import FUSION_SPECS, as_given

    for name in FUSIONS:
        n_layers = 3 if FUSION_SPECS[name].rule is as_given else 1  # the others train one layer at a time
        model = FUSIONS[name](n_layers=n_layers, d_in=6, n_classes=2, hidden=4, adapter_dropout=0.3)
        adapters = [m for m in model.modules() if isinstance(m, LayerAdapter)]
        if name in ("fc", "mean-fc"):  # the paper's baseline heads (Table II) have no recurrent adapter
            assert not adapters, name
            continue
        assert adapters and all(a.dropout.p == 0.3 for a in adapters), name
