"""A T5-style encoder-decoder (torch.nn.Transformer: encoder self-attention over a padded
source, causal decoder self-attention, cross-attention) learning to reverse strings of
digits, trained with torch's layers and with the same model after `seqops.patch(model)`;
then decodes a few strings greedily with the seqops one.

    python examples/t5_reverse.py            # small, on the CPU: about a minute
    python examples/t5_reverse.py --full     # full size, meant for a GPU
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import PATCH, arguments, size_and_steps, side_by_side  # noqa: E402

SMALL = dict(width=48, heads=4, layers=2, longest=12, batch=32, steps=60, lr=2e-3)
FULL = dict(width=512, heads=8, layers=6, longest=128, batch=128, steps=300, lr=5e-4)
PAD, START, END = 10, 11, 12  # after the ten digits
VOCAB = 13


class Reverser(torch.nn.Module):
    def __init__(self, width: int, heads: int, layers: int, longest: int):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, width)
        self.positions = torch.nn.Embedding(longest + 2, width)
        with warnings.catch_warnings():  # nn.Transformer cannot pass enable_nested_tensor=False down
            warnings.filterwarnings("ignore", "enable_nested_tensor is True")
            self.transformer = torch.nn.Transformer(width, heads, layers, layers, 4 * width, dropout=0.0,
                                                    batch_first=True, norm_first=True)
        self.head = torch.nn.Linear(width, VOCAB)

    def embedded(self, tokens):
        return self.embed(tokens) + self.positions(torch.arange(tokens.shape[1], device=tokens.device))

    def forward(self, source, target_in):
        # Bool like the padding masks (True = hidden): torch warns on a float mask beside bool ones.
        T = target_in.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=source.device).triu(1)
        source_padding, target_padding = source == PAD, target_in == PAD
        hidden = self.transformer(self.embedded(source), self.embedded(target_in), tgt_mask=causal,
                                  src_key_padding_mask=source_padding, tgt_key_padding_mask=target_padding,
                                  memory_key_padding_mask=source_padding, tgt_is_causal=True)
        return self.head(hidden)


def digit_batches(longest: int, batch: int, count: int, generator: torch.Generator, device) -> list:
    """(source, decoder input, decoder target): digit strings of 1 to `longest` digits,
    padded; the target is the reversed string then END."""
    out = []
    for _ in range(count):
        lengths = torch.randint(1, longest + 1, (batch,), generator=generator)
        digits = torch.randint(0, 10, (batch, longest), generator=generator)
        source = torch.full((batch, longest), PAD)
        target = torch.full((batch, longest + 1), PAD)
        for row, n in enumerate(lengths.tolist()):
            source[row, :n] = digits[row, :n]
            target[row, :n] = digits[row, :n].flip(0)
            target[row, n] = END
        target_in = torch.cat([torch.full((batch, 1), START), target[:, :-1]], 1)
        out.append((source.to(device), target_in.to(device), target.to(device)))
    return out


def loss_of(model, batch):
    source, target_in, target = batch
    return F.cross_entropy(model(source, target_in).flatten(0, 1).float(), target.flatten(), ignore_index=PAD)


@torch.no_grad()
def reverse(model, digits: str, device) -> str:
    model.eval()
    source = torch.tensor([[int(d) for d in digits]], device=device)
    decoded = torch.tensor([[START]], device=device)
    for _ in range(len(digits) + 1):
        next_id = model(source, decoded)[0, -1].argmax().view(1, 1)
        if next_id.item() == END:
            break
        decoded = torch.cat([decoded, next_id], 1)
    model.train()
    return "".join(str(t) for t in decoded[0, 1:].tolist() if t < 10)


def main(argv=None):
    args = arguments(__doc__.split("\n\n")[0], argv)
    size, steps = size_and_steps(args, SMALL, FULL)
    model = Reverser(size["width"], size["heads"], size["layers"], size["longest"]).to(args.device)
    data = digit_batches(size["longest"], size["batch"], min(steps, 64), torch.Generator().manual_seed(args.seed),
                         args.device)
    torch_run, seqops_run, twin = side_by_side("T5-style reverser", model, PATCH, data, loss_of, args, steps,
                                               size["lr"])
    if not args.quiet:
        for digits in ("12345", "9081726354"[: size["longest"]]):
            print(f"reverse({digits}) by seqops: {reverse(twin, digits, args.device)}")
    return torch_run, seqops_run


if __name__ == "__main__":
    main()
