"""Bad input raises what torch raises for it (its exception type, or a subclass), so that
code catching torch's errors catches seqops' too; the message is seqops' own, naming the
argument. Each case is run through torch's op and through seqops' on every backend."""
import pytest
import torch
import torch.nn.functional as F

import seqops
from devices import IMPLEMENTED, skip_unless_runnable

q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
x, h, c = torch.randn(3, 4), torch.randn(3, 6), torch.randn(3, 6)
w_ih, w_hh = torch.randn(24, 4), torch.randn(24, 6)

# name: (torch's call, seqops' call)
CASES = {
    "softmax-integer-input": (lambda: torch.softmax(torch.arange(6), -1), lambda: seqops.softmax(torch.arange(6), -1)),
    "softmax-complex-input": (lambda: torch.softmax(torch.randn(3, dtype=torch.complex64), -1),
                              lambda: seqops.softmax(torch.randn(3, dtype=torch.complex64), -1)),
    "softmax-dim-out-of-range": (lambda: torch.softmax(x, 2), lambda: seqops.softmax(x, 2)),
    "softmax-dim-not-int": (lambda: torch.softmax(x, 1.0), lambda: seqops.softmax(x, 1.0)),
    "softmax-integer-dtype": (lambda: torch.softmax(x, -1, torch.int32), lambda: seqops.softmax(x, -1, torch.int32)),
    "softmax-dtype-not-a-dtype": (lambda: torch.softmax(x, -1, "float32"), lambda: seqops.softmax(x, -1, "float32")),
    "softmax-mask-shape": (lambda: x.masked_fill(torch.ones(4, 3, dtype=torch.bool), 0),
                           lambda: seqops.softmax(x, -1, mask=torch.ones(4, 3, dtype=torch.bool))),
    "sdpa-one-dim": (lambda: F.scaled_dot_product_attention(q[0, 0, 0], k, v),
                     lambda: seqops.scaled_dot_product_attention(q[0, 0, 0], k, v)),
    "sdpa-integer": (lambda: F.scaled_dot_product_attention(q.long(), k.long(), v.long()),
                     lambda: seqops.scaled_dot_product_attention(q.long(), k.long(), v.long())),
    "sdpa-dtypes-differ": (lambda: F.scaled_dot_product_attention(q.half(), k, v),
                           lambda: seqops.scaled_dot_product_attention(q.half(), k, v)),
    "sdpa-feature-sizes": (lambda: F.scaled_dot_product_attention(q, k[..., :4], v),
                           lambda: seqops.scaled_dot_product_attention(q, k[..., :4], v)),
    "sdpa-leading-dims": (lambda: F.scaled_dot_product_attention(q, k[:, :2], v[:, :2]),
                          lambda: seqops.scaled_dot_product_attention(q, k[:, :2], v[:, :2])),
    "sdpa-mask-shape": (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=torch.zeros(7, 5)),
                        lambda: seqops.scaled_dot_product_attention(q, k, v, attn_mask=torch.zeros(7, 5))),
    "sdpa-mask-dtype": (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=torch.zeros(5, 7, dtype=torch.long)),
                        lambda: seqops.scaled_dot_product_attention(q, k, v,
                                                                    attn_mask=torch.zeros(5, 7, dtype=torch.long))),
    "sdpa-dropout-range": (lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=2.0),
                           lambda: seqops.scaled_dot_product_attention(q, k, v, dropout_p=2.0)),
    "sdpa-dropout-type": (lambda: F.scaled_dot_product_attention(q, k, v, dropout_p="0.1"),
                          lambda: seqops.scaled_dot_product_attention(q, k, v, dropout_p="0.1")),
    "sdpa-gqa-heads": (lambda: F.scaled_dot_product_attention(q, k[:, :2], v[:, :2], enable_gqa=True),
                       lambda: seqops.scaled_dot_product_attention(q, k[:, :2], v[:, :2], enable_gqa=True)),
    "sdpa-gqa-two-dims": (lambda: F.scaled_dot_product_attention(q[0, 0], k[0, 0], v[0, 0], enable_gqa=True),
                          lambda: seqops.scaled_dot_product_attention(q[0, 0], k[0, 0], v[0, 0], enable_gqa=True)),
    "sdpa-causal-not-bool": (lambda: F.scaled_dot_product_attention(q, k, v, is_causal=1),
                             lambda: seqops.scaled_dot_product_attention(q, k, v, is_causal=1)),
    "sdpa-key-not-a-tensor": (lambda: F.scaled_dot_product_attention(q, [1.0], v),
                              lambda: seqops.scaled_dot_product_attention(q, [1.0], v)),
    "lstm-cell-input-size": (lambda: torch.lstm_cell(torch.randn(3, 5), (h, c), w_ih, w_hh),
                             lambda: seqops.lstm_cell(torch.randn(3, 5), (h, c), w_ih, w_hh)),
    "lstm-cell-batch": (lambda: torch.lstm_cell(x, (h[:2], c[:2]), w_ih, w_hh),
                        lambda: seqops.lstm_cell(x, (h[:2], c[:2]), w_ih, w_hh)),
    "lstm-cell-dtypes": (lambda: torch.lstm_cell(x.half(), (h, c), w_ih, w_hh),
                         lambda: seqops.lstm_cell(x.half(), (h, c), w_ih, w_hh)),
    "lstm-cell-weight-rows": (lambda: torch.lstm_cell(x, (h, c), w_ih[:20], w_hh[:20]),
                              lambda: seqops.lstm_cell(x, (h, c), w_ih[:20], w_hh[:20])),
    "lstm-cell-bias-shape": (lambda: torch.lstm_cell(x, (h, c), w_ih, w_hh, torch.zeros(12), torch.zeros(12)),
                             lambda: seqops.lstm_cell(x, (h, c), w_ih, w_hh, torch.zeros(12), torch.zeros(12))),
    "gru-cell-input-size": (lambda: torch.gru_cell(torch.randn(3, 5), h, w_ih[:18], w_hh[:18]),
                            lambda: seqops.gru_cell(torch.randn(3, 5), h, w_ih[:18], w_hh[:18])),
    "gru-cell-batch": (lambda: torch.gru_cell(x, h[:2], w_ih[:18], w_hh[:18]),
                       lambda: seqops.gru_cell(x, h[:2], w_ih[:18], w_hh[:18])),
    "gru-cell-dtypes": (lambda: torch.gru_cell(x.half(), h, w_ih[:18], w_hh[:18]),
                        lambda: seqops.gru_cell(x.half(), h, w_ih[:18], w_hh[:18])),
    "rnn-cell-weight-rows": (lambda: torch.rnn_tanh_cell(x, h, w_ih[:5], w_hh[:5]),
                             lambda: seqops.rnn_tanh_cell(x, h, w_ih[:5], w_hh[:5])),
    "rnn-cell-bias-shape": (lambda: torch.rnn_relu_cell(x, h, w_ih[:6], w_hh[:6], torch.zeros(4), torch.zeros(4)),
                            lambda: seqops.rnn_relu_cell(x, h, w_ih[:6], w_hh[:6], torch.zeros(4), torch.zeros(4))),
    "gru-hx-dtype": (lambda: torch.nn.GRU(4, 6)(torch.randn(5, 2, 4), torch.zeros(1, 2, 6).double()),
                     lambda: seqops.nn.GRU(4, 6)(torch.randn(5, 2, 4), torch.zeros(1, 2, 6).double())),
    "rnn-input-dims": (lambda: torch.nn.RNN(4, 6)(torch.randn(2, 3, 4, 5)),
                       lambda: seqops.nn.RNN(4, 6)(torch.randn(2, 3, 4, 5))),
    "lstm-hx-dtype": (lambda: torch.nn.LSTM(4, 6)(torch.randn(5, 2, 4), (torch.zeros(1, 2, 6).double(),) * 2),
                      lambda: seqops.nn.LSTM(4, 6)(torch.randn(5, 2, 4), (torch.zeros(1, 2, 6).double(),) * 2)),
    "lstm-input-dims": (lambda: torch.nn.LSTM(4, 6)(torch.randn(2, 3, 4, 5)),
                        lambda: seqops.nn.LSTM(4, 6)(torch.randn(2, 3, 4, 5))),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", IMPLEMENTED + ("auto",))
def test_error_type_is_torchs(backend, case):
    skip_unless_runnable("cpu", backend)
    theirs, ours = CASES[case]
    with pytest.raises(Exception) as torch_error:
        theirs()
    with seqops.backend(backend):
        with pytest.raises(torch_error.type) as our_error:
            ours()
    assert any(name in str(our_error.value) for name in ("seqops", "LSTM", "GRU", "RNN")), str(our_error.value)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_dropout_p_one_gives_zeros(backend):
    """dropout_p = 1 drops every probability: zeros and zero gradients, as torch gives."""
    query = q.clone().requires_grad_()
    with seqops.backend(backend):
        out = seqops.scaled_dot_product_attention(query, k, v, dropout_p=1.0)
    assert torch.equal(out, torch.zeros_like(out))
    (grad,) = torch.autograd.grad(out.sum(), query)
    assert torch.equal(grad, torch.zeros_like(grad))
