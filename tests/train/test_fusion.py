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
        assert adapter.gru.weight_ih_l0.grad.abs().sum() > 0
    assert abs(float(model.layer_weights().detach().sum()) - 1.0) < 1e-6
