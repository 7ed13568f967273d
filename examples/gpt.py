"""A small GPT (causal self-attention written with F.scaled_dot_product_attention, as
nanoGPT does) on the repository's README, trained as it is and inside
`with seqops.patched_functional():`, which routes its attention calls to seqops.

    python examples/gpt.py            # small, on the CPU: about a minute
    python examples/gpt.py --full     # full size, meant for a GPU
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from char_lstm import batches  # noqa: E402
from side_by_side import FUNCTIONAL, arguments, size_and_steps, side_by_side, text_tokens  # noqa: E402

SMALL = dict(width=48, heads=4, layers=2, seq=32, batch=8, steps=40, lr=3e-3)
FULL = dict(width=768, heads=12, layers=8, seq=1024, batch=16, steps=200, lr=6e-4)


class Block(torch.nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                       torch.nn.Linear(4 * width, width))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.norm2(x))


class GPT(torch.nn.Module):
    def __init__(self, vocab: int, width: int, heads: int, layers: int, seq: int):
        super().__init__()
        self.tokens = torch.nn.Embedding(vocab, width)
        self.positions = torch.nn.Embedding(seq, width)
        self.blocks = torch.nn.Sequential(*(Block(width, heads) for _ in range(layers)))
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab, bias=False)

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.head(self.norm(self.blocks(self.tokens(tokens) + self.positions(positions))))


def loss_of(model, batch):
    inputs, targets = batch
    return F.cross_entropy(model(inputs).flatten(0, 1).float(), targets.flatten())


def main(argv=None):
    args = arguments(__doc__.split("\n\n")[0], argv)
    size, steps = size_and_steps(args, SMALL, FULL)
    tokens, chars = text_tokens(args.device)
    model = GPT(len(chars), size["width"], size["heads"], size["layers"], size["seq"]).to(args.device)
    data = batches(tokens, size["seq"], size["batch"], min(steps, 64), torch.Generator().manual_seed(args.seed))
    torch_run, seqops_run, _ = side_by_side("GPT", model, FUNCTIONAL, data, loss_of, args, steps, size["lr"])
    return torch_run, seqops_run


if __name__ == "__main__":
    main()
