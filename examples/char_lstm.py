"""A character-level LSTM language model (2 layers) on the repository's README, trained
with torch.nn.LSTM and with the same model after `seqops.patch(model)`; then samples
text from the seqops one.

    python examples/char_lstm.py            # small, on the CPU: about a minute
    python examples/char_lstm.py --full     # full size, meant for a GPU
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import PATCH, arguments, size_and_steps, side_by_side, text_tokens  # noqa: E402

SMALL = dict(hidden=64, embed=32, seq=48, batch=16, steps=40, lr=1e-2)
FULL = dict(hidden=1024, embed=256, seq=256, batch=64, steps=300, lr=2e-3)


class CharLSTM(torch.nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, embed)
        self.lstm = torch.nn.LSTM(embed, hidden, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        out, state = self.lstm(self.embed(tokens), state)
        return self.head(out), state


def batches(tokens: torch.Tensor, seq: int, batch: int, count: int, generator: torch.Generator) -> list:
    """`count` batches of (input, target) windows at random offsets of the text."""
    starts = torch.randint(0, len(tokens) - seq - 1, (count, batch), generator=generator)
    windows = [torch.stack([tokens[s:s + seq + 1] for s in row.tolist()]) for row in starts]
    return [(w[:, :-1], w[:, 1:]) for w in windows]


def loss_of(model, batch):
    inputs, targets = batch
    logits, _ = model(inputs)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


@torch.no_grad()
def sample(model, chars: list, prompt: str, length: int, device) -> str:
    """Text continued from `prompt`, a character at a time, carrying the LSTM state."""
    model.eval()
    index = {c: i for i, c in enumerate(chars)}
    tokens = torch.tensor([[index.get(c, 0) for c in prompt]], device=device)
    logits, state = model(tokens)
    generator = torch.Generator(device=device).manual_seed(0)
    out = []
    for _ in range(length):
        next_id = torch.multinomial(logits[0, -1].float().softmax(-1), 1, generator=generator)
        out.append(chars[next_id.item()])
        logits, state = model(next_id.view(1, 1), state)
    model.train()
    return prompt + "".join(out)


def main(argv=None):
    args = arguments(__doc__.split("\n\n")[0], argv)
    size, steps = size_and_steps(args, SMALL, FULL)
    tokens, chars = text_tokens(args.device)
    model = CharLSTM(len(chars), size["embed"], size["hidden"]).to(args.device)
    data = batches(tokens, size["seq"], size["batch"], min(steps, 64), torch.Generator().manual_seed(args.seed))
    torch_run, seqops_run, twin = side_by_side("char-level LSTM", model, PATCH, data, loss_of, args, steps,
                                               size["lr"])
    if not args.quiet:
        print("sample (seqops):", repr(sample(twin, chars, "seqops ", 80, args.device)))
    return torch_run, seqops_run


if __name__ == "__main__":
    main()
