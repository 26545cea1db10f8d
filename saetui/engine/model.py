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

    def __str__(self) -> str:
        return f"layer {self.layer} {self.component}"


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
        return int(size)

    def check_hook(self, layer: int | None, component: str | None) -> Hook:
        """Validate (layer, component) against this model; UserError if out of range."""
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
        return Hook(layer, comp)

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
            attr = _block_attribute(layer, hook.component)
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


def _block_attribute(layer: nn.Module, component: str) -> str:
    for attr in _BLOCK_ATTRIBUTES[component]:
        if attr in layer:
            return attr
    raise UserError(
        f"This model's layers have no {component} block (they have: {', '.join(sorted(layer.keys()))})",
        "Pass --component resid, or the component the SAE was trained on",
    )


# -- loading ---------------------------------------------------------------------------


def resolve_model_path(name: str, allow_download: bool = False) -> Path:
    """A local directory for `name` (a path, the demo, or a cached Hugging Face id)."""
    if name == DEMO_MODEL_NAME:
        from ..demo import demo_model_path

        return demo_model_path()
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(
                f"{path} is not an mlx-lm model directory (no config.json)",
                "Pass --model with a directory that mlx_lm.load can open, or a Hugging Face id",
            )
        return path
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise UserError(
            f"Model not found: {name}",
            "Pass --model with a local mlx-lm model directory or a Hugging Face id like mlx-community/Llama-3.2-1B-Instruct-4bit",
        )
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "*.txt", "*.jsonl", "*.jinja"]
    try:
        return Path(snapshot_download(name, local_files_only=not allow_download, allow_patterns=patterns))
    except Exception as exc:
        if allow_download:
            raise UserError(
                f"Could not download model {name} ({type(exc).__name__})",
                "Check the model id and your network",
            ) from None
        raise UserError(
            f"Model {name} is not in the local Hugging Face cache and saetui does not download by default",
            f"Run `huggingface-cli download {name}`, or pass --download, or --model with a local directory",
        ) from None


def load_model(name: str, allow_download: bool = False) -> ModelRunner:
    """Load an mlx-lm model and tokenizer by path, demo name or cached Hugging Face id."""
    import mlx_lm

    path = resolve_model_path(name, allow_download)
    # mlx-lm and transformers consult the hub for some files even for local paths.
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if allow_download else "1")
    try:
        model, tokenizer = mlx_lm.load(str(path))
    except UserError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"mlx-lm could not load the model at {path} ({first})",
            "Check that it is a complete mlx-lm model directory (config.json, weights, tokenizer)",
        ) from None
    return ModelRunner(model, tokenizer, name=name, path=path)
