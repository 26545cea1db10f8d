"""Model engine: loading, hooks across mlx-lm architectures, splicing, and errors."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from support import ARCHITECTURES, make_model_dir

from saetui.engine.errors import UserError
from saetui.engine.model import Hook, canonical_component, load_model

TOKENS = mx.array([[1, 17, 42, 99, 7, 23, 64, 5]])


@pytest.fixture(scope="module", params=[(arch, False) for arch in ARCHITECTURES] + [("llama", True), ("qwen3", True)], ids=lambda p: f"{p[0]}{'-4bit' if p[1] else ''}")
def runner(request, tmp_path_factory):
    arch, quantize = request.param
    folder = make_model_dir(tmp_path_factory.mktemp(arch), arch, layers=3, quantize=quantize)
    return load_model(str(folder))


def test_hooks_capture_every_component(runner):
    for comp in ("mlp", "attn", "resid"):
        acts = runner.activations(TOKENS, runner.check_hook(1, comp))
        assert acts.shape == (1, 8, 64)
        assert bool(mx.all(mx.isfinite(acts)))


def test_capture_stops_at_the_hook(runner):
    """The layers after the hook do not run when only activations are wanted."""
    calls = []
    later = runner.layers[2]

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, *a, **kw):
            calls.append(1)
            return self.inner(*a, **kw)

    runner.layers[2] = Spy(later)
    try:
        runner.activations(TOKENS, runner.check_hook(1, "resid"))
        assert calls == []
        runner.logits(TOKENS)
        assert calls == [1]
    finally:
        runner.layers[2] = later


def test_identity_splice_is_the_clean_model_and_zero_splice_changes_it(runner):
    clean = runner.logits(TOKENS)
    for comp in ("mlp", "attn", "resid"):
        hook = runner.check_hook(1, comp)
        same = runner.logits(TOKENS, hook, replace=lambda x: x)
        np.testing.assert_allclose(np.array(same), np.array(clean), atol=1e-5)
        zeroed = runner.logits(TOKENS, hook, replace=lambda x: mx.zeros_like(x))
        assert float(mx.abs(zeroed - clean).max()) > 1e-3
    # The hook is removed afterwards.
    np.testing.assert_allclose(np.array(runner.logits(TOKENS)), np.array(clean), atol=1e-6)


def test_logits_and_activations_records_the_clean_activation(runner):
    hook = runner.check_hook(1, "mlp")
    logits, acts = runner.logits_and_activations(TOKENS, hook, replace=lambda x: x * 0)
    np.testing.assert_allclose(np.array(acts), np.array(runner.activations(TOKENS, hook)), atol=1e-5)
    np.testing.assert_allclose(np.array(logits), np.array(runner.logits(TOKENS, hook, lambda x: x * 0)), atol=1e-5)


def test_output_head_reachable(runner):
    assert runner.unembed(mx.zeros((1, 64))).shape == (1, runner.vocab_size)
    assert runner.final_norm_weight() is not None


def test_llama_components_add_up_to_the_residual_stream(tmp_path):
    """Independent check of what each hook captures: resid_L = resid_{L-1} + attn_L + mlp_L."""
    runner = load_model(str(make_model_dir(tmp_path / "m", "llama")))
    r0 = runner.activations(TOKENS, Hook(0, "resid"))
    r1 = runner.activations(TOKENS, Hook(1, "resid"))
    a1 = runner.activations(TOKENS, Hook(1, "attn"))
    m1 = runner.activations(TOKENS, Hook(1, "mlp"))
    np.testing.assert_allclose(np.array(r1), np.array(r0 + a1 + m1), atol=1e-4)
    # and the last residual, normed and unembedded, is the model's logits
    last = runner.activations(TOKENS, Hook(runner.n_layers - 1, "resid"))
    logits = runner.unembed(runner.model.model.norm(last))
    np.testing.assert_allclose(np.array(logits), np.array(runner.logits(TOKENS)), atol=1e-4)


def test_component_spellings():
    assert canonical_component("self_attn") == "attn"
    assert canonical_component("residual") == "resid"
    with pytest.raises(UserError, match="Unknown component 'ffn'"):
        canonical_component("ffn")


def test_layer_out_of_range(tiny_model_dir):
    runner = load_model(str(tiny_model_dir))
    with pytest.raises(UserError, match="Layer 7 is out of range: .* has 3 layers"):
        runner.check_hook(7, "mlp")


def test_model_path_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an mlx-lm model directory"):
        load_model(str(tmp_path / "empty"))


def test_uncached_hub_model_says_how_to_get_it():
    with pytest.raises(UserError, match="not in the local Hugging Face cache.*huggingface-cli download saetui-test/none"):
        load_model("saetui-test/none")


def test_missing_local_model():
    with pytest.raises(UserError, match="Model not found"):
        load_model("./no/such/model")


def test_variants_replay_the_prefix_and_match_full_splices(runner):
    """Batched variants that skip the layers before the hook give the same logits as whole passes."""
    for comp in ("mlp", "attn", "resid"):
        for layer in (0, 2):
            hook = runner.check_hook(layer, comp)
            clean = runner.clean_pass(TOKENS, hook)
            np.testing.assert_allclose(np.array(clean.logits), np.array(runner.logits(TOKENS)), atol=1e-4)
            fns = [lambda x: x * 0.5, lambda x: mx.zeros_like(x)]
            variants = runner.variant_logits(TOKENS, hook, clean, fns)
            for fn, got in zip(fns, variants):
                want = runner.logits(TOKENS, hook, replace=fn)
                np.testing.assert_allclose(np.array(got), np.array(want), atol=2e-3, rtol=1e-3)
