"""Interventions on SAE features inside the model: ablate, clamp, scale, add.

An intervention changes one feature's activation z_f at the SAE's hook, inside the
model's real forward pass (the hooked block's output goes through `InterventionHook`),
and the model runs on from there: on a text (`text_effects`), during generation with
mlx-lm's own generation step and KV cache (`steer`), and on a feature's own top
contexts (`removal_effect`).

Error-preserving splice: the hooked activation x becomes

    x + sum_f (z'_f - z_f) d_f

where d_f is feature f's decoder direction in activation units (`decoder_directions`,
`input_std` applied for normalised SAEs). The SAE's reconstruction error stays in the
activation, so an intervention that changes no feature changes no logit. Several
interventions compose in the order given (on the same feature, each acts on the
result of the one before). Position 0 (BOS) is never touched, as everywhere in saetui.

Functions take a `session` (or today's opened `Engine`): they use its `sae`, `runner`,
`hook` and `context_len`. They are plain synchronous code for the worker thread;
`steer` and `removal_effect` are generators (progress out, result as StopIteration.value;
closing them cancels).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator, Iterable, Sequence

import mlx.core as mx
import numpy as np

from . import cache
from .errors import UserError
from .sae import TopKSAE
from .worker import Progress, drive

if TYPE_CHECKING:
    from .session import Session

MODES = ("ablate", "clamp", "scale", "add")
MODE_HELP = "ID:ablate, ID:clamp:V, ID:scale:S or ID:add:V"
DEFAULT_MAX_NEW_TOKENS = 32
SHIFT_TOP = 10  # promoted / suppressed next tokens kept per position
REMOVAL_FORMAT = 1


# -- what an intervention is ------------------------------------------------------------


@dataclass(frozen=True)
class Intervention:
    """One change to one feature: `ablate` (z = 0), `clamp` (z = V at every position),
    `scale` (z = S z) or `add` (z = z + V, i.e. V decoder directions added everywhere)."""

    feature_id: int
    mode: str
    value: float | None = None  # None for ablate

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"Unknown intervention mode {self.mode!r}", f"Use {MODE_HELP}")
        if self.mode == "ablate":
            object.__setattr__(self, "value", None)
        elif self.value is None or not math.isfinite(float(self.value)):
            raise UserError(
                f"Intervention {self.feature_id}:{self.mode} needs a finite value, got {self.value!r}",
                f"Use {MODE_HELP} with a finite number",
            )
        else:
            object.__setattr__(self, "value", float(self.value))

    @property
    def spec(self) -> str:
        """The `ID:MODE[:VALUE]` form it parses from."""
        if self.value is None:
            return f"{self.feature_id}:{self.mode}"
        return f"{self.feature_id}:{self.mode}:{self.value:g}"

    def describe(self) -> str:
        if self.mode == "ablate":
            return "ablated (set to 0)"
        return {
            "clamp": f"clamped to {self.value:g}",
            "scale": f"scaled by {self.value:g}",
            "add": f"{self.value:+g} x its direction added",
        }[self.mode]

    def to_json(self) -> dict[str, Any]:
        return {"feature_id": self.feature_id, "mode": self.mode, "value": self.value}

    def apply(self, z: mx.array) -> mx.array:
        """The feature's new activation from its current one."""
        if self.mode == "ablate":
            return mx.zeros_like(z)
        assert self.value is not None  # __post_init__: every mode but ablate has a finite value
        if self.mode == "clamp":
            return mx.full(z.shape, self.value, dtype=z.dtype)
        if self.mode == "scale":
            return z * self.value
        return z + self.value

    @property
    def is_additive(self) -> bool:
        """Its change does not depend on the feature's activation."""
        return self.mode == "add"


def parse_intervention(spec: str, d_sae: int | None = None, default_mode: str | None = None) -> Intervention:
    """`ID:MODE[:VALUE]` (or `ID` alone when `default_mode` is given); UserError otherwise."""
    text = str(spec).strip()
    parts = text.split(":")
    form = MODE_HELP if default_mode is None else f"ID, {MODE_HELP}"
    if not text or len(parts) > 3 or any(not p.strip() for p in parts):
        raise UserError(f"Malformed intervention {spec!r}", f"Write it as {form}, e.g. 12:clamp:5")
    try:
        feature = int(parts[0])
    except ValueError:
        raise UserError(f"Malformed intervention {spec!r}: {parts[0]!r} is not a feature id", f"Write it as {form}, e.g. 12:scale:4") from None
    if feature < 0 or (d_sae is not None and feature >= d_sae):
        top = f" (0-{d_sae - 1})" if d_sae is not None else ""
        raise UserError(f"Unknown feature {feature} in {spec!r}: the SAE has {d_sae if d_sae is not None else 'no such'} features{top}", "Use a feature id the SAE has")
    if len(parts) == 1:
        if default_mode is None:
            raise UserError(f"Intervention {spec!r} names no mode", f"Write it as {form}, e.g. {feature}:ablate")
        mode, raw = default_mode, None
    else:
        mode = parts[1].strip().lower()
        raw = parts[2].strip() if len(parts) == 3 else None
    if mode not in MODES:
        raise UserError(f"Unknown intervention mode {parts[1]!r} in {spec!r}", f"Use {MODE_HELP}")
    if mode == "ablate":
        if raw is not None:
            raise UserError(f"Intervention {spec!r}: ablate takes no value", f"Write {feature}:ablate (or {feature}:clamp:V to set a value)")
        return Intervention(feature, mode)
    if raw is None:
        raise UserError(f"Intervention {spec!r} needs a value", f"Write it as {feature}:{mode}:V, e.g. {feature}:{mode}:{'2' if mode == 'scale' else '5'}")
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"Intervention {spec!r}: {raw!r} is not a number", f"Write it as {feature}:{mode}:V with a finite number") from None
    if not math.isfinite(value):
        raise UserError(f"Intervention {spec!r}: the value {raw} is not finite", f"Use a finite number, e.g. {feature}:{mode}:5")
    return Intervention(feature, mode, value)


def parse_interventions(specs: Iterable[str], d_sae: int | None = None, default_mode: str | None = None) -> list[Intervention]:
    out = [parse_intervention(s, d_sae, default_mode) for s in specs]
    if not out:
        raise UserError("No intervention given", f"Pass --feature {MODE_HELP}")
    return out


def check_interventions(session: "Session", interventions: Sequence[Intervention]) -> list[Intervention]:
    """The interventions, each feature id checked against the SAE."""
    d_sae = session.sae.d_sae
    if not interventions:
        raise UserError("No intervention given", f"Add one: {MODE_HELP}")
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise TypeError(f"not an Intervention: {iv!r}")
        if not 0 <= iv.feature_id < d_sae:
            raise UserError(f"Unknown feature {iv.feature_id}: the SAE has {d_sae:,} features (0-{d_sae - 1})", "Use a feature id the SAE has")
    return list(interventions)


# -- the splice at the hook ----------------------------------------------------------


class InterventionHook:
    """The function the hooked block's output goes through: x -> x + sum (z' - z) d.

    It tracks the absolute position of the tokens it is given, so during generation
    with a KV cache (one call per step) position 0 is still recognised as the BOS.
    `rows`: when given, only those batch rows are changed (clean rows stay as they are).
    """

    def __init__(self, sae: Any, interventions: Sequence[Intervention], rows: slice | None = None, record: bool = False) -> None:
        self.sae = sae
        self.interventions = list(interventions)
        self.features = sorted({iv.feature_id for iv in self.interventions})
        column = {f: j for j, f in enumerate(self.features)}
        self._ops = [(column[iv.feature_id], iv) for iv in self.interventions]
        self.directions = sae.decoder_directions[mx.array(self.features)].astype(mx.float32)  # (n, d)
        self.needs_encoding = any(not iv.is_additive for iv in self.interventions)
        self.rows = rows
        self.record = record
        self.recorded: mx.array | None = None  # (B, L, n) the features' clean activations, last call
        self.offset = 0
        slope = np.ones(len(self.features), dtype=np.float64)
        offset = np.zeros(len(self.features), dtype=np.float64)
        for j, iv in self._ops:
            a, b = {"ablate": (0.0, 0.0), "clamp": (0.0, iv.value), "scale": (iv.value, 0.0), "add": (1.0, iv.value)}[iv.mode]
            slope[j], offset[j] = a * slope[j], a * offset[j] + b
        self._slope_directions = mx.array((slope - 1.0).astype(np.float32))[:, None] * self.directions  # (n, d)
        self._offset_direction = mx.array(offset.astype(np.float32)) @ self.directions  # (d,)
        if not self.needs_encoding:  # only `add`: the change is the same at every position
            shift = np.zeros(len(self.features), dtype=np.float32)
            for j, iv in self._ops:
                shift[j] += iv.value
            self._constant = mx.array(shift) @ self.directions  # (d,)
        else:
            self._constant = None

    def reset(self) -> None:
        self.offset = 0

    def clean_features(self, x: mx.array) -> mx.array:
        """The intervened features' activations (..., n) for activations x (..., d).

        The same numbers as `sae.encode(x)[..., features]`, without sparsifying every
        feature: for a TopK SAE a feature is kept iff fewer than k pre-activations are
        larger than its own (the same as `h >= kth largest`, ties included), which spares
        a top-k selection per token in every generation step.
        """
        sae, ids = self.sae, mx.array(self.features)
        if isinstance(sae, TopKSAE):
            h = sae.pre_activations(x)
            mine = mx.take(h, ids, axis=-1)
            k = min(int(sae.k), h.shape[-1])
            larger = mx.sum(h[..., None, :] > mine[..., :, None], axis=-1)
            return mx.where(larger < k, mx.maximum(mine, 0.0), 0.0).astype(mx.float32)
        # Any other SAE encodes in the mode the session chose (BatchTopK: its batch semantics,
        # or the calibrated per-token view).
        z = sae.encode(x)
        return mx.take(z, ids, axis=-1).astype(mx.float32)

    def delta(self, x: mx.array) -> mx.array:
        """What is added to x (B, L, d), before the BOS and row masks."""
        if self._constant is not None and not self.record:
            return mx.broadcast_to(self._constant, x.shape)
        if self.record:
            z = self.clean_features(x)
            self.recorded = z
            if self._constant is not None:
                return mx.broadcast_to(self._constant, x.shape)
            return self._change(z)
        # (Not mx.compile'd: compiling costs more than a whole short generation saves.)
        return self._change(self.clean_features(x))

    def _change(self, z: mx.array) -> mx.array:
        # Every mode is affine in z (z -> a z + b), so is their composition: the change
        # (a - 1) z + b times the directions is one product and one addition.
        return z @ self._slope_directions + self._offset_direction

    def __call__(self, x: mx.array) -> mx.array:
        length = x.shape[1] if x.ndim >= 3 else 1
        target = x if self.rows is None else x[self.rows]
        delta = self.delta(target)
        if self.offset == 0:  # this call holds position 0: the BOS is left alone
            keep = (mx.arange(length) > 0).astype(mx.float32)
            delta = delta * keep[:, None]
        self.offset += length
        if self.rows is None:
            return x + delta.astype(x.dtype)
        out = target + delta.astype(x.dtype)
        start, stop = self.rows.start or 0, self.rows.stop if self.rows.stop is not None else x.shape[0]
        return mx.concatenate([x[:start], out, x[stop:]], axis=0)


def intervened_logits(session: "Session", tokens: mx.array, interventions: Sequence[Intervention]) -> mx.array:
    """Logits (B, L, V) of the model with the interventions at the hook (no cache)."""
    hook_fn = InterventionHook(session.sae, check_interventions(session, interventions))
    with session.runner.hooked(session.hook, hook_fn):
        return session.runner.model(tokens)


# -- tokens --------------------------------------------------------------------------


def _tokenizer(session: "Session") -> Any:
    return getattr(session, "tokenizer", None) or session.runner.tokenizer


def encode_text(session: "Session", text: str, limit: int | None = None) -> tuple[list[int], int, bool]:
    """([BOS] + the text's tokens cut to `limit` tokens in all, first text position, truncated)."""
    from .corpus import _encode_batch

    tokenizer = _tokenizer(session)
    ids = _encode_batch(tokenizer, [text])[0] if text else []
    bos = getattr(tokenizer, "bos_token_id", None)
    prefix = [int(bos)] if bos is not None else []
    room = None if limit is None else max(1, limit - len(prefix))
    cut = ids if room is None else ids[:room]
    return prefix + [int(i) for i in cut], len(prefix), len(cut) < len(ids)


def model_context_limit(session: "Session") -> int | None:
    args = getattr(session.runner.model, "args", None)
    limit = getattr(args, "max_position_embeddings", None)
    return int(limit) if limit else None


def check_unembedding(session: "Session") -> None:
    """UserError when the model's output projection cannot be reached."""
    runner = session.runner
    if getattr(runner.model, "lm_head", None) is not None:
        return
    runner.unembed(mx.zeros((1, session.sae.d_model)))


# -- effects on a text ----------------------------------------------------------------


@dataclass
class TokenShift:
    """A next token whose probability the interventions change."""

    token_id: int
    token: str
    clean_prob: float
    intervened_prob: float

    @property
    def change(self) -> float:
        return self.intervened_prob - self.clean_prob


@dataclass
class TextEffects:
    """What the interventions do to a text, token by token (BOS not included).

    Entry j is the text's token j: the log-probability the model gave it as the next
    token (from the tokens before it), clean and intervened, and the KL(clean ||
    intervened) of the distribution it was drawn from. `promoted[j]`/`suppressed[j]`:
    the next tokens after token j whose probability rises / falls most.
    """

    text: str
    interventions: list[Intervention]
    token_ids: list[int]
    tokens: list[str]
    clean_logprob: np.ndarray
    intervened_logprob: np.ndarray
    kl: np.ndarray
    promoted: list[list[TokenShift]]
    suppressed: list[list[TokenShift]]
    feature_activations: np.ndarray  # (n_tokens, n_features): the clean activations of the intervened features
    features: list[int]
    truncated: bool = False

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def loss_change(self) -> np.ndarray:
        """Per token: intervened loss - clean loss (nats; > 0: the token got less likely)."""
        return self.clean_logprob - self.intervened_logprob

    @property
    def total_loss_change(self) -> float:
        return float(self.loss_change.sum())

    @property
    def mean_loss_change(self) -> float:
        return float(self.loss_change.mean()) if self.n_tokens else 0.0

    def most_dependent(self, n: int = 10) -> list[int]:
        """Token indices whose loss rises most under the interventions (they depend on the features)."""
        change = self.loss_change
        order = np.lexsort((np.arange(change.size), -change))
        return [int(i) for i in order[:n] if change[i] > 0]

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": [
                {"token": t, "clean_logprob": float(c), "intervened_logprob": float(i), "kl": float(k)}
                for t, c, i, k in zip(self.tokens, self.clean_logprob, self.intervened_logprob, self.kl)
            ],
            "total_loss_change": self.total_loss_change,
        }


def text_effects(session: "Session", text: str, interventions: Sequence[Intervention], shift_top: int = SHIFT_TOP) -> TextEffects:
    """Per-token effects of the interventions on `text` (tokenised like the corpus, cut to one context)."""
    from .tokens import token_strings

    interventions = check_interventions(session, interventions)
    if not text or not text.strip():
        raise UserError("The text is empty", "Give a text to measure the interventions on")
    ids, first, truncated = encode_text(session, text, session.context_len)
    if len(ids) - first < 1:
        raise UserError("The text has no tokens", "Give a longer text")
    tokens = mx.array([ids])
    runner, hook = session.runner, session.hook
    hook_fn = InterventionHook(session.sae, interventions, record=True)
    clean = runner.clean_pass(tokens, hook)
    (steered,) = runner.variant_logits(tokens, hook, clean, [hook_fn])
    clean_lp = _log_softmax(clean.logits[0])  # (L, V)
    steered_lp = _log_softmax(steered[0])
    # Token j of the text sits at position first + j and is predicted from position first + j - 1.
    n = len(ids) - first
    if first == 0:  # no BOS: the first token has no prediction; it is left out
        ids_used, first_used = ids, 1
        n -= 1
    else:
        ids_used, first_used = ids, first
    target = mx.array(ids_used[first_used:])
    pred = slice(first_used - 1, len(ids_used) - 1)
    c = mx.take_along_axis(clean_lp[pred], target[:, None], axis=-1)[:, 0]
    s = mx.take_along_axis(steered_lp[pred], target[:, None], axis=-1)[:, 0]
    kl = mx.sum(mx.exp(clean_lp[pred]) * (clean_lp[pred] - steered_lp[pred]), axis=-1)
    # Next-token shifts after each text token (position first_used + j).
    after = slice(first_used, len(ids_used))
    diff = mx.exp(steered_lp[after]) - mx.exp(clean_lp[after])
    k = min(shift_top, diff.shape[-1])
    up = mx.argpartition(-diff, kth=k - 1, axis=-1)[:, :k]
    down = mx.argpartition(diff, kth=k - 1, axis=-1)[:, :k]
    pc, ps = mx.exp(clean_lp[after]), mx.exp(steered_lp[after])
    mx.eval(c, s, kl, up, down, pc, ps)
    tokenizer = _tokenizer(session)
    promoted = _shifts(tokenizer, np.array(up), np.array(pc), np.array(ps), rising=True)
    suppressed = _shifts(tokenizer, np.array(down), np.array(pc), np.array(ps), rising=False)
    z = hook_fn.recorded
    feats = np.array(z[0, first_used:]) if z is not None else np.zeros((n, 0), np.float32)
    return TextEffects(
        text=text,
        interventions=interventions,
        token_ids=[int(i) for i in ids_used[first_used:]],
        tokens=token_strings(tokenizer, ids_used)[first_used:],
        clean_logprob=np.array(c, dtype=np.float64),
        intervened_logprob=np.array(s, dtype=np.float64),
        kl=np.maximum(np.array(kl, dtype=np.float64), 0.0),
        promoted=promoted,
        suppressed=suppressed,
        feature_activations=feats.astype(np.float32),
        features=hook_fn.features,
        truncated=truncated,
    )


def _log_softmax(logits: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def _shifts(tokenizer: Any, ids: np.ndarray, pc: np.ndarray, ps: np.ndarray, rising: bool) -> list[list[TokenShift]]:
    from .tokens import token_string

    out = []
    for row, (cand, c_row, s_row) in enumerate(zip(ids, pc, ps)):
        change = s_row[cand] - c_row[cand]
        order = np.lexsort((cand, -change if rising else change))
        shifts = []
        for j in order:
            t = int(cand[j])
            if (change[j] > 0) if rising else (change[j] < 0):
                shifts.append(TokenShift(t, token_string(tokenizer, t), float(c_row[t]), float(s_row[t])))
        out.append(shifts)
    return out


# -- generation side by side -------------------------------------------------------------


@dataclass(frozen=True)
class SteerProgress(Progress):
    """One generated token (of either branch): progress, and both continuations so far."""

    sample: int = 0
    clean_text: str = ""
    steered_text: str = ""
    clean_done: bool = False
    steered_done: bool = False


@dataclass
class SteerResult:
    prompt: str
    interventions: list[Intervention]
    clean: list[str]  # one continuation per sample
    steered: list[str]
    clean_ids: list[list[int]] = field(default_factory=list)
    steered_ids: list[list[int]] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)
    prompt_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "interventions": [iv.to_json() for iv in self.interventions],
            "clean": [{"text": t} for t in self.clean],
            "steered": [{"text": t} for t in self.steered],
        }


def _sampler(temperature: float, seed: int):
    """Greedy at temperature 0; else a sampler with its own key stream, so the clean and
    steered branches of a sample draw with the same random numbers."""
    if temperature <= 0:
        return lambda logprobs: mx.argmax(logprobs, axis=-1)
    state = {"key": mx.random.key(seed)}
    inverse = 1.0 / temperature

    def sample(logprobs: mx.array) -> mx.array:
        state["key"], sub = mx.random.split(state["key"])
        return mx.random.categorical(logprobs * inverse, key=sub)

    return sample


def check_generation(session: "Session", prompt: str, max_new_tokens: int, temperature: float, samples: int) -> list[int]:
    """The prompt's tokens; UserError for anything generation cannot do."""
    if not prompt or not prompt.strip():
        raise UserError("The prompt is empty", "Give a prompt to continue, e.g. saetui steer \"The capital of France is\" --feature 12:scale:4")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens} is too small", "Ask for at least 1 new token")
    if not math.isfinite(temperature) or temperature < 0:
        raise UserError(f"--temperature {temperature} is not a temperature", "Use 0 (greedy) or a positive number")
    if not isinstance(samples, int) or samples < 1:
        raise UserError(f"--samples {samples} is too small", "Ask for at least 1 sample")
    check_unembedding(session)
    ids, _, _ = encode_text(session, prompt)
    limit = model_context_limit(session)
    if limit is not None and len(ids) + max_new_tokens > limit:
        room = limit - len(ids)
        fix = f"Use --max-new-tokens {room} or less" if room >= 1 else "Use a shorter prompt"
        raise UserError(
            f"The prompt ({len(ids)} tokens) and {max_new_tokens} new tokens do not fit the model's context of {limit} tokens",
            fix,
        )
    return ids


def steer(
    session: "Session",
    prompt: str,
    interventions: Sequence[Intervention],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    seed: int = 0,
    samples: int = 1,
    branches: Sequence[str] = ("clean", "steered"),
    stop_at_eos: bool = True,
) -> Generator[SteerProgress, None, SteerResult]:
    """Clean and intervened continuations of `prompt`, streamed token by token.

    Uses mlx-lm's `generate_step` (KV cache and all); the intervened branch runs it with
    the hook in place for each of its steps. Sample s draws with seed `seed + s` in both
    branches. Yields a `SteerProgress` after each token; returns a `SteerResult`.
    """
    from mlx_lm.generate import generate_step

    interventions = check_interventions(session, interventions)
    ids = check_generation(session, prompt, max_new_tokens, temperature, samples)
    runner, hook = session.runner, session.hook
    tokenizer = _tokenizer(session)
    eos = set(getattr(tokenizer, "eos_token_ids", None) or ())
    if getattr(tokenizer, "eos_token_id", None) is not None:
        eos.add(int(tokenizer.eos_token_id))
    started = time.perf_counter()
    total = samples * max_new_tokens * len(branches)
    done = 0
    result = SteerResult(prompt, interventions, [], [], prompt_tokens=len(ids))
    prompt_array = mx.array(ids)
    for sample in range(samples):
        sample_seed = seed + sample
        hook_fn = InterventionHook(session.sae, interventions)
        streams = {
            name: generate_step(prompt_array, runner.model, max_tokens=max_new_tokens, sampler=_sampler(temperature, sample_seed))
            for name in branches
        }
        out: dict[str, list[int]] = {name: [] for name in branches}
        finished = {name: False for name in ("clean", "steered")}
        for name in ("clean", "steered"):
            finished[name] = name not in branches
        texts = {"clean": "", "steered": ""}
        try:
            while not all(finished.values()):
                for name in branches:
                    if finished[name]:
                        continue
                    stream = streams[name]
                    try:
                        if name == "steered":
                            with runner.hooked(hook, hook_fn):
                                next_token, _ = next(stream)
                        else:
                            next_token, _ = next(stream)
                    except StopIteration:
                        finished[name] = True
                        continue
                    token = int(next_token)
                    done += 1
                    if stop_at_eos and token in eos:
                        finished[name] = True
                        done += max_new_tokens - len(out[name]) - 1
                    else:
                        out[name].append(token)
                        texts[name] = tokenizer.decode(out[name])
                        if len(out[name]) >= max_new_tokens:
                            finished[name] = True
                    yield SteerProgress(
                        "generating", done, total, "tokens", time.perf_counter() - started,
                        sample=sample, clean_text=texts["clean"], steered_text=texts["steered"],
                        clean_done=finished["clean"], steered_done=finished["steered"],
                    )
        finally:
            for stream in streams.values():
                stream.close()
        result.clean.append(texts["clean"])
        result.steered.append(texts["steered"])
        result.clean_ids.append(out.get("clean", []))
        result.steered_ids.append(out.get("steered", []))
        result.seeds.append(sample_seed if temperature > 0 else None)
    return result


def generate_side_by_side(
    session: "Session",
    prompt: str,
    interventions: Sequence[Intervention],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    seed: int = 0,
    samples: int = 1,
) -> SteerResult:
    """`steer` run to the end: the clean and intervened continuations (for scripts)."""
    return drive(steer(session, prompt, interventions, max_new_tokens, temperature, seed, samples))


# -- a feature's own contexts: what happens when you remove it -------------------------


@dataclass
class RemovalEffect:
    """Ablating a feature on its top contexts (from the feature index)."""

    feature_id: int
    n_contexts: int
    n_firing: int  # firing positions measured (the prediction made at each)
    n_after: int  # non-firing positions after a firing one
    loss_change_firing: float  # mean intervened - clean loss of the next token, at firing positions
    loss_change_after: float  # the same at the positions after them
    drops: list[TokenShift]  # next tokens whose probability drops most, averaged over firing positions

    def to_json(self) -> dict[str, Any]:
        return {
            "feature_id": self.feature_id,
            "contexts": self.n_contexts,
            "firing_positions": self.n_firing,
            "after_positions": self.n_after,
            "loss_change_firing": self.loss_change_firing,
            "loss_change_after": self.loss_change_after,
            "drops": [{"token_id": d.token_id, "token": d.token, "clean_prob": d.clean_prob, "ablated_prob": d.intervened_prob} for d in self.drops],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RemovalEffect":
        return cls(
            feature_id=int(data["feature_id"]),
            n_contexts=int(data["contexts"]),
            n_firing=int(data["firing_positions"]),
            n_after=int(data["after_positions"]),
            loss_change_firing=float(data["loss_change_firing"]),
            loss_change_after=float(data["loss_change_after"]),
            drops=[TokenShift(int(d["token_id"]), str(d["token"]), float(d["clean_prob"]), float(d["ablated_prob"])) for d in data["drops"]],
        )


def _removal_path(index: Any, feature_id: int, max_contexts: int):
    key = cache.cache_key(index=index.meta.get("key"), feature=int(feature_id), contexts=int(max_contexts), format=REMOVAL_FORMAT, purpose="removal")
    return cache.cache_path("removal", key, ".json")


def removal_effect(
    session: "Session",
    index: Any,
    feature_id: int,
    max_contexts: int = 20,
    batch_size: int = 8,
    use_cache: bool = True,
) -> Generator[Progress, None, RemovalEffect]:
    """Ablate `feature_id` on its top contexts; measure the loss change where it fires and after.

    Cached beside the index (keyed by the index's key, the feature and `max_contexts`).
    """
    stats = index.feature(feature_id)
    path = _removal_path(index, feature_id, max_contexts) if use_cache and index.meta.get("key") else None
    if path is not None:
        cached = cache.read_json(path)
        if isinstance(cached, dict):
            try:
                return RemovalEffect.from_json(cached)
            except (KeyError, TypeError, ValueError):
                pass
    examples = stats.top[:max_contexts]
    contexts = sorted({e.context_id for e in examples})
    runner, hook = session.runner, session.hook
    started = time.perf_counter()
    first = index.first_position
    firing_sum = after_sum = 0.0
    n_firing = n_after = 0
    vocab_drop: mx.array | None = None
    pc_sum: mx.array | None = None
    ablate = [Intervention(int(feature_id), "ablate")]
    for start in range(0, len(contexts), batch_size):
        yield Progress("ablating on top contexts", start, len(contexts), "contexts", time.perf_counter() - started)
        chunk = contexts[start : start + batch_size]
        tokens = mx.array(index.contexts[np.array(chunk)].astype(np.int32))
        hook_fn = InterventionHook(session.sae, ablate, record=True)
        clean = runner.clean_pass(tokens, hook)
        (ablated,) = runner.variant_logits(tokens, hook, clean, [hook_fn])
        clp = _log_softmax(clean.logits[:, :-1])  # predictions of tokens 1..L-1
        alp = _log_softmax(ablated[:, :-1])
        target = tokens[:, 1:, None]
        change = (mx.take_along_axis(clp, target, axis=-1) - mx.take_along_axis(alp, target, axis=-1))[..., 0]  # (b, L-1)
        assert hook_fn.recorded is not None  # record=True: variant_logits ran the hook, which recorded
        z = hook_fn.recorded[..., 0][:, :-1]  # (b, L-1): the feature at each predicting position
        positions = mx.arange(z.shape[1])[None, :]
        fires = (z > 0) & (positions >= first)
        seen = mx.cumsum(fires.astype(mx.int32), axis=1) > 0
        after = seen & ~fires
        firing_sum += float(mx.sum(mx.where(fires, change, 0.0)).item())  # type: ignore[arg-type]  # mlx stubs: item() is int | float | complex
        after_sum += float(mx.sum(mx.where(after, change, 0.0)).item())  # type: ignore[arg-type]  # mlx stubs: item() is int | float | complex
        n_firing += int(mx.sum(fires).item())  # type: ignore[arg-type]  # mlx stubs: item() is int | float | complex
        n_after += int(mx.sum(after).item())  # type: ignore[arg-type]  # mlx stubs: item() is int | float | complex
        w = fires.astype(mx.float32)[..., None]
        pc, pa = mx.exp(clp), mx.exp(alp)
        drop = mx.sum((pc - pa) * w, axis=(0, 1))
        base = mx.sum(pc * w, axis=(0, 1))
        vocab_drop = drop if vocab_drop is None else vocab_drop + drop
        pc_sum = base if pc_sum is None else pc_sum + base
        mx.eval(vocab_drop, pc_sum)
    drops: list[TokenShift] = []
    if vocab_drop is not None and n_firing:
        from .tokens import token_string

        mean_drop = np.array(vocab_drop) / n_firing
        mean_clean = np.array(pc_sum) / n_firing
        order = np.lexsort((np.arange(mean_drop.size), -mean_drop))[:SHIFT_TOP]
        tokenizer = _tokenizer(session)
        drops = [TokenShift(int(t), token_string(tokenizer, int(t)), float(mean_clean[t]), float(mean_clean[t] - mean_drop[t])) for t in order if mean_drop[t] > 0]
    effect = RemovalEffect(
        feature_id=int(feature_id),
        n_contexts=len(contexts),
        n_firing=n_firing,
        n_after=n_after,
        loss_change_firing=firing_sum / n_firing if n_firing else 0.0,
        loss_change_after=after_sum / n_after if n_after else 0.0,
        drops=drops,
    )
    if path is not None and not stats.partial:
        try:
            cache.atomic_write_json(path, effect.to_json())
        except OSError:
            pass  # a cache that cannot be written costs only the recomputation
    return effect


# -- benchmark ---------------------------------------------------------------------------


def steer_benchmark(session: "Session | None" = None, new_tokens: int = 48, repeats: int = 5, ablate_runs: int = 30) -> list[dict[str, Any]]:
    """Generation tokens/s clean vs with 3 interventions, and ablate latency on a 64-token text.

    Returns one dict per figure (for `python -m saetui.bench`). Opens the demo when no
    session is given.
    """
    engine = None
    if session is None:
        from .engine import Engine

        engine = Engine()
        try:
            opened = engine.call(engine.open)
            return engine.call(steer_benchmark, opened, new_tokens, repeats, ablate_runs)
        finally:
            engine.close()
    d_sae = session.sae.d_sae
    interventions = [Intervention(1 % d_sae, "scale", 2.0), Intervention(2 % d_sae, "ablate"), Intervention(3 % d_sae, "add", 1.0)]
    prompt = "The capital of France is"
    limit = model_context_limit(session)
    n_prompt = len(encode_text(session, prompt)[0])
    new_tokens = min(new_tokens, (limit - n_prompt) if limit else new_tokens)

    def rate(branch: str) -> float:
        t0 = time.perf_counter()
        res = drive(steer(session, prompt, interventions, new_tokens, branches=(branch,), stop_at_eos=False))
        n = len(res.clean_ids[0] if branch == "clean" else res.steered_ids[0])
        return n / (time.perf_counter() - t0)

    rate("clean"), rate("steered")  # warm up
    # Alternated, best of each: a busy machine slows both alike.
    clean_rate = steered_rate = 0.0
    for _ in range(repeats):
        clean_rate = max(clean_rate, rate("clean"))
        steered_rate = max(steered_rate, rate("steered"))
    words = "The red fox ran to Paris on Monday and ate bread with his sister while the team played chess . " * 8
    ids, first, _ = encode_text(session, words, 65)
    text = _tokenizer(session).decode(ids[first:])
    times = []
    text_effects(session, text, interventions[:1])
    for _ in range(ablate_runs):
        t0 = time.perf_counter()
        text_effects(session, text, [Intervention(1 % d_sae, "ablate")])
        times.append(time.perf_counter() - t0)
    p95 = float(np.percentile(np.array(times) * 1000, 95))
    return [
        {"figure": "steer generation tokens/s", "clean": round(clean_rate, 1), "intervened_3": round(steered_rate, 1), "ratio": round(steered_rate / clean_rate, 3), "target": ">= 0.9"},
        {"figure": "ablate latency, 64-token text", "tokens": len(ids) - first, "p95_ms": round(p95, 2), "median_ms": round(float(np.median(times) * 1000), 2), "target": "p95 < 150 ms"},
    ]
