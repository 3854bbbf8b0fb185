"""SmolLM2-135M and Gemma 3 270M from their GGUF files against transformers.

Both sides load the same GGUF: ours through `load_model`, transformers through
`AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)`, which has its
own metadata-to-config mapping and undoes llama.cpp's Q/K permutation and
Gemma's 1 + w norms itself. Each model is loaded once per module.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snmf_jax.models import PRESETS, as_arrays, load_model, params_from_hf

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    if",
           "Once upon a time, a little robot"]
N_NEW = 8


def _load_pair(name):
    preset = PRESETS[name]
    if not preset.available():
        pytest.skip(f"{preset.package} is not installed ({preset.install})")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("transformers needs accelerate to load GGUF files (pip install accelerate)")
    path = preset.path()
    ours = load_model(name, progress=False)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return ours, theirs


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def pair(request):
    return request.param, *_load_pair(request.param)


def test_params_match_transformers_state_dict(pair):
    """Dequantized weights, names, layout and norm convention agree exactly."""
    name, ours, theirs = pair
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    ref = params_from_hf(ours.config, state)
    got = jax.tree_util.tree_leaves_with_path(as_arrays(ours.params))
    want = jax.tree_util.tree_leaves_with_path(ref)
    assert [p for p, _ in got] == [p for p, _ in want]
    for (path, a), (_, b) in zip(got, want):
        assert a.shape == b.shape, (name, jax.tree_util.keystr(path))
        # Gemma norms: transformers stores w = (1 + w) - 1, we keep 1 + w.
        err = float(jnp.max(jnp.abs(a - b)))
        assert err <= 1e-6, (name, jax.tree_util.keystr(path), err)


def test_logits_match_transformers(pair):
    import torch

    name, ours, theirs = pair
    batch = [ours.tokenizer.encode(p) for p in PROMPTS]
    width = max(map(len, batch))
    # Left-padded batch: positions come from the mask, so padding is invisible.
    pad = ours.tokenizer.pad_id or 0
    tokens = np.array([[pad] * (width - len(b)) + b for b in batch], np.int32)
    mask = np.array([[0] * (width - len(b)) + [1] * len(b) for b in batch], np.int32)
    logits = np.asarray(ours.forward(tokens, attention_mask=mask).logits)
    worst = 0.0
    for row, ids in enumerate(batch):
        with torch.inference_mode():
            expected = theirs(torch.tensor([ids])).logits[0].numpy()
        got = logits[row, width - len(ids):]
        worst = max(worst, float(np.abs(got - expected).max()))
        np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))
    assert worst <= 1e-3, f"{name}: max |delta logit| = {worst:.2e}"


def test_greedy_continuation_matches_transformers(pair):
    import torch

    name, ours, theirs = pair
    ids = ours.tokenizer.encode(PROMPTS[0])
    # One compiled shape: a right-padded buffer filled one token at a time
    # (causal attention never looks at the padding after the last token).
    buf = np.zeros((1, len(ids) + N_NEW), np.int32)
    buf[0, :len(ids)] = ids
    for t in range(len(ids), len(ids) + N_NEW):
        logits = ours.forward(buf).logits
        buf[0, t] = int(np.argmax(np.asarray(logits[0, t - 1])))
    with torch.inference_mode():
        out = theirs.generate(torch.tensor([ids]), max_new_tokens=N_NEW, do_sample=False,
                              attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              pad_token_id=ours.tokenizer.pad_id)
    expected = out[0].tolist()
    got = buf[0].tolist()[:len(expected)]
    assert got == expected, (f"{name}: ours {ours.tokenizer.decode(got)!r} vs "
                             f"transformers {ours.tokenizer.decode(expected)!r}")
