"""Decoder facts for every feature at once: logit effects and nearest features.

`features.py` answers one feature at a time (a (vocab,) matrix-vector product and a
(d_sae,) one). Explanations, search and clusters need them for all features, so here they
are computed in blocks of features on the MLX device:

- logit effects: a block of decoder directions (B, d_model), times the final norm's
  gain, through the unembedding gives (B, vocab) logits; the `n` largest and smallest
  per row are found without sorting the row (the row is cut into chunks; the top n
  values lie in the n chunks with the largest maxima), then ordered exactly as
  `features.logit_effects` orders them (value, then token id);
- nearest features: a block of unit directions times all of them gives (B, d_sae)
  cosines; the feature itself is left out; ordered as `features.nearest_features` does.

Memory is one block (B x vocab and B x d_sae floats), never d_sae x vocab. The result is
a handful of (d_sae, n) arrays, cached beside the feature index (keyed by the SAE's and
the model's content, not by the dataset).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator

import mlx.core as mx
import numpy as np

from . import cache
from .worker import Progress

if TYPE_CHECKING:
    from .session import Session

FACTS_FORMAT = 1
LOGIT_TOKENS = 10
NEAREST = 10
BLOCK = 1024
CHUNK = 64
# Candidates kept beyond n per row, so the exact order (value, then id) is settled on the host.
SLACK = 6


def _row_candidates(scores: mx.array, n: int, largest: bool) -> tuple[mx.array, mx.array]:
    """Per row, a superset of the n largest (or smallest) entries: (values, column ids)."""
    rows, cols = scores.shape
    s = scores if largest else -scores
    m = min(cols, n + SLACK)
    n_chunks = -(-cols // CHUNK)
    if n_chunks <= m or cols <= 4 * CHUNK:
        idx = mx.argpartition(-s, kth=m - 1, axis=-1)[:, :m]
    else:
        pad = n_chunks * CHUNK - cols
        if pad:
            s = mx.concatenate([s, mx.full((rows, pad), -mx.inf, dtype=s.dtype)], axis=1)
        chunks = s.reshape(rows, n_chunks, CHUNK)
        # The m largest values lie in the m chunks with the largest maxima.
        best = mx.argpartition(-chunks.max(axis=-1), kth=m - 1, axis=-1)[:, :m]
        cand = (best[:, :, None] * CHUNK + mx.arange(CHUNK)[None, None, :]).reshape(rows, -1)
        cand_vals = mx.take_along_axis(s, cand, axis=1)
        pick = mx.argpartition(-cand_vals, kth=m - 1, axis=-1)[:, :m]
        idx = mx.take_along_axis(cand, pick, axis=1)
    values = mx.take_along_axis(scores, idx, axis=1)
    return values, idx


def _order(values: np.ndarray, ids: np.ndarray, n: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row by row, the first n by value (descending when `largest`), ties as features.py breaks them.

    features.py sorts by (-value, id) and reads promoted from the front and suppressed
    from the back: the largest with the smaller id first; the smallest with the larger id first.
    """
    if largest:
        order = np.lexsort((ids, -values), axis=-1)
    else:
        order = np.lexsort((-ids, values), axis=-1)
    order = order[:, :n]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(ids, order, axis=1)


@dataclass
class DecoderFacts:
    """Every feature's top and bottom logit effects and nearest features (-1: none)."""

    promoted_ids: np.ndarray  # int32 (d_sae, n)
    promoted_values: np.ndarray  # float32 (d_sae, n)
    suppressed_ids: np.ndarray
    suppressed_values: np.ndarray
    neighbour_ids: np.ndarray  # int32 (d_sae, m); -1 where none (a zero decoder direction)
    neighbour_cosines: np.ndarray  # float32 (d_sae, m)
    norms: np.ndarray  # float32 (d_sae,)

    @property
    def d_sae(self) -> int:
        return int(self.norms.shape[0])

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, format=np.array([FACTS_FORMAT]), **vars(self))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "DecoderFacts":
        """Read cached facts; ValueError for anything damaged or of another format."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except Exception as exc:  # noqa: BLE001 - zip and CRC damage surface as assorted types
            raise ValueError(f"unreadable: {type(exc).__name__}") from None
        if arrays.pop("format", np.array([0])).tolist() != [FACTS_FORMAT]:
            raise ValueError("written by another version of saetui")
        try:
            facts = cls(**arrays)
        except TypeError:
            raise ValueError("arrays missing or unexpected") from None
        d = facts.d_sae
        for name, arr in vars(facts).items():
            if name != "norms" and (arr.ndim != 2 or arr.shape[0] != d):
                raise ValueError(f"{name} has shape {arr.shape}")
        return facts


def compute(session: "Session", n_tokens: int = LOGIT_TOKENS, n_neighbours: int = NEAREST, block: int = BLOCK) -> Generator[Progress, None, DecoderFacts]:
    """All features' decoder facts, block by block: yields Progress, returns `DecoderFacts`."""
    from .features import _norm_gain, _tokenizer_vocab_size

    began = time.perf_counter()
    directions = session.sae.decoder_directions.astype(mx.float32)
    d_sae = int(directions.shape[0])
    norms = mx.linalg.norm(directions, axis=-1)
    unit = directions / mx.maximum(norms, 1e-12)[:, None]
    gain = _norm_gain(session)
    scaled = directions * gain.astype(mx.float32) if gain is not None else directions
    mx.eval(unit, norms, scaled)
    vocab = _tokenizer_vocab_size(session)
    n_neighbours = min(n_neighbours, d_sae - 1)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("pi", "pv", "si", "sv", "ni", "nv")}
    for lo in range(0, d_sae, block):
        hi = min(d_sae, lo + block)
        logits = session.runner.unembed(scaled[lo:hi]).astype(mx.float32)
        if vocab and vocab < logits.shape[-1]:  # padded embedding rows are no tokens
            logits = logits[:, :vocab]
        n = min(n_tokens, int(logits.shape[-1]))
        top_v, top_i = _row_candidates(logits, n, largest=True)
        bot_v, bot_i = _row_candidates(logits, n, largest=False)
        cos = unit[lo:hi] @ unit.T
        rows = mx.arange(hi - lo)
        cos = mx.where(mx.arange(d_sae)[None, :] == (rows + lo)[:, None], -mx.inf, cos)
        if n_neighbours > 0:
            nb_v, nb_i = _row_candidates(cos, n_neighbours, largest=True)
        else:
            nb_v = nb_i = mx.zeros((hi - lo, 0))
        mx.eval(top_v, top_i, bot_v, bot_i, nb_v, nb_i)
        pv, pi = _order(np.asarray(top_v), np.asarray(top_i), n, largest=True)
        sv, si = _order(np.asarray(bot_v), np.asarray(bot_i), n, largest=False)
        nv, ni = _order(np.asarray(nb_v), np.asarray(nb_i), n_neighbours, largest=True)
        for key, arr in zip(("pi", "pv", "si", "sv", "ni", "nv"), (pi, pv, si, sv, ni, nv)):
            parts[key].append(arr)
        yield Progress("decoder facts", hi, d_sae, "features", time.perf_counter() - began)
    norms_np = np.asarray(norms).astype(np.float32)
    ni = np.concatenate(parts["ni"]).astype(np.int32)
    nv = np.concatenate(parts["nv"]).astype(np.float32)
    ni[norms_np == 0] = -1  # a zero direction has no neighbours (as features.py says)
    return DecoderFacts(
        promoted_ids=np.concatenate(parts["pi"]).astype(np.int32),
        promoted_values=np.concatenate(parts["pv"]).astype(np.float32),
        suppressed_ids=np.concatenate(parts["si"]).astype(np.int32),
        suppressed_values=np.concatenate(parts["sv"]).astype(np.float32),
        neighbour_ids=ni,
        neighbour_cosines=nv,
        norms=norms_np,
    )


# -- cached beside the index ----------------------------------------------------------------------


def facts_path(session: "Session", n_tokens: int = LOGIT_TOKENS, n_neighbours: int = NEAREST):
    runner = session.runner
    key = cache.cache_key(
        purpose="decoder-facts",
        format=FACTS_FORMAT,
        sae=session.sae.content_hash,
        model=session.model_name,
        model_path=str(runner.path) if getattr(runner, "path", None) else None,
        n_tokens=int(n_tokens),
        n_neighbours=int(n_neighbours),
    )
    return cache.cache_path("index", key, ".facts.npz")


def load_or_compute(session: "Session", n_tokens: int = LOGIT_TOKENS, n_neighbours: int = NEAREST, notes: list[str] | None = None) -> Generator[Progress, None, DecoderFacts]:
    """The cached facts, or computed now and cached (atomically; a damaged file is replaced)."""
    path = facts_path(session, n_tokens, n_neighbours)
    if path.exists():
        try:
            return DecoderFacts.from_bytes(path.read_bytes())
        except (OSError, ValueError) as exc:
            if notes is not None:
                notes.append(f"The cached decoder facts {path.name} are damaged ({exc}); recomputing them")
    facts = yield from compute(session, n_tokens, n_neighbours)
    try:
        cache.atomic_write_bytes(path, facts.to_bytes())
    except OSError as exc:
        if notes is not None:
            notes.append(f"Could not cache the decoder facts ({exc})")
    return facts
