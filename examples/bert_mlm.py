"""A BERT-style masked-language model (a torch.nn.TransformerEncoder over padded batches
of sentences, 15% of the tokens masked) on the repository's README, trained with torch's
layers and with the same model after `seqops.patch(model)`.

    python examples/bert_mlm.py            # small, on the CPU: about a minute
    python examples/bert_mlm.py --full     # full size, meant for a GPU
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import PATCH, arguments, size_and_steps, side_by_side, text_tokens  # noqa: E402

SMALL = dict(width=48, heads=4, layers=2, longest=40, batch=8, steps=40, lr=2e-3)
FULL = dict(width=768, heads=12, layers=8, longest=512, batch=32, steps=200, lr=3e-4)
MASKED_SHARE = 0.15
IGNORED = -100  # cross_entropy's ignore_index: positions that are not predicted


class Encoder(torch.nn.Module):
    def __init__(self, vocab: int, width: int, heads: int, layers: int, longest: int):
        super().__init__()
        self.mask_id, self.pad_id = vocab, vocab + 1  # two tokens past the characters
        self.tokens = torch.nn.Embedding(vocab + 2, width)
        self.positions = torch.nn.Embedding(longest, width)
        layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True,
                                                 activation="gelu", norm_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, tokens, padding):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = self.encoder(self.tokens(tokens) + self.positions(positions), src_key_padding_mask=padding)
        return self.head(hidden)


def padded_batches(text: torch.Tensor, model: Encoder, longest: int, batch: int, count: int,
                   generator: torch.Generator) -> list:
    """`count` batches of text pieces of random lengths (8 to `longest` characters),
    right-padded, with MASKED_SHARE of the real tokens replaced by the mask token:
    (tokens, padding [True = pad], targets [IGNORED except at masked positions])."""
    out = []
    for _ in range(count):
        lengths = torch.randint(8, longest + 1, (batch,), generator=generator)
        starts = torch.randint(0, len(text) - longest, (batch,), generator=generator)
        tokens = torch.full((batch, longest), model.pad_id, dtype=torch.long)
        for row, (start, length) in enumerate(zip(starts.tolist(), lengths.tolist())):
            tokens[row, :length] = text[start:start + length].cpu()
        padding = tokens == model.pad_id
        masked = (torch.rand(batch, longest, generator=generator) < MASKED_SHARE) & ~padding
        masked[:, 0] |= ~masked.any(1)  # every row predicts something
        targets = torch.where(masked, tokens, IGNORED)
        inputs = torch.where(masked, model.mask_id, tokens)
        out.append(tuple(t.to(text.device) for t in (inputs, padding, targets)))
    return out


def loss_of(model, batch):
    tokens, padding, targets = batch
    return F.cross_entropy(model(tokens, padding).flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORED)


def main(argv=None):
    args = arguments(__doc__.split("\n\n")[0], argv)
    size, steps = size_and_steps(args, SMALL, FULL)
    text, chars = text_tokens(args.device)
    model = Encoder(len(chars), size["width"], size["heads"], size["layers"], size["longest"]).to(args.device)
    data = padded_batches(text, model, size["longest"], size["batch"], min(steps, 64),
                          torch.Generator().manual_seed(args.seed))
    torch_run, seqops_run, _ = side_by_side("BERT-style masked LM", model, PATCH, data, loss_of, args, steps,
                                            size["lr"])
    return torch_run, seqops_run


if __name__ == "__main__":
    main()
