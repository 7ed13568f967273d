"""The launches the static report compiles: each op's launchers driven with CPU (or meta)
tensors over inputs that take every code path (dtype, mask, causal, dropout, carried
state, int64 offsets) and the extreme tiles each launcher picks, while
benchmarks/kernel_launches.py records the launches instead of running them."""
from __future__ import annotations

from typing import Iterator

import torch

import seqops.kernels.additive as additive_kernels
import seqops.kernels.additive.backward as additive_backward
import seqops.kernels.additive.forward as additive_forward
import seqops.kernels.attention as attention_kernels
import seqops.kernels.attention.backward as attention_backward
import seqops.kernels.attention.decode as attention_decode
import seqops.kernels.attention.forward as attention_forward
import seqops.kernels.recurrent as recurrent_kernels
import seqops.kernels.recurrent.gru_cell as recurrent_gru_cell
import seqops.kernels.recurrent.hidden_sequence as recurrent_hidden_sequence
import seqops.kernels.recurrent.rnn_cell as recurrent_rnn_cell
import seqops.kernels.recurrent.sequence as recurrent_sequence
import seqops.kernels.recurrent.sequence_grid as recurrent_sequence_grid
import seqops.kernels.recurrent.step as recurrent_step
import seqops.kernels.softmax as softmax_kernels
import seqops.kernels.softmax.backward as softmax_backward
import seqops.kernels.softmax.forward as softmax_forward
from seqops.kernels.recurrent.step import StepState, bias_grad_blocks, lstm_step_backward, lstm_step_forward


def drive_softmax():
    """In each dtype, with and without mask and causal: the one-pass tiles of the fewest
    lanes (8 columns), of several rows a program (1000 columns) and of the widest row
    (16384 columns, 32 warps: the most registers), the online sweep (20000 columns: within
    the bound forward and backward in every dtype), and rows split into parts (2**18
    columns: past the online bound in every dtype; the fp32 backward splits from 70000
    columns); and the int64
    row indices of a launch of 2**31 rows or more (meta tensors: launches are recorded,
    not run). Every one-pass tile holds at most VALUES_PER_THREAD values a thread, so the
    widths between compile to the same code at other sizes."""
    for n_cols in (7, 1000, 16384, 20000, 70000, 2**18):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x = torch.randn(2, 3, n_cols, dtype=dtype)
            for mask, causal in ((None, False), (torch.ones(n_cols, dtype=torch.bool), True)):
                y = softmax_kernels.softmax_forward(x, mask, 2, 1.0, causal, dtype)
                softmax_kernels.softmax_backward(torch.randn_like(y), y, mask, 2, 1.0, causal, dtype)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.empty(2**31 + 5, 3, dtype=dtype, device="meta")
        for mask, causal in ((None, False), (torch.ones(3, dtype=torch.bool, device="meta"), True)):
            y = softmax_kernels.softmax_forward(x, mask, 1, 1.0, causal, dtype)
            softmax_kernels.softmax_backward(torch.empty_like(y), y, mask, 1, 1.0, causal, dtype)


def run_attention(dtype: torch.dtype, head_dim: int, mask_kind: str, causal: bool, dropout: float,
                  query_row_stride: int = 0, tensor_descriptors: bool = False):
    """One forward and backward (each schedule) through the attention launchers, on
    contiguous [B, H, L, E] tensors as a model passes them; with query_row_stride, q's rows
    are that many elements apart instead (a meta tensor: launches are recorded, not run);
    with tensor_descriptors, the forward and the backward's product kernels read q, k, v
    (and dO) through them, as they do on sm_90."""
    B, H, L, S = 1, 2, 64, 64
    q, k, v = (torch.randn(B, H, n, head_dim, dtype=dtype) for n in (L, S, S))
    if query_row_stride:
        q = torch.empty_strided((B, H, L, head_dim), (0, head_dim, query_row_stride, 1), dtype=dtype, device="meta")
    mask = {"none": None, "bool": torch.ones(B, 1, L, S, dtype=torch.bool),
            "float": torch.zeros(1, H, 1, S, dtype=dtype)}[mask_kind]
    out, lse = attention_forward.attention_forward(q, k, v, mask, dropout, causal, 0, 0.1, 1,
                                                   tensor_descriptors=tensor_descriptors)
    for schedule in attention_backward.SCHEDULES:
        attention_kernels.attention_backward(torch.randn_like(out), q, k, v, out, lse, mask, dropout, causal, 0, 0.1, 1,
                                             mask_kind == "float", tensor_descriptors=tensor_descriptors,
                                             schedule=schedule)


def drive_attention():
    """Each dtype through every feature path (a head dim that is not a power of two; no
    mask; a bool mask with causal and dropout; a float mask with its gradient), and each
    class of the tile table (dtype class, head-dim class, plain or heavy)."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for mask_kind, causal, dropout in (("none", False, 0.0), ("bool", True, 0.1), ("float", False, 0.0)):
            run_attention(dtype, 40, mask_kind, causal, dropout)
    for dtype, head_dims in ((torch.float32, (64, 128)), (torch.bfloat16, (64, 128, 256))):
        for head_dim in head_dims:
            for mask_kind, dropout in (("none", 0.0), ("float", 0.1)):
                run_attention(dtype, head_dim, mask_kind, True, dropout)
    # The tensor-descriptor variants, which sm_90 launches take (TMA loads), for
    # every 16-bit head-dim class, plain (causal or not) and heavy.
    for dtype in (torch.float16, torch.bfloat16):
        for head_dim in (64, 128, 256):
            for mask_kind, causal, dropout in (("none", False, 0.0), ("none", True, 0.0), ("float", True, 0.1)):
                run_attention(dtype, head_dim, mask_kind, causal, dropout, tensor_descriptors=True)
    # The kernels' int64-offset variants, which launches only take past 2**31 elements: q
    # rows 2**23 elements apart (a slice of 64 rows then spans 2**29; padded to the
    # longest tile, more than 2**31), for the plain path and the heaviest one.
    for dtype in (torch.float32, torch.bfloat16):
        for mask_kind, dropout in (("none", 0.0), ("float", 0.1)):
            run_attention(dtype, 128, mask_kind, True, dropout, query_row_stride=2**23)


def drive_attention_decode():
    """The decode kernels (split and combine) for each dtype and head-dim class, with each
    mask kind and causal, on a split launch: one query of 8 heads in groups of 4 against
    4096 keys."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for head_dim in ((40, 128) if dtype == torch.float32 else (64, 128, 256)):
            q = torch.randn(1, 8, 1, head_dim, dtype=dtype)
            k, v = (torch.randn(1, 2, 4096, head_dim, dtype=dtype) for _ in range(2))
            for mask, causal in ((None, False), (torch.ones(4096, dtype=torch.bool), True),
                                 (torch.zeros(1, 8, 1, 4096, dtype=dtype), False)):
                attention_decode.attention_decode_forward(q, k, v, mask, 0.0, causal, 4095, 0.1, 0)


def _recurrent_dtypes() -> Iterator[torch.dtype]:
    """fp32 twice, with exact products (torch's default fp32 matmul precision) and with TF32
    ones ("high", which the recurrent launchers read: a kernel of its own), then fp16 and
    bf16; each precision set while the caller drives that dtype."""
    for dtype, precision in ((torch.float32, "highest"), (torch.float32, "high"), (torch.float16, "highest"),
                             (torch.bfloat16, "highest")):
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(precision)
        try:
            yield dtype
        finally:
            torch.set_float32_matmul_precision(previous)


def drive_lstm():
    """The cell (input GEMM, biases, bias gradients) and the layer's steps (projected
    input, carried state, both carries in the backward), per dtype and hidden size, at
    the batch sizes that change the tiling; and the sequence kernels (packed, reversed)."""
    for dtype in _recurrent_dtypes():
        for hidden in (64, 1024):
            for batch in (1, 64):
                w_ih, w_hh = torch.randn(4 * hidden, 32, dtype=dtype), torch.randn(4 * hidden, hidden, dtype=dtype)
                x, h, c = torch.randn(batch, 32, dtype=dtype), torch.randn(batch, hidden, dtype=dtype), torch.randn(batch, hidden, dtype=dtype)
                bias = torch.randn(4 * hidden, dtype=dtype)
                h1, c1 = torch.empty_like(h), torch.empty_like(c)
                gates = torch.empty(batch, 4 * hidden)
                fresh = StepState(None, h, 0)
                lstm_step_forward(fresh, StepState(None, c, 0), w_hh, batch, h1, c1, gates,
                                  x=x, w_ih=w_ih, b_ih=bias, b_hh=bias)
                dbias = torch.empty(bias_grad_blocks(batch, hidden, hidden), 4 * hidden)
                lstm_step_backward(h1, None, StepState(None, c.float(), 0), gates, c1, StepState(None, c, 0), w_hh,
                                   batch, gates, StepState(None, c.float(), 0), StepState(None, h.float(), 0), dbias)
                xw = torch.randn(2 * batch, 4 * hidden, dtype=dtype)
                out, h_n, c_n, gates, cells, _ = recurrent_kernels.lstm_layer_forward(xw, [batch, batch], h, c, w_hh,
                                                                                      None, False)
                recurrent_kernels.lstm_layer_backward(torch.randn_like(out), torch.randn_like(h_n),
                                                      torch.randn_like(c_n), out, gates, cells, None, h, c, w_hh, None,
                                                      [batch, batch], False)
        # The whole-sequence kernels, at the hidden sizes whose W_hh slice they keep on
        # chip: one that is not a multiple of the 16-unit slice, and the largest; each
        # also with a projection (proj_size half the hidden size); and at 768, whose
        # slices re-read W_hh from L2 every step.
        for hidden in (24, recurrent_sequence_grid.max_on_chip_hidden(dtype), 768):
            for features in (hidden, hidden // 2) if hidden < 768 else (hidden,):
                xw = torch.randn(5, 4 * hidden, dtype=dtype)
                h, c = torch.randn(3, features, dtype=dtype), torch.randn(3, hidden, dtype=dtype)
                w_hh = torch.randn(4 * hidden, features, dtype=dtype)
                w_hr = torch.randn(features, hidden, dtype=dtype) if features < hidden else None
                out, h_n, c_n, gates, cells, h_raw = recurrent_kernels.lstm_sequence_forward(xw, [3, 2], h, c, w_hh,
                                                                                             w_hr, True)
                recurrent_kernels.lstm_sequence_backward(torch.randn_like(out), torch.randn_like(h_n),
                                                         torch.randn_like(c_n), out, gates, cells, h_raw, h, c, w_hh,
                                                         w_hr, [3, 2], True)


def drive_gru_rnn():
    """The GRU and RNN cells (tanh and relu: input GEMM, biases) and their layers' steps
    (projected input, carried state, gradient carries), per dtype, at a small batch and
    hidden size and at a large one: the two forward tilings; and their whole-sequence
    kernels."""
    for dtype in _recurrent_dtypes():
        for batch, hidden in ((1, 64), (64, 1024)):
            x, h = torch.randn(batch, 32, dtype=dtype), torch.randn(batch, hidden, dtype=dtype)
            for gates, forward, backward in (
                    (3, recurrent_kernels.gru_cell_forward, recurrent_kernels.gru_cell_backward),
                    (1, recurrent_kernels.rnn_tanh_cell_forward, recurrent_kernels.rnn_tanh_cell_backward),
                    (1, recurrent_kernels.rnn_relu_cell_forward, recurrent_kernels.rnn_relu_cell_backward)):
                w_ih = torch.randn(gates * hidden, 32, dtype=dtype)
                w_hh = torch.randn(gates * hidden, hidden, dtype=dtype)
                bias = torch.randn(gates * hidden, dtype=dtype)
                h1, saved = forward(x, h, w_ih, w_hh, bias, bias)
                backward(torch.randn_like(h1), x, h, w_ih, w_hh, saved, True)
            # The layers' steps at the large tiling only: a small one adds compile time, not a variant.
            for mode, gates in (("gru", 3), ("rnn_tanh", 1), ("rnn_relu", 1)) if batch > 1 else ():
                xw = torch.randn(2 * batch, gates * hidden, dtype=dtype)
                w_hh = torch.randn(gates * hidden, hidden, dtype=dtype)
                b_hh = torch.randn(gates * hidden, dtype=dtype)  # every mode takes b_hh apart from xw
                out, h_n, saved = getattr(recurrent_kernels, f"{mode}_layer_forward")(xw, [batch, batch], h, w_hh,
                                                                                      b_hh, False)
                getattr(recurrent_kernels, f"{mode}_layer_backward")(torch.randn_like(out), torch.randn_like(h_n), out,
                                                                     saved, h, w_hh, [batch, batch], False,
                                                                     b_hh is not None)
        # The whole-sequence kernels, as the LSTM's: a hidden size not a multiple of the
        # 16-unit slice, the largest whose W_hh slices stay on chip (per cell), and two
        # whose slices are re-read from L2 every step, 200 (not a multiple of 16) and 768;
        # packed and reversed.
        for mode, gates in (("gru", 3), ("rnn_tanh", 1), ("rnn_relu", 1)):
            limit = recurrent_sequence_grid.max_on_chip_hidden(dtype, recurrent_hidden_sequence.CELL[mode])
            for hidden in (24, limit, 200, 768) if limit < 200 else (24, limit, 768):
                h = torch.randn(3, hidden, dtype=dtype)
                xw = torch.randn(5, gates * hidden, dtype=dtype)
                w_hh = torch.randn(gates * hidden, hidden, dtype=dtype)
                b_hh = torch.randn(gates * hidden, dtype=dtype)
                out, h_n, saved = recurrent_hidden_sequence.hidden_sequence_forward(mode, xw, [3, 2], h, w_hh, b_hh,
                                                                                    True)
                recurrent_hidden_sequence.hidden_sequence_backward(mode, torch.randn_like(out), torch.randn_like(h_n),
                                                                   out, saved, h, w_hh, [3, 2], True,
                                                                   b_hh is not None)


def drive_additive():
    """Per dtype: values of 48 columns (the narrow tile) with a padding mask and the
    weights returned and their gradient; and of 256 (the widest, 8 hidden units a chunk)
    plain."""
    B, Lq, Lk, hidden = 2, 5, 37, 24
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for value_dim, mask, need_weights in ((48, True, True), (256, False, False)):
            query, keys = torch.randn(B, Lq, 16, dtype=dtype), torch.randn(B, Lk, 20, dtype=dtype)
            values = torch.randn(B, Lk, value_dim, dtype=dtype)
            w_query, w_key = torch.randn(hidden, 16, dtype=dtype), torch.randn(hidden, 20, dtype=dtype)
            v, bias = torch.randn(hidden, dtype=dtype), torch.randn(hidden, dtype=dtype)
            padding = torch.ones(B, 1, Lk, dtype=torch.bool) if mask else None
            context, stats, weights = additive_kernels.additive_attention_forward(
                query, keys, values, w_query, w_key, v, bias, bias, padding, need_weights)
            additive_kernels.additive_attention_backward(
                torch.randn_like(context), torch.randn_like(weights) if need_weights else None, query, keys, values,
                w_query, w_key, v, bias, bias, padding, context, stats, weights)


# (the kernel modules whose `*_kernel` launches are recorded, the driver) of each op.
DRIVERS = (
    ((softmax_forward, softmax_backward), drive_softmax),
    ((attention_forward, attention_backward), drive_attention),
    ((attention_decode,), drive_attention_decode),
    ((recurrent_step, recurrent_sequence), drive_lstm),
    ((recurrent_gru_cell, recurrent_rnn_cell, recurrent_hidden_sequence), drive_gru_rnn),
    ((additive_forward, additive_backward), drive_additive),
)
