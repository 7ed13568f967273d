"""attn_implementation="seqops" in Hugging Face transformers
(seqops.integrations.transformers): small models built from configs (random weights, no
downloads) give the logits and gradients of "eager" with padded batches, generate the same
tokens with a KV cache, and really run seqops (its calls counted).

The four kinds of model the integration is for: Llama-style (grouped-query attention, left
padding), GPT-2 (left padding), BERT-style (right padding, bidirectional), T5-style
(encoder padding, causal decoder, cross-attention, relative position bias as a float mask
with its gradient). Skipped without transformers.
"""
import collections
import contextlib
import copy
import subprocess
import sys

import pytest
import torch

import seqops
from accuracy import EPS, assert_within_torch_error, relative_error
from calls import counting_seqops_calls
from devices import skip_unless_runnable
from seqops import dispatch

transformers = pytest.importorskip("transformers")
from seqops.integrations import transformers as seqops_transformers  # noqa: E402

seqops_transformers.register()
transformers.logging.set_verbosity_error()

VOCAB = 100
# float64 agreement with the comparator: rounding only, a few float64 epsilons over the
# model's depth; measured worst 2e-15 over every logit and gradient of the four models.
FLOAT64_TOLERANCE = 100 * EPS[torch.float64]


def llama():
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return transformers.LlamaForCausalLM(config)


def gpt2():
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return transformers.GPT2LMHeadModel(config)


def bert():
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForMaskedLM(config)


def t5():
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        dropout_rate=0.0, relative_attention_num_buckets=8, relative_attention_max_distance=16,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return transformers.T5ForConditionalGeneration(config)


def left_padded(lengths, total):
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, total - length:] = 1
    return mask


def right_padded(lengths, total):
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return mask


def token_ids(mask):
    """Random tokens where mask is 1, the pad token 0 elsewhere."""
    return torch.randint(3, VOCAB, mask.shape) * mask


def decoder_batch(padded=True, total=8):
    mask = left_padded((total, 5, 2) if padded else (total,) * 3, total)
    return dict(input_ids=token_ids(mask), attention_mask=mask), mask


def encoder_batch(padded=True, total=8):
    mask = right_padded((total, 5, 2) if padded else (total,) * 3, total)
    return dict(input_ids=token_ids(mask), attention_mask=mask), mask


def encoder_decoder_batch(padded=True):
    """Encoder padding, and decoder targets of different lengths (right-padded, as
    labels are)."""
    source = right_padded((7, 4) if padded else (7, 7), 7)
    target = right_padded((5, 3) if padded else (5, 5), 5)
    target_ids = token_ids(target)
    target_ids[:, 0] = 0  # the decoder start token
    inputs = dict(input_ids=token_ids(source), attention_mask=source, decoder_input_ids=target_ids,
                  decoder_attention_mask=target)
    return inputs, target


class Case:
    """One model kind: how to build it, and a batch for it (batch(padded) -> (inputs, the
    mask of real positions whose logits are compared)).

    comparator: the implementation seqops is held to in float64. "eager", except for
        Llama, whose eager attention computes its softmax in float32 whatever the model's
        dtype: at float64 it is neither float64-accurate nor, with left padding, finite
        (the float64 minimum its mask adds becomes -inf in float32, a padding row's
        softmax NaN, and the next layer's 0 * NaN spreads it), so Llama's float64
        comparator is "sdpa" (torch's own SDPA in float64); in float32 every model is
        compared with eager.
    attention_calls: attention layers one forward pass runs.
    zero_gradients: parameters whose gradient is zero by the math, only rounding noise in
        any implementation (BERT's key bias: it adds one number to every score of a row,
        which the softmax ignores); each is judged together with its layer's weight, on
        that gradient's scale, since noise against noise says nothing.
    float32_trials: batches the float32 test pools each result over (tests/accuracy.py's
        pooling): a gradient's error over one batch is a sample of few roundings, coherent
        over a weight's entries. T5 pools two: its decoder's position-bias table has about
        20 entries with a gradient, and its error ratio over one batch reached 0.9 of the
        rule's bound in 24 draws (0.84 over 12 draws of two batches; the other models,
        one batch, 0.71 over 10).
    """

    def __init__(self, name, build, batch, attention_calls, comparator="eager", zero_gradients=(),
                 float32_trials=1):
        self.name, self.build, self.batch = name, build, batch
        self.attention_calls, self.comparator, self.zero_gradients = attention_calls, comparator, zero_gradients
        self.float32_trials = float32_trials

    def __repr__(self):
        return self.name


CASES = [
    Case("llama", llama, decoder_batch, 2, comparator="sdpa"),
    Case("gpt2", gpt2, decoder_batch, 2),
    Case("bert", bert, encoder_batch, 2, zero_gradients=("attention.self.key.bias",)),
    Case("t5", t5, encoder_decoder_batch, 6, float32_trials=2),  # encoder self; decoder self and cross
]


def with_attention(model, implementation, dtype):
    """A copy of `model` (the same weights) in `dtype` running `implementation`."""
    twin = copy.deepcopy(model).to(dtype)
    twin.set_attn_implementation(implementation)
    assert twin.config._attn_implementation == implementation
    return twin


def logits_and_gradients(model, inputs, real, weights):
    """Logits at the real (unpadded) positions, and every parameter's gradient of a loss
    over those positions only (a fixed random weighting of the logits, so that every
    logit's gradient differs); both flattened per name."""
    model.zero_grad(set_to_none=True)
    logits = model(**inputs).logits
    (logits * weights.to(logits.dtype) * real[..., None]).sum().backward()
    results = {"logits": logits.detach()[real.bool()]}
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        results[name] = parameter.grad.detach().flatten()
    return results


def fold_zero_gradients(case, results):
    """Each gradient that is zero by the math joined to its layer's weight gradient."""
    results = dict(results)
    for name in list(results):
        if case.zero_gradients and name.endswith(case.zero_gradients):
            weight = name[: -len("bias")] + "weight"
            results[weight] = torch.cat([results[weight], results.pop(name)])
    return results


@pytest.fixture(scope="module")
def models():
    """Each case's model (float32, eval: no dropout), built once from a fixed seed."""
    built = {}
    for case in CASES:
        torch.manual_seed(len(built))
        built[case.name] = case.build().eval()
    return built


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_float64_matches_eager(models, case, backend, padded):
    """float64, on seqops' torch and reference backends: logits at every real position
    and every parameter's gradient equal the comparator's to rounding; and at padding
    positions too, against "sdpa" (a left-padded causal batch's padding rows see no key:
    seqops gives 0 there as sdpa does, eager the mean of the values). Without padding,
    transformers builds no mask: causal attention comes as is_causal (T5's decoder: with
    its position bias as a float mask beside it)."""
    inputs, real = case.batch(padded)
    weights = torch.randn(*real.shape, VOCAB, dtype=torch.float64)
    comparator = with_attention(models[case.name], case.comparator, torch.float64)
    ours = with_attention(models[case.name], "seqops", torch.float64)
    expected = fold_zero_gradients(case, logits_and_gradients(comparator, inputs, real, weights))
    with seqops.backend(backend), counting_seqops_calls() as calls:
        got = fold_zero_gradients(case, logits_and_gradients(ours, inputs, real, weights))
        everywhere = ours(**inputs).logits
    assert calls == {("attention", backend): 2 * case.attention_calls}, calls
    errors = {name: relative_error(got[name], expected[name]) for name in expected}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= FLOAT64_TOLERANCE, f"{case.name} {worst}: relative error {errors[worst]:.2e}"
    with torch.no_grad():
        sdpa = with_attention(models[case.name], "sdpa", torch.float64)(**inputs).logits
    assert relative_error(everywhere, sdpa) <= FLOAT64_TOLERANCE


def torchs_float32(name, expected, implementations):
    """torch's own float32 result for `name`: of its implementations of the model
    (transformers' "eager" composition and "sdpa", torch's fused op), the one farther from
    the float64 result. At the level of a whole model, one rounding of equal accuracy
    differs from another by up to 1.7x in a gradient's error (measured: T5, "sdpa" against
    "eager", whose attention ops are equally accurate alone), so a single implementation is
    too noisy a yardstick for the 2x rule."""
    return max((results[name] for results in implementations), key=lambda out: relative_error(out, expected[name]))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_float32_triton_within_torchs_error(models, case):
    """float32 on the Triton kernels (the interpreter on the CPU): against the float64
    comparator, the error of the logits and of every gradient, pooled over
    case.float32_trials batches, is at most 2x torch's own float32 error (the rule of
    tests/accuracy.py; torch's error as torchs_float32 says)."""
    skip_unless_runnable("cpu", "triton")
    implementations = {"expected": (case.comparator, torch.float64), "eager": ("eager", torch.float32),
                       "sdpa": ("sdpa", torch.float32)}
    models_by_role = {role: with_attention(models[case.name], name, dtype)
                      for role, (name, dtype) in implementations.items()}
    ours = with_attention(models[case.name], "seqops", torch.float32)
    pooled = {role: collections.defaultdict(list) for role in (*implementations, "ours")}
    for _ in range(case.float32_trials):
        inputs, real = case.batch()
        weights = torch.randn(*real.shape, VOCAB, dtype=torch.float64)
        for role, model in models_by_role.items():
            for name, value in fold_zero_gradients(case, logits_and_gradients(model, inputs, real, weights)).items():
                pooled[role][name].append(value)
        with seqops.backend("triton"), counting_seqops_calls() as calls:
            got = fold_zero_gradients(case, logits_and_gradients(ours, inputs, real, weights))
        assert calls == {("attention", "triton"): case.attention_calls}, calls
        for name, value in got.items():
            pooled["ours"][name].append(value)
    results = {role: {name: torch.cat(values) for name, values in by_name.items()} for role, by_name in pooled.items()}
    expected = results["expected"]
    for name in expected:
        assert_within_torch_error(f"{case.name} {name}", results["ours"][name], expected[name],
                                  torchs_float32(name, expected, [results["eager"], results["sdpa"]]))


@contextlib.contextmanager
def recording_attention_lengths():
    """Yields a list of (backend, query length, key length), one per seqops attention call
    in the block: the proof that generation really decodes from a KV cache."""
    record = []
    choose = dispatch.select

    def select(op, device, *args, **kwargs):
        impl = choose(op, device, *args, **kwargs)
        if op == "attention":
            query, key = args[0], args[1]
            record.append((impl.backend, query.shape[-2], key.shape[-2]))
        return impl

    dispatch.select = select
    try:
        yield record
    finally:
        dispatch.select = choose


GENERATED = 4


def generate(model, inputs, cache):
    """Greedy generation of GENERATED tokens: (the sequences, every step's logits)."""
    out = model.generate(**inputs, max_new_tokens=GENERATED, min_new_tokens=GENERATED, do_sample=False,
                         pad_token_id=0, cache_implementation=cache, return_dict_in_generate=True,
                         output_logits=True)
    return out.sequences, torch.stack(out.logits)


@pytest.mark.parametrize("backend, cache", [("reference", "dynamic"), ("reference", "static"), ("triton", "dynamic")])
@pytest.mark.parametrize("case", CASES[:2], ids=repr)
def test_greedy_generation_with_kv_cache_matches_eager(models, case, backend, cache):
    """Greedy generation gives the comparator's tokens, and its logits at every step: the
    prompt in one pass, then one query at a time against the cached keys. A dynamic cache
    from a left-padded prompt; a static cache (keys of its full length, the slots not yet
    written masked) from an unpadded prompt, for which transformers passes no mask at all
    for the prompt: is_causal's upper-left alignment is what hides the empty slots there.
    On the reference backend in float64, logits to rounding; on Triton in float32, the
    tokens of eager (and sdpa) and logits within 2x torch's own float32 error. The prompt is fixed, so that no
    draw can put two logits within rounding of each other and make the test flaky."""
    skip_unless_runnable("cpu", backend)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        inputs, _ = case.batch(padded=cache == "dynamic")
    dtype = torch.float64 if backend == "reference" else torch.float32
    with torch.no_grad():
        expected, expected_logits = generate(with_attention(models[case.name], case.comparator, torch.float64),
                                             inputs, cache)
        with seqops.backend(backend), recording_attention_lengths() as lengths:
            got, logits = generate(with_attention(models[case.name], "seqops", dtype), inputs, cache)
        assert torch.equal(got, expected), f"{case.name}: seqops generated\n{got}\ninstead of\n{expected}"
        if dtype == torch.float64:
            assert relative_error(logits, expected_logits) <= FLOAT64_TOLERANCE
        else:
            torchs = []
            for implementation in ("eager", "sdpa"):
                tokens, torch_logits = generate(with_attention(models[case.name], implementation, dtype), inputs, cache)
                assert torch.equal(tokens, expected), f"{case.name}: {implementation} float32 generated\n{tokens}"
                torchs.append({"logits": torch_logits})
            assert_within_torch_error(f"{case.name} generation logits", logits, expected_logits,
                                      torchs_float32("logits", {"logits": expected_logits}, torchs))
    prompt = inputs["input_ids"].shape[1]
    layers = case.attention_calls
    if cache == "dynamic":
        steps = [(backend, prompt, prompt)] * layers + [
            (backend, 1, prompt + step) for step in range(1, GENERATED) for _ in range(layers)]
    else:
        full = prompt + GENERATED - 1
        steps = [(backend, prompt, full)] * layers + [(backend, 1, full)] * (layers * (GENERATED - 1))
    assert lengths == steps


def test_training_passes_attention_dropout():
    """In train() the model's attention dropout reaches seqops (it applies it when > 0);
    in eval() none does."""
    config = llama().config
    config.attention_dropout = 0.25
    model = transformers.LlamaForCausalLM(config)
    model.set_attn_implementation("seqops")
    dropouts = []
    choose = dispatch.select

    def select(op, device, *args, **kwargs):
        dropouts.append(args[4])  # query, key, value, attn_mask, dropout_p, ...
        return choose(op, device, *args, **kwargs)

    dispatch.select = select
    try:
        with torch.no_grad():
            model.train()(input_ids=torch.randint(3, VOCAB, (2, 5)))
            model.eval()(input_ids=torch.randint(3, VOCAB, (2, 5)))
    finally:
        dispatch.select = choose
    assert dropouts == [0.25, 0.25, 0.0, 0.0]


@pytest.mark.parametrize("case", CASES[:2], ids=repr)
def test_block_of_queries_after_kv_cache_matches_eager(models, case):
    """Several new queries at once after a cached prefix (their causal mask bottom-right
    aligned, with the left padding of the prefix), float64 on the reference backend."""
    inputs, _ = case.batch()
    new_tokens = torch.randint(3, VOCAB, (inputs["input_ids"].shape[0], 3))
    full_mask = torch.cat([inputs["attention_mask"], torch.ones_like(new_tokens)], dim=1)
    comparator = with_attention(models[case.name], case.comparator, torch.float64)
    ours = with_attention(models[case.name], "seqops", torch.float64)
    results = {}
    for model, backend in ((comparator, "torch"), (ours, "reference")):
        with torch.no_grad(), seqops.backend(backend), recording_attention_lengths() as lengths:
            cache = model(**inputs, use_cache=True).past_key_values
            results[backend] = model(input_ids=new_tokens, attention_mask=full_mask, cache=cache).logits
    prompt = inputs["input_ids"].shape[1]
    assert lengths[-case.attention_calls:] == [("reference", 3, prompt + 3)] * case.attention_calls
    assert relative_error(results["reference"], results["torch"]) <= FLOAT64_TOLERANCE


def test_attn_implementation_at_construction_runs_seqops():
    """attn_implementation="seqops" given when the model is built, as from_pretrained
    takes it."""
    config = llama().config
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="seqops")
    assert model.config._attn_implementation == "seqops"
    with torch.no_grad(), counting_seqops_calls() as calls:
        model(input_ids=torch.randint(3, VOCAB, (2, 5)))
    assert sum(n for (op, _), n in calls.items() if op == "attention") == 2, calls


def test_register_twice_is_harmless():
    seqops_transformers.register()
    seqops_transformers.register()
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    assert AttentionInterface._global_mapping["seqops"] is seqops_transformers.attention_forward
    assert "seqops" in AttentionMaskInterface._global_mapping


def test_register_without_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    with pytest.raises(ImportError, match=r"seqops\[transformers\]"):
        seqops_transformers.register()


def test_importing_seqops_does_not_import_transformers():
    code = ("import sys, seqops, seqops.integrations.transformers; "
            "assert 'transformers' not in sys.modules, 'seqops imported transformers'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kwargs, error", [
    (dict(softcap=30.0), "softcap"),
    (dict(s_aux=torch.zeros(4)), "s_aux"),
    (dict(output_attentions=True), "output_attentions"),
])
def test_refuses_what_it_does_not_compute(kwargs, error):
    q = k = v = torch.randn(1, 4, 3, 8)
    with pytest.raises(ValueError, match=error):
        seqops_transformers.attention_forward(torch.nn.Module(), q, k, v, None, **kwargs)
