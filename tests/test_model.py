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


# -- hook names (sae-formats spec §5) and the Gemma capture point ------------------------------------

from saetui.engine.model import HookSite, UnknownHookName, hf_model_candidates, hook_from_name  # noqa: E402


@pytest.mark.parametrize(
    "name,site",
    [
        ("blocks.12.hook_resid_post", HookSite(12, "resid")),
        ("blocks.6.hook_resid_pre", HookSite(5, "resid")),
        ("blocks.3.hook_mlp_out", HookSite(3, "mlp", post_norm=True)),
        ("blocks.5.hook_attn_out", HookSite(5, "attn", post_norm=True)),
        ("layers.4", HookSite(4, "resid")),
        ("model.layers.7", HookSite(7, "resid")),
        ("h.2", HookSite(2, "resid")),
        ("transformer.h.2", HookSite(2, "resid")),
        ("gpt_neox.layers.1", HookSite(1, "resid")),
        ("layers.4.mlp", HookSite(4, "mlp")),
        ("model.layers.4.mlp", HookSite(4, "mlp")),
        ("h.0.mlp", HookSite(0, "mlp")),
        ("layers.3.self_attn", HookSite(3, "attn")),
        ("gpt_neox.layers.3.attention", HookSite(3, "attn")),
        ("transformer.h.9.attn", HookSite(9, "attn")),
    ],
)
def test_hook_names_map_to_layer_and_component(name, site):
    assert hook_from_name(name) == site


@pytest.mark.parametrize(
    "name",
    [
        "blocks.0.hook_resid_pre", "blocks.3.hook_resid_mid", "blocks.2.attn.hook_z", "blocks.2.attn.hook_q",
        "blocks.2.attn.hook_result", "blocks.1.mlp.hook_post", "blocks.1.mlp.hook_pre", "blocks.1.ln1.hook_normalized",
        "blocks.1.hook_mlp_in", "hook_embed", "hook_pos_embed", "embed_tokens", "model.embed_tokens", "gpt_neox.embed_in",
        "transformer.wte", "h.3.mlp.act", "layers.3.mlp.act_fn", "model.layers.2.self_attn.o_proj",
    ],
)
def test_out_of_scope_hooks_are_refused(name):
    with pytest.raises(UserError, match="is not a residual, MLP or attention output") as info:
        hook_from_name(name)
    assert not isinstance(info.value, UnknownHookName) and "Pick an SAE" in info.value.fix


def test_unreadable_hook_name_asks_for_flags():
    with pytest.raises(UnknownHookName, match="cannot tell the layer and component from hook 'my_hook'.*--layer and --component"):
        hook_from_name("my_hook")


def test_transformerlens_model_names_map_to_hub_ids():
    assert hf_model_candidates("gemma-2-2b") == ["google/gemma-2-2b", "mlx-community/gemma-2-2b"]
    assert hf_model_candidates("pythia-70m-deduped")[0] == "EleutherAI/pythia-70m-deduped"
    assert hf_model_candidates("meta-llama/Llama-3.1-8B") == ["meta-llama/Llama-3.1-8B"]
    with pytest.raises(UserError, match=r"gemma-2-2b \(the TransformerLens name of google/gemma-2-2b\) is not in the local.*--model"):
        load_model("gemma-2-2b")
    with pytest.raises(UserError, match="Model not found: tiny-stories-unknown .*neither a local directory"):
        load_model("tiny-stories-unknown")


def test_hub_id_with_shell_characters_is_not_offered_as_a_command():
    with pytest.raises(UserError) as info:
        load_model("evil/x;rm -rf ~")
    assert "huggingface-cli" not in info.value.fix


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory):
    return load_model(str(make_model_dir(tmp_path_factory.mktemp("gemma2"), "gemma2", layers=3)))


def test_gemma_post_norm_capture_point(gemma2):
    """TransformerLens's hook_mlp_out/hook_attn_out on Gemma 2 lie after the post-norms:
    resid_L = resid_{L-1} + post_attention_layernorm(attn_L) + post_feedforward_layernorm(mlp_L)."""
    runner = gemma2
    r0 = runner.activations(TOKENS, Hook(0, "resid"))
    r1 = runner.activations(TOKENS, Hook(1, "resid"))
    attn_post = runner.activations(TOKENS, runner.check_hook(1, "attn", post_norm=True))
    mlp_post = runner.activations(TOKENS, runner.check_hook(1, "mlp", post_norm=True))
    np.testing.assert_allclose(np.array(r1), np.array(r0 + attn_post + mlp_post), atol=1e-4)
    # By hand: the post-norm applied to the module outputs (what mlxterp's hooks capture).
    layer = runner.layers[1]
    attn_mod = runner.activations(TOKENS, runner.check_hook(1, "attn"))
    mlp_mod = runner.activations(TOKENS, runner.check_hook(1, "mlp"))
    w_ff = np.array(layer.post_feedforward_layernorm.weight)
    m = np.array(mlp_mod, dtype=np.float64)
    rms = np.sqrt((m * m).mean(-1, keepdims=True) + layer.post_feedforward_layernorm.eps)
    np.testing.assert_allclose(np.array(mlp_post), m / rms * (1.0 + w_ff), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.array(attn_post), np.array(layer.post_attention_layernorm(attn_mod)), atol=1e-5)
    assert float(mx.abs(mlp_post - mlp_mod).max()) > 1e-3
    # Splicing at the post-norm point: identity is the clean model.
    clean = runner.logits(TOKENS)
    same = runner.logits(TOKENS, runner.check_hook(1, "mlp", post_norm=True), replace=lambda x: x)
    np.testing.assert_allclose(np.array(same), np.array(clean), atol=1e-4)


def test_post_norm_is_the_module_output_without_post_norms(tiny_model_dir):
    runner = load_model(str(tiny_model_dir))  # llama: its post_attention_layernorm is the pre-MLP norm
    a = runner.activations(TOKENS, runner.check_hook(1, "mlp", post_norm=True))
    b = runner.activations(TOKENS, runner.check_hook(1, "mlp"))
    np.testing.assert_allclose(np.array(a), np.array(b), atol=0)
    a = runner.activations(TOKENS, runner.check_hook(1, "attn", post_norm=True))
    b = runner.activations(TOKENS, runner.check_hook(1, "attn"))
    np.testing.assert_allclose(np.array(a), np.array(b), atol=0)
