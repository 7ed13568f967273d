"""seqops.patch on models written for torch: the patched model gives torch's results, in
training and in inference, and really runs seqops (its calls counted), including where
torch would take a fused native path of its own (TransformerEncoderLayer in eval without
grad, TransformerEncoder's nested tensors)."""
import pytest
import torch

import seqops
from calls import counting_seqops_calls
from devices import DEVICES, skip_unless_runnable


def encoder(norm_first, layers=2):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=48, dropout=0.0, batch_first=True,
                                             norm_first=norm_first)
    return torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=True)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("backend", ["triton", "auto"])
@pytest.mark.parametrize("device", DEVICES)
def test_encoder_in_eval_without_grad_runs_seqops(device, backend, norm_first):
    """torch's eval fast path (one native kernel per layer, nested tensors for padding) is
    off in the patched encoder: both layers' attention runs in seqops, and the output
    matches torch's at every position a padding mask leaves."""
    skip_unless_runnable(device, backend)
    model = encoder(norm_first).to(device).eval()
    x = torch.randn(3, 11, 32, device=device)
    padding = torch.zeros(3, 11, dtype=torch.bool, device=device)
    padding[1, 7:] = True
    padding[2, 10:] = True
    with torch.no_grad():
        expected = model(x, src_key_padding_mask=padding)
        seqops.patch(model)  # in place
        with seqops.backend(backend), counting_seqops_calls() as calls:
            out = model(x, src_key_padding_mask=padding)
    assert sum(n for (op, _), n in calls.items() if op == "attention") == 2, calls
    kept = ~padding
    torch.testing.assert_close(out[kept], expected[kept], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_encoder_layer_alone_in_eval_runs_seqops(device):
    skip_unless_runnable(device, "triton")
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=48, dropout=0.0, batch_first=True).to(device)
    layer.eval()
    x = torch.randn(2, 9, 32, device=device)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(9, device=device)
    with torch.no_grad():
        expected = layer(x, src_mask=causal, is_causal=True)
        seqops.patch(layer)  # in place
        with seqops.backend("triton"), counting_seqops_calls() as calls:
            out = layer(x, src_mask=causal, is_causal=True)
    assert calls == {("attention", "triton"): 1}, calls
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_patched_transformer_trains_like_torchs(device):
    """nn.Transformer (encoder, decoder with cross-attention) in training: every attention
    runs in seqops, and loss and gradients match torch's."""
    skip_unless_runnable(device, "triton")
    torch.manual_seed(0)
    model = torch.nn.Transformer(32, 4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=48, dropout=0.0,
                                 batch_first=True).to(device)
    twin = seqops.patch(torch.nn.Transformer(32, 4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=48,
                                             dropout=0.0, batch_first=True).to(device))
    twin.load_state_dict(model.state_dict())
    src, tgt = torch.randn(2, 7, 32, device=device), torch.randn(2, 5, 32, device=device)
    tgt_mask = torch.nn.Transformer.generate_square_subsequent_mask(5, device=device)
    expected = model(src, tgt, tgt_mask=tgt_mask, tgt_is_causal=True)
    with seqops.backend("triton"), counting_seqops_calls() as calls:
        out = twin(src, tgt, tgt_mask=tgt_mask, tgt_is_causal=True)
    assert calls == {("attention", "triton"): 3}, calls  # encoder self, decoder self, decoder cross
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    out.square().sum().backward()
    expected.square().sum().backward()
    for (name, ours), theirs in zip(twin.named_parameters(), model.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_patched_lstm_language_model_runs_seqops(device):
    skip_unless_runnable(device, "triton")

    class CharModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(20, 8)
            self.rnn = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(16, 20)

        def forward(self, tokens):
            return self.head(self.rnn(self.embed(tokens))[0])

    torch.manual_seed(0)
    model = CharModel().to(device)
    tokens = torch.randint(0, 20, (3, 6), device=device)
    expected = model(tokens)
    seqops.patch(model)
    with seqops.backend("triton"), counting_seqops_calls() as calls:
        out = model(tokens)
    assert calls == {("lstm", "triton"): 1}, calls
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
