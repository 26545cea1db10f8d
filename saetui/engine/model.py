"""Language models: loading mlx-lm models and reading/writing activations at a hook.

A hook is (layer, component) inside `model.layers[layer]`, named as mlxterp names it:
`mlp` (the MLP block's output, before the residual add), `attn`/`self_attn` (the
attention block's output) and `resid`/`residual` (the layer's own output, i.e. the
residual stream after the block). `ModelRunner` wraps the hooked module for the
duration of one call, so the real forward pass of every mlx-lm architecture is used
as is; nothing is re-implemented per architecture.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import mlx.core as mx
import mlx.nn as nn

from .errors import UserError

COMPONENTS = {
    "mlp": "mlp",
    "attn": "attn",
    "self_attn": "attn",
    "resid": "resid",
    "residual": "resid",
}
# Attribute names under which mlx-lm architectures keep each block.
_BLOCK_ATTRIBUTES = {
    "mlp": ("mlp", "feed_forward", "block_sparse_moe", "ffn"),
    "attn": ("self_attn", "attention", "attn"),
}

DEMO_MODEL_NAME = "saetui-demo"


def canonical_component(component: str) -> str:
    """`mlp`, `attn` or `resid` for any accepted spelling; UserError otherwise."""
    key = (component or "").strip().lower()
    if key not in COMPONENTS:
        raise UserError(
            f"Unknown component {component!r}",
            "Use --component mlp, attn (or self_attn) or resid (or residual)",
        )
    return COMPONENTS[key]


@dataclass(frozen=True)
class Hook:
    layer: int
    component: str  # canonical: mlp / attn / resid
    # mlp/attn only: capture the block's contribution as added to the residual stream,
    # i.e. after Gemma 2/3's post_feedforward/post_attention norms (TransformerLens's
    # hook_mlp_out/hook_attn_out). Models without post-norms: the module output either way.
    post_norm: bool = False

    def __str__(self) -> str:
        return f"layer {self.layer} {self.component}"


# -- hook names (spec sae-formats.md §5) -----------------------------------------------------

_TL_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_mlp_out|hook_attn_out)$")
_HF_HOOK = re.compile(r"^(?:(?:model|transformer|gpt_neox)\.)?(?:layers|h)\.(\d+)(?:\.(mlp|self_attn|attention|attn))?$")
_HF_COMPONENT = {None: "resid", "mlp": "mlp", "self_attn": "attn", "attention": "attn", "attn": "attn"}
# Names that are hooks, just not ones saetui captures.
_OUT_OF_SCOPE = re.compile(
    r"^(?:blocks\.\d+\..+|hook_embed|hook_pos_embed|hook_tokens|ln_final\..*"
    r"|(?:(?:model|transformer|gpt_neox)\.)?(?:embed_tokens|embed_in|wte|wpe|embed_positions|norm|ln_f|final_layernorm)(?:\..*)?"
    r"|(?:(?:model|transformer|gpt_neox)\.)?(?:layers|h)\.\d+\..+)$"
)


@dataclass(frozen=True)
class HookSite:
    """Where an SAE's hook name points: saetui's (layer, component), and the capture point."""

    layer: int
    component: str
    post_norm: bool = False


class UnknownHookName(UserError):
    """A hook name saetui cannot read (not one it refuses): --layer and --component can stand in."""


def _hook_out_of_scope(name: str, why: str = "") -> UserError:
    from ..ui.safe_text import visible

    return UserError(
        f"hook '{visible(name)[:200]}' is not a residual, MLP or attention output{why}",
        "Pick an SAE trained on one of those",
    )


def hook_from_name(name: str) -> HookSite:
    """(layer, component) for a TransformerLens hook name or a Hugging Face module path.

    TransformerLens: blocks.L.hook_resid_post -> (L, resid); hook_resid_pre -> (L-1, resid);
    hook_mlp_out / hook_attn_out -> (L, mlp/attn) after any post-norm. Module paths:
    [model.|transformer.|gpt_neox.](layers|h).L[.mlp|.self_attn|.attention|.attn] -> the
    module's output. Everything else is refused: `UserError` for hooks saetui does not
    capture, `UnknownHookName` for names it cannot read at all.
    """
    from ..ui.safe_text import visible

    m = _TL_HOOK.match(name)
    if m:
        layer, site = int(m.group(1)), m.group(2)
        if site == "hook_resid_post":
            return HookSite(layer, "resid")
        if site == "hook_resid_pre":
            if layer == 0:
                raise _hook_out_of_scope(name, " (blocks.0.hook_resid_pre is the embeddings)")
            return HookSite(layer - 1, "resid")
        if site == "hook_mlp_out":
            return HookSite(layer, "mlp", post_norm=True)
        if site == "hook_attn_out":
            return HookSite(layer, "attn", post_norm=True)
        raise _hook_out_of_scope(name)  # hook_resid_mid
    m = _HF_HOOK.match(name)
    if m:
        return HookSite(int(m.group(1)), _HF_COMPONENT[m.group(2)])
    if _OUT_OF_SCOPE.match(name):
        raise _hook_out_of_scope(name)
    raise UnknownHookName(f"cannot tell the layer and component from hook '{visible(name)[:200]}'", "Pass --layer and --component")


class _StopForward(Exception):
    """Raised inside the hook to skip the layers after it."""

    def __init__(self, value: mx.array) -> None:
        self.value = value


class _HookedModule(nn.Module):
    """Stands in for a block for one call and passes its output through `fn`."""

    def __init__(self, inner: nn.Module, fn: Callable[[mx.array], mx.array]) -> None:
        super().__init__()
        self.inner = inner
        self._fn = fn

    def __getattr__(self, name: str) -> Any:
        # Forward attributes the model's forward pass reads off the block
        # (e.g. `layer.use_sliding`) to the wrapped block.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner" or "inner" not in self:
                raise
            return getattr(self["inner"], name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner(*args, **kwargs)
        if isinstance(out, tuple):  # a few architectures return (hidden, extra)
            return (self._fn(out[0]), *out[1:])
        return self._fn(out)


class _ReplayLayer(_HookedModule):
    """Stands in for a layer before the hook: returns a cached output instead of computing.

    `value` None: pass the hidden state through (layers whose output is overwritten later).
    """

    def __init__(self, inner: nn.Module, value: mx.array | None) -> None:
        super().__init__(inner, lambda x: x)
        self._value = value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if self._value is None else self._value


class _RecordInput(_HookedModule):
    """Stands in for a layer for one call and remembers the hidden state it was given."""

    def __init__(self, inner: nn.Module, store: dict) -> None:
        super().__init__(inner, lambda x: x)
        self._store = store

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._store["input"] = args[0]
        out = self.inner(*args, **kwargs)
        self._store["tuple"] = isinstance(out, tuple)
        return out


@dataclass
class CleanPass:
    """A clean forward pass: logits, the hook's activation, and what lets variants skip
    the layers before the hook."""

    logits: mx.array
    activations: mx.array
    layer_input: mx.array | None  # the hidden state entering the hooked layer
    replayable: bool


class ModelRunner:
    """An mlx-lm model and its tokenizer, with activation capture and splicing."""

    def __init__(self, model: nn.Module, tokenizer: Any, name: str = "model", path: Path | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.path = path
        self.layers = _find_layers(model)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def vocab_size(self) -> int:
        args = getattr(self.model, "args", None)
        size = getattr(args, "vocab_size", None)
        if size is None:
            size = len(self.tokenizer.get_vocab()) if hasattr(self.tokenizer, "get_vocab") else None
        if size is None:
            raise TypeError(f"cannot tell the vocabulary size of {self.name}: no args.vocab_size and no tokenizer vocabulary")
        return int(size)

    def check_hook(self, layer: int | None, component: str | None, post_norm: bool = False) -> Hook:
        """Validate (layer, component) against this model; UserError if out of range.

        `post_norm`: the SAE's hook is TransformerLens's hook_mlp_out/hook_attn_out, which
        on Gemma 2/3 lies after the block's post-norm (see `Hook.post_norm`)."""
        if component is None:
            raise UserError(
                "The SAE's metadata names no component",
                "Pass --component mlp, attn or resid",
            )
        comp = canonical_component(component)
        if layer is None:
            raise UserError("The SAE's metadata names no layer", "Pass --layer N")
        if not 0 <= layer < self.n_layers:
            raise UserError(
                f"Layer {layer} is out of range: {self.name} has {self.n_layers} layers (0-{self.n_layers - 1})",
                "Pass --layer with a layer the model has, or the model the SAE was trained on",
            )
        if comp != "resid":
            _block_attribute(self.layers[layer], comp)
        return Hook(layer, comp, post_norm=bool(post_norm) and comp != "resid")

    def hook_width(self, hook: Hook) -> int:
        """The activation width at the hook, from a one-token forward pass."""
        acts = self.activations(mx.array([[0]]), hook)
        return int(acts.shape[-1])

    def hooked(self, hook: Hook, fn: Callable[[mx.array], mx.array]) -> contextlib.AbstractContextManager:
        """For the duration of a `with` block, the hook's output passes through fn (any
        forward pass, KV cache included: e.g. mlx-lm's generation step)."""
        return self._hooked(hook, fn)

    @contextlib.contextmanager
    def _hooked(self, hook: Hook, fn: Callable[[mx.array], mx.array]) -> Iterator[None]:
        layer = self.layers[hook.layer]
        if hook.component == "resid":
            self.layers[hook.layer] = _HookedModule(layer, fn)
            try:
                yield
            finally:
                self.layers[hook.layer] = layer
        else:
            while isinstance(layer, _HookedModule):  # the block lives on the real layer
                layer = layer["inner"]
            attr = _post_norm_attribute(layer, hook.component) if hook.post_norm else None
            attr = attr or _block_attribute(layer, hook.component)
            inner = getattr(layer, attr)
            setattr(layer, attr, _HookedModule(inner, fn))
            try:
                yield
            finally:
                setattr(layer, attr, inner)

    def activations(self, tokens: mx.array, hook: Hook) -> mx.array:
        """Activations (B, L, d) at the hook; the layers after it are not run."""

        def stop(x: mx.array) -> mx.array:
            raise _StopForward(x)

        with self._hooked(hook, stop):
            try:
                self.model(tokens)
            except _StopForward as captured:
                return captured.value
        raise RuntimeError(f"the forward pass never reached {hook}")  # pragma: no cover

    def logits(
        self,
        tokens: mx.array,
        hook: Hook | None = None,
        replace: Callable[[mx.array], mx.array] | None = None,
    ) -> mx.array:
        """Logits (B, L, V); with `replace`, the hook's output is swapped for replace(x)."""
        if hook is None or replace is None:
            return self.model(tokens)
        with self._hooked(hook, replace):
            return self.model(tokens)

    def logits_and_activations(self, tokens: mx.array, hook: Hook, replace: Callable[[mx.array], mx.array] | None = None) -> tuple[mx.array, mx.array]:
        """Logits of the (optionally spliced) model, and the clean activations at the hook."""
        seen: list[mx.array] = []

        def record(x: mx.array) -> mx.array:
            seen.append(x)
            return replace(x) if replace is not None else x

        with self._hooked(hook, record):
            logits = self.model(tokens)
        return logits, seen[0]

    def clean_pass(self, tokens: mx.array, hook: Hook) -> CleanPass:
        """Logits and the hook's activation, remembering the hooked layer's input."""
        store: dict = {}
        original = self.layers[hook.layer]
        self.layers[hook.layer] = _RecordInput(original, store)
        try:
            logits, acts = self.logits_and_activations(tokens, hook)
        finally:
            self.layers[hook.layer] = original
        replayable = "input" in store and not store.get("tuple", False)
        return CleanPass(logits, acts, store.get("input"), replayable)

    def variant_logits(self, tokens: mx.array, hook: Hook, clean: CleanPass, replacements: list[Callable[[mx.array], mx.array]]) -> list[mx.array]:
        """Logits with each replacement spliced in at the hook, in one batched pass.

        The layers before the hook are not run again: they replay the clean pass's
        hidden state (their output does not depend on what happens at the hook), so
        evaluating n variants costs n times the layers from the hook on, not n whole
        forward passes.
        """
        n = len(replacements)
        batch = tokens.shape[0]
        big = mx.concatenate([tokens] * n, axis=0) if n > 1 else tokens

        def replace(x: mx.array) -> mx.array:
            parts = [fn(x[i * batch : (i + 1) * batch]) for i, fn in enumerate(replacements)]
            return mx.concatenate(parts, axis=0) if n > 1 else parts[0]

        saved = list(self.layers[: hook.layer])
        if clean.replayable and hook.layer > 0:
            assert clean.layer_input is not None  # replayable: the layer's input was recorded
            cached = mx.concatenate([clean.layer_input] * n, axis=0) if n > 1 else clean.layer_input
            for i in range(hook.layer):
                self.layers[i] = _ReplayLayer(saved[i], cached if i == hook.layer - 1 else None)
        try:
            out = self.logits(big, hook, replace=replace)
        finally:
            self.layers[: hook.layer] = saved
        return [out[i * batch : (i + 1) * batch] for i in range(n)]

    # -- the output head, for logit effects ---------------------------------------------

    def final_norm_weight(self) -> mx.array | None:
        inner = getattr(self.model, "model", self.model)
        for name in ("norm", "final_layernorm", "ln_f", "final_norm"):
            norm = getattr(inner, name, None)
            if norm is not None and "weight" in norm:
                return norm["weight"]
        return None

    def unembed(self, x: mx.array) -> mx.array:
        """Apply the model's output projection (tied embedding or lm_head) to x (..., d)."""
        lm_head = getattr(self.model, "lm_head", None)
        if lm_head is not None:
            return lm_head(x)
        inner = getattr(self.model, "model", self.model)
        embed = getattr(inner, "embed_tokens", None) or getattr(inner, "wte", None)
        if embed is not None and hasattr(embed, "as_linear"):
            return embed.as_linear(x)
        raise UserError(
            f"{self.name} has no unembedding saetui can reach (no lm_head and no tied embedding)",
            "Use an mlx-lm causal language model",
        )


def _find_layers(model: nn.Module) -> list:
    """The list of transformer blocks the forward pass iterates over.

    Prefer the list stored on the module (`model.model.layers`): some architectures'
    `model.layers` property returns a fresh slice of it, which hooks could not patch.
    """
    layers = None
    for owner in (getattr(model, "model", None), model):
        if isinstance(owner, nn.Module) and isinstance(owner.get("layers"), list):
            layers = owner["layers"]
            break
    if layers is None:
        layers = getattr(model, "layers", None)
    if not isinstance(layers, list) or not layers:
        raise UserError(
            f"{type(model).__name__} has no list of transformer layers saetui can hook",
            "Use an mlx-lm decoder-only language model",
        )
    return layers


# Gemma 2/3 blocks: h = x + post_attention_layernorm(attn(...)); out = h +
# post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))). In Llama-style blocks
# `post_attention_layernorm` is the *pre*-MLP norm, so the pre_feedforward norm's
# presence is what says the post-norms are there.
_POST_NORMS = {"mlp": "post_feedforward_layernorm", "attn": "post_attention_layernorm"}


def _post_norm_attribute(layer: nn.Module, component: str) -> str | None:
    keys = layer.keys() if hasattr(layer, "keys") else ()
    if "pre_feedforward_layernorm" in keys and "post_feedforward_layernorm" in keys and _POST_NORMS[component] in keys:
        return _POST_NORMS[component]
    return None


def _block_attribute(layer: nn.Module, component: str) -> str:
    for attr in _BLOCK_ATTRIBUTES[component]:
        if attr in layer:
            return attr
    raise UserError(
        f"This model's layers have no {component} block (they have: {', '.join(sorted(layer.keys()))})",
        "Pass --component resid, or the component the SAE was trained on",
    )


# -- loading ---------------------------------------------------------------------------


# TransformerLens model names (what SAELens and Gemma Scope record) -> Hugging Face ids.
TRANSFORMERLENS_MODELS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "gemma-2b": "google/gemma-2b",
    "gemma-2b-it": "google/gemma-2b-it",
    "gemma-7b": "google/gemma-7b",
    "gemma-2-2b": "google/gemma-2-2b",
    "gemma-2-2b-it": "google/gemma-2-2b-it",
    "gemma-2-9b": "google/gemma-2-9b",
    "gemma-2-9b-it": "google/gemma-2-9b-it",
    "gemma-2-27b": "google/gemma-2-27b",
    "gemma-2-27b-it": "google/gemma-2-27b-it",
    "gemma-3-1b-pt": "google/gemma-3-1b-pt",
    "gemma-3-1b-it": "google/gemma-3-1b-it",
    "gemma-3-4b-pt": "google/gemma-3-4b-pt",
    "gemma-3-4b-it": "google/gemma-3-4b-it",
    "gemma-3-12b-pt": "google/gemma-3-12b-pt",
    "gemma-3-12b-it": "google/gemma-3-12b-it",
    "gemma-3-27b-pt": "google/gemma-3-27b-pt",
    "gemma-3-27b-it": "google/gemma-3-27b-it",
    "tiny-stories-1M": "roneneldan/TinyStories-1M",
    "tiny-stories-3M": "roneneldan/TinyStories-3M",
    "tiny-stories-8M": "roneneldan/TinyStories-8M",
    "tiny-stories-28M": "roneneldan/TinyStories-28M",
    "tiny-stories-33M": "roneneldan/TinyStories-33M",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "mistral-7b-instruct": "mistralai/Mistral-7B-Instruct-v0.1",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama-3-8b-instruct": "meta-llama/Meta-Llama-3-8B-Instruct",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    "qwen2.5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
}
for _size in ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"):
    TRANSFORMERLENS_MODELS[f"pythia-{_size}"] = f"EleutherAI/pythia-{_size}"
    TRANSFORMERLENS_MODELS[f"pythia-{_size}-deduped"] = f"EleutherAI/pythia-{_size}-deduped"


def hf_model_candidates(name: str) -> list[str]:
    """Hugging Face ids to look for in the cache for a model name: the name itself when it
    is an id; for a TransformerLens name its id and the mlx-community conversion."""
    mapped = TRANSFORMERLENS_MODELS.get(name) or TRANSFORMERLENS_MODELS.get(name.lower())
    if mapped:
        return [mapped, f"mlx-community/{mapped.split('/')[1]}"]
    return [name] if name.count("/") == 1 and not name.startswith((".", "/", "~")) else []


def _snapshot(repo: str, allow_download: bool) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "*.txt", "*.jsonl", "*.jinja"]
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    return Path(snapshot_download(repo, local_files_only=not allow_download, allow_patterns=patterns, cache_dir=cache_dir))


def resolve_model_path(name: str, allow_download: bool = False) -> Path:
    """A local directory for `name` (a path, the demo, a cached Hugging Face id, or a
    TransformerLens name mapped to its Hugging Face id)."""
    from ..ui.safe_text import visible

    if name == DEMO_MODEL_NAME:
        from ..demo import demo_model_path

        return demo_model_path()
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(
                f"{visible(str(path))} is not an mlx-lm model directory (no config.json)",
                "Pass --model with a directory that mlx_lm.load can open, or a Hugging Face id",
            )
        return path
    candidates = hf_model_candidates(name)
    if not candidates:
        raise UserError(
            f"Model not found: {visible(name)[:200]} (neither a local directory nor a Hugging Face id)",
            "Pass --model with a local mlx-lm model directory or a Hugging Face id like mlx-community/Llama-3.2-1B-Instruct-4bit",
        )
    mapped = candidates[0] != name
    for repo in candidates:
        try:
            return _snapshot(repo, allow_download=False)
        except Exception:  # noqa: BLE001 - not cached: try the next, then say so
            continue
    if allow_download:
        # An mlx-lm conversion where one exists: the original weights may not load in mlx-lm.
        repo = candidates[-1]
        try:
            return _snapshot(repo, allow_download=True)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"Could not download model {repo} ({type(exc).__name__})", "Check the model id and your network") from None
    if mapped:
        raise UserError(
            f"Model {visible(name)[:200]} (the TransformerLens name of {candidates[0]}) is not in the local Hugging Face cache "
            f"as {' or '.join(candidates)}",
            f"Pass --model with a local mlx-lm model directory or a cached Hugging Face id (e.g. {candidates[-1]}), or --download",
        )
    # Only a well-formed repo id is ever shown as a command to paste.
    command = f"Run `huggingface-cli download {name}`, or pass" if re.fullmatch(r"[\w.-]+/[\w.-]+", name) else "Pass"
    raise UserError(
        f"Model {visible(name)[:200]} is not in the local Hugging Face cache and saetui does not download by default",
        f"{command} --download, or --model with a local directory",
    )


def load_model(name: str, allow_download: bool = False) -> ModelRunner:
    """Load an mlx-lm model and tokenizer by path, demo name or cached Hugging Face id."""
    import mlx_lm

    path = resolve_model_path(name, allow_download)
    # mlx-lm and transformers consult the hub for some files even for local paths.
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if allow_download else "1")
    try:
        model, tokenizer = mlx_lm.load(str(path))  # type: ignore[misc]  # mlx_lm types load() as a 2- or 3-tuple; 2 without return_config
    except UserError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"mlx-lm could not load the model at {path} ({first})",
            "Check that it is a complete mlx-lm model directory (config.json, weights, tokenizer)",
        ) from None
    return ModelRunner(model, tokenizer, name=name, path=path)
