"""Tiny models, tokenizers and SAEs built in-process for tests (no downloads)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures" / "mlxterp"

TEXT = (
    "The cat sat on the mat. Paris is the capital of France. 2 + 2 = 4 and 3 * 5 = 15. "
    "def add(a, b): return a + b. I feel happy and calm today. The red fox and the blue bird. "
    "Neural networks learn representations from data with gradient descent. "
)

HIDDEN = 64
# (model_type, extra ModelArgs fields) for each architecture the tests cover.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": dict(tie_word_embeddings=True),
    "mistral": dict(tie_word_embeddings=False),
    "qwen2": dict(tie_word_embeddings=True),
    "qwen3": dict(head_dim=16, tie_word_embeddings=True, max_position_embeddings=512),
    "gemma": dict(head_dim=16),
    "gemma2": dict(head_dim=16, query_pre_attn_scalar=16),
    "gemma3_text": dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=16, sliding_window_pattern=2),
    "phi3": dict(tie_word_embeddings=False, max_position_embeddings=512, original_max_position_embeddings=512),
}


def write_tokenizer(folder: Path, vocab_size: int = 300) -> None:
    """A byte-level BPE tokenizer trained on TEXT, saved as tokenizer.json + config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TEXT] * 20, trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "add_bos_token": False,
            }
        )
    )


def make_model_dir(folder: Path, arch: str = "llama", layers: int = 3, quantize: bool = False, seed: int = 0) -> Path:
    """Write a randomly initialised mlx-lm model of `arch` that `mlx_lm.load` can open."""
    import importlib

    from mlx_lm.utils import MODEL_REMAPPING

    write_tokenizer(folder)
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    config: dict[str, Any] = dict(
        model_type=arch,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=len(vocab),
        max_position_embeddings=512,
        rope_theta=10000.0,
    )
    config.update(ARCHITECTURES[arch])
    module = importlib.import_module(f"mlx_lm.models.{MODEL_REMAPPING.get(arch, arch)}")
    args = module.ModelArgs.from_dict(config)
    mx.random.seed(seed)
    model = module.Model(args)
    if quantize:
        from mlx_lm.utils import quantize_model

        model, config = quantize_model(model, config, group_size=32, bits=4)
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def write_sae(
    folder: Path,
    d_model: int = HIDDEN,
    d_hidden: int = 256,
    k: int = 8,
    cls: str = "SAE",
    normalize: bool = False,
    tied: bool = False,
    metadata: dict[str, Any] | None = None,
    weights: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> Path:
    """An SAE in mlxterp's format with random weights (or the given ones)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if weights is None:
        weights = {
            "encoder.weight": rng.normal(0, 0.3, (d_hidden, d_model)).astype(np.float32),
            "encoder.bias": np.zeros(d_hidden, np.float32),
            "input_mean": np.zeros(d_model, np.float32),
            "input_std": np.ones(d_model, np.float32),
        }
        if tied:
            weights["decoder_bias"] = np.zeros(d_model, np.float32)
        else:
            weights["decoder.weight"] = rng.normal(0, 0.3, (d_model, d_hidden)).astype(np.float32)
            weights["decoder.bias"] = np.zeros(d_model, np.float32)
    mx.save_safetensors(str(folder / "weights.safetensors"), {k_: mx.array(v) for k_, v in weights.items()})
    config = {
        "class": cls,
        "d_model": d_model,
        "d_hidden": d_hidden,
        "k": k,
        "normalize_input": normalize,
        "tied_weights": tied,
        "metadata": metadata if metadata is not None else {"layer": 1, "component": "mlp", "model_name": "tiny"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


async def wait_until(pilot, condition, what: str = "condition", tries: int = 3000) -> None:
    """Let the app run until `condition()` holds (Textual tests; never a timing assertion)."""
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"{what} never became true")


@contextlib.contextmanager
def opened_engine(**settings: Any):
    """(engine, session) opened on the given settings (EngineSettings fields); closed after.

    The one way tests open an engine: plain engine functions run with
    `engine.call(fn, session, ...)`, long work with `engine.call_job(label, fn, session, ...)`.
    """
    from saetui.engine.engine import Engine, EngineSettings

    engine = Engine(EngineSettings(**settings))
    try:
        session = engine.call(engine.open)
        yield engine, session
    finally:
        engine.close()


class OpenedSession:
    """A test's handle on an opened engine: `s(fn, *args)` runs `fn(session, *args)` on the
    worker; `s.job(fn, *args)` runs long work there to its result."""

    def __init__(self, engine: Any, session: Any) -> None:
        self.engine = engine
        self.session = session

    def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.engine.call(fn, self.session, *args, **kwargs)

    def job(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.engine.call_job(getattr(fn, "__name__", "work"), fn, self.session, *args, **kwargs)

    def on_worker(self, fn: Any, *args: Any) -> Any:
        """Any function (e.g. a lambda using MLX) on the worker thread."""
        return self.engine.call(fn, *args)

    def close(self) -> None:
        self.engine.close()


def open_session(**settings: Any) -> OpenedSession:
    """An `OpenedSession` on these EngineSettings fields (module-scoped fixtures; close it)."""
    from saetui.engine.engine import Engine, EngineSettings

    engine = Engine(EngineSettings(**settings))
    try:
        return OpenedSession(engine, engine.call(engine.open))
    except BaseException:
        engine.close()
        raise


def notifications_shown(app, severity: str | None = None) -> list[str]:
    """The text of the notifications on the screen now (its toasts), as the user reads them.

    Textual's `run_test` shows none unless called with `notifications=True`.
    """
    return [str(toast.render()) for toast in app.screen.query("Toast") if severity is None or toast.has_class(f"-{severity}")]


def rendered(widget) -> str:
    """What a widget shows, as plain text."""
    return str(widget.render())


def burst(app, keys) -> None:
    """Send keys as a terminal delivers a fast typist's burst: all queued at once.

    (`pilot.press` waits for the app to go idle after every key, which hides the race.)
    """
    from textual import events
    from textual.keys import _character_to_key

    for key in keys:
        name = _character_to_key(key) if len(key) == 1 and not key.isalnum() else key
        event = events.Key(name, key if len(key) == 1 else None)
        event.set_sender(app)
        app._driver.send_message(event)
