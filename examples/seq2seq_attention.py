"""A GRU encoder-decoder with additive (Bahdanau) attention translating dates written the
way people write them ("Mon 30 Nov 2026", "November 30, 2026", "30/11/2026") into ISO
form ("2026-11-30"), trained with torch's layers and with its seqops twin; then decodes a
few dates greedily with the seqops one and, given --plot, draws its attention weights.

    python examples/seq2seq_attention.py                   # small, on the CPU: about a minute
    python examples/seq2seq_attention.py --plot att.png    # also the attention picture (matplotlib)
    python examples/seq2seq_attention.py --full            # full size, meant for a GPU

The model is Bahdanau et al. (2015): a bidirectional nn.GRU reads the source (packed, so
that the backward direction starts at each string's last character); an nn.GRUCell
decodes a character a step, with teacher forcing, its input the previous character and
the context that attention over the encoder's outputs gives for its previous state.

The one line, and why it is one line and a half. torch has no attention layer of this
kind, so the torch model has its own, `BahdanauAttention`, in plain torch (w_query,
w_key: nn.Linear; v: a vector), and seqops.patch, which swaps exact torch layer types
only, cannot know a module of the user's. So the twin is `seqops.patch(model)` (both
GRUs) plus one assignment that puts seqops.nn.AdditiveAttention in the attention's place,
holding the very same parameter tensors: `BahdanauAttention` is written with
AdditiveAttention's parameter names, shapes, init and call (query, keys, values=None,
mask=None, need_weights=False) -> (context, weights), so state_dicts load either way.

float32 only (--dtype bfloat16 is refused): under torch.autocast torch's cells and Linear
layers cast their inputs, while seqops.gru_cell and seqops.additive_attention take one
dtype as given and refuse the mix the model makes.
"""
from __future__ import annotations

import datetime
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqops

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import Route, arguments, size_and_steps, side_by_side  # noqa: E402

SMALL = dict(embed=16, hidden=48, attention=32, batch=32, steps=150, lr=1e-2)
FULL = dict(embed=128, hidden=512, attention=512, batch=256, steps=1000, lr=2e-3)

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# The ways a date is written here (month and weekday names spelled out by hand: strftime's
# depend on the locale).
FORMATS = (
    lambda d: f"{WEEKDAYS[d.weekday()][:3]} {d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1].lower()} {d.year}",
    lambda d: f"{d.day:02d}/{d.month:02d}/{d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]}. {d.day:02d} {d.year % 100:02d}",
)
FIRST_DAY, DAYS = datetime.date(1950, 1, 1), 100 * 365
CHARS = sorted(set("0123456789 ,./-").union(*(set(name + name.lower()) for name in MONTHS + WEEKDAYS)))
PAD, START, END = len(CHARS), len(CHARS) + 1, len(CHARS) + 2
VOCAB = len(CHARS) + 3
INDEX = {c: i for i, c in enumerate(CHARS)}
TARGET_LENGTH = len("2026-11-30") + 1  # and END


class BahdanauAttention(torch.nn.Module):
    """context = sum_j softmax_j(v . tanh(w_query q + w_key k_j)) values_j, in plain torch.

    query [B, query_dim] (one decoder step); keys [B, L, key_dim]; values [B, L, Dv]
    (default: keys); mask [B, L] bool, True = attend. Returns (context [B, Dv], weights
    [B, L] when need_weights, else None). Parameters, init and call as
    seqops.nn.AdditiveAttention's, so that the seqops one can stand in for it."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int):
        super().__init__()
        self.w_query = torch.nn.Linear(query_dim, hidden_dim)
        self.w_key = torch.nn.Linear(key_dim, hidden_dim)
        self.v = torch.nn.Parameter(torch.empty(hidden_dim).uniform_(-hidden_dim ** -0.5, hidden_dim ** -0.5))

    def forward(self, query, keys, values=None, mask=None, need_weights=False):
        scores = torch.tanh(self.w_query(query).unsqueeze(1) + self.w_key(keys)) @ self.v  # [B, L]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(-1)
        context = (weights.unsqueeze(-1) * (keys if values is None else values)).sum(1)
        return context, (weights if need_weights else None)


class DateTranslator(torch.nn.Module):
    def __init__(self, embed: int, hidden: int, attention: int):
        super().__init__()
        self.source_embed = torch.nn.Embedding(VOCAB, embed, padding_idx=PAD)
        self.encoder = torch.nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.bridge = torch.nn.Linear(2 * hidden, hidden)  # the encoder's last states -> the decoder's first
        self.target_embed = torch.nn.Embedding(VOCAB, embed)
        self.attention = BahdanauAttention(hidden, 2 * hidden, attention)
        self.decoder = torch.nn.GRUCell(embed + 2 * hidden, hidden)
        self.head = torch.nn.Linear(hidden + 2 * hidden, VOCAB)

    def encode(self, source, lengths):
        """source [B, S] padded, lengths [B] (CPU) -> (keys [B, S, 2H], mask [B, S], state [B, H])."""
        packed = pack_padded_sequence(self.source_embed(source), lengths, batch_first=True, enforce_sorted=False)
        output, h_n = self.encoder(packed)
        keys, _ = pad_packed_sequence(output, batch_first=True, total_length=source.shape[1])
        return keys, source != PAD, torch.tanh(self.bridge(torch.cat([h_n[0], h_n[1]], -1)))

    def step(self, previous, state, keys, mask, need_weights=False):
        """One decoder step: previous [B] characters, state [B, H] -> (logits [B, V], state, weights)."""
        context, weights = self.attention(state, keys, mask=mask, need_weights=need_weights)
        state = self.decoder(torch.cat([self.target_embed(previous), context], -1), state)
        return self.head(torch.cat([state, context], -1)), state, weights

    def forward(self, source, lengths, target_in):
        """Teacher forcing: target_in [B, T] (START then the target) -> logits [B, T, V]."""
        keys, mask, state = self.encode(source, lengths)
        logits = []
        for t in range(target_in.shape[1]):
            step_logits, state, _ = self.step(target_in[:, t], state, keys, mask)
            logits.append(step_logits)
        return torch.stack(logits, 1)


def seqops_twin(model: DateTranslator) -> DateTranslator:
    """The model on seqops: its GRUs by seqops.patch, its attention by seqops.nn.AdditiveAttention
    holding the same parameters (see the module's docstring)."""
    seqops.patch(model)
    model.attention = shared_additive_attention(model.attention)
    return model


def shared_additive_attention(attention: BahdanauAttention) -> seqops.nn.AdditiveAttention:
    hidden_dim, query_dim = attention.w_query.weight.shape
    twin = seqops.nn.AdditiveAttention(query_dim, attention.w_key.in_features, hidden_dim, device="meta")
    twin.load_state_dict(attention.state_dict(keep_vars=True), assign=True)  # the same tensors, no copy
    return twin


SEQOPS_TWIN = Route("seqops.patch(model); model.attention = seqops.nn.AdditiveAttention(same parameters)",
                    prepare=seqops_twin)


def encoded(text: str) -> list:
    return [INDEX[c] for c in text]


def date_batches(batch: int, count: int, generator: torch.Generator, device) -> list:
    """(source [B, S] padded, lengths [B] on the CPU as packing wants them, decoder input
    [B, T], target [B, T]): random dates from 1950 to 2049 in a random format; the target
    is the ISO date then END."""
    out = []
    for _ in range(count):
        days = torch.randint(0, DAYS, (batch,), generator=generator).tolist()
        formats = torch.randint(0, len(FORMATS), (batch,), generator=generator).tolist()
        dates = [FIRST_DAY + datetime.timedelta(days=d) for d in days]
        sources = [encoded(FORMATS[f](d)) for f, d in zip(formats, dates)]
        lengths = torch.tensor([len(s) for s in sources])
        source = torch.full((batch, int(lengths.max())), PAD)
        for row, s in enumerate(sources):
            source[row, :len(s)] = torch.tensor(s)
        target = torch.tensor([encoded(d.isoformat()) + [END] for d in dates])
        target_in = torch.cat([torch.full((batch, 1), START), target[:, :-1]], 1)
        out.append((source.to(device), lengths, target_in.to(device), target.to(device)))
    return out


def loss_of(model, batch):
    source, lengths, target_in, target = batch
    return F.cross_entropy(model(source, lengths, target_in).flatten(0, 1).float(), target.flatten())


@torch.no_grad()
def translate(model, text: str, device) -> tuple[str, torch.Tensor]:
    """Greedy decoding: the ISO date `model` writes for `text`, and the attention weights of
    each character it wrote [T_out, len(text)]."""
    model.eval()
    source = torch.tensor([encoded(text)], device=device)
    keys, mask, state = model.encode(source, torch.tensor([len(text)]))
    previous, written, weights = torch.tensor([START], device=device), [], []
    for _ in range(TARGET_LENGTH):
        logits, state, step_weights = model.step(previous, state, keys, mask, need_weights=True)
        previous = logits.argmax(-1)
        if previous.item() == END:
            break
        written.append(CHARS[previous.item()] if previous.item() < len(CHARS) else "?")
        weights.append(step_weights[0].float().cpu())
    model.train()
    return "".join(written), torch.stack(weights) if weights else torch.zeros(0, len(text))


def plot_attention(samples: list, path: str) -> None:
    """One heat map per (source, output, weights [T_out, S]) into `path`, if matplotlib is there."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: no attention picture)")
        return
    figure, axes = plt.subplots(1, len(samples), figsize=(4.5 * len(samples), 3.5), squeeze=False)
    for ax, (text, written, weights) in zip(axes[0], samples):
        ax.imshow(weights.numpy(), cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set_xticks(range(len(text)), list(text))
        ax.set_yticks(range(len(written)), list(written))
        ax.set_xlabel("source")
        ax.set_title(f"{text} -> {written}", fontsize=9)
    axes[0][0].set_ylabel("written")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"attention weights (seqops twin): {path}")


def main(argv=None):
    args = arguments(__doc__.split("\n\n")[0], argv,
                     extra=lambda parser: parser.add_argument("--plot", metavar="PNG",
                                                              help="save the attention weights of a few dates"))
    if args.dtype != torch.float32:
        # torch's cells and Linear layers cast to the autocast dtype; seqops' cells and
        # additive attention take one dtype as given and refuse the mix (the attention's
        # query comes from a bf16 Linear, its keys from the fp32 encoder).
        raise SystemExit("seq2seq_attention: --dtype float32 only: seqops.gru_cell and seqops.additive_attention "
                         "do not follow torch.autocast yet")
    size, steps = size_and_steps(args, SMALL, FULL)
    model = DateTranslator(size["embed"], size["hidden"], size["attention"]).to(args.device)
    data = date_batches(size["batch"], min(steps, 64), torch.Generator().manual_seed(args.seed), args.device)
    torch_run, seqops_run, twin = side_by_side("GRU seq2seq with additive attention", model, SEQOPS_TWIN, data,
                                               loss_of, args, steps, size["lr"])
    if not args.quiet:
        samples = []
        for date, style in ((datetime.date(2026, 11, 30), 0), (datetime.date(1969, 7, 20), 1),
                            (datetime.date(2001, 2, 3), 3), (datetime.date(1987, 10, 9), 4)):
            text = FORMATS[style](date)
            written, weights = translate(twin, text, args.device)
            print(f"{text!r:>22} -> {written}   (expected {date.isoformat()})")
            samples.append((text, written, weights))
        if args.plot:
            plot_attention(samples, args.plot)
    return torch_run, seqops_run


if __name__ == "__main__":
    main()
