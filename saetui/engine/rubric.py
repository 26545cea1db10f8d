"""The guide's rubric: bands, points, the 0-5 score, ratings, advice and the definitions.

Pure and plain: functions of the measured numbers (see `metrics.py` for how they are
measured) that follow `../shared/spec/metrics.md` and the user's guide exactly. Where the
guide leaves a choice open (L0's tolerance, the interpretability criterion, the dense
line), the choice is a constant here and is named in `DEFINITIONS`, so the report can
show it. This module imports nothing of saetui's: `metrics.py` takes its thresholds from
here, and `evaluate.py` applies the rubric to a measured report.
"""

from __future__ import annotations

import math
from typing import Any

EXCELLENT, GOOD, FAIR, POOR = "excellent", "good", "fair", "poor"
BANDS_ORDER = (EXCELLENT, GOOD, FAIR, POOR)
MAX_SCORE = 5
# Dense features fire on more than this fraction of tokens (SAEBench).
DENSE_THRESHOLD = 0.10
# L0 is "close to k" within these relative gaps (saetui's tolerance: the guide only says "close").
L0_GOOD_GAP = 0.10
L0_FAIR_GAP = 0.25
# The interpretability criterion (see DEFINITIONS["interpretability"]).
INTERP_CANDIDATES = 100
INTERP_TOP_EXAMPLES = 20
INTERP_MIN_SHARE = 0.5


# -- bands, score, rating, advice ------------------------------------------------------


def band(metric: str, value: float | None) -> str | None:
    """excellent / good / fair / poor for a guide metric (None: no band defined)."""
    if value is None:
        return None
    v = float(value)
    if math.isnan(v):
        return POOR
    if metric == "mse":
        return EXCELLENT if v < 0.01 else GOOD if v < 0.05 else FAIR if v < 0.10 else POOR
    if metric == "cosine_similarity":
        return EXCELLENT if v > 0.95 else GOOD if v > 0.90 else FAIR if v > 0.85 else POOR
    if metric == "explained_variance":
        return EXCELLENT if v > 0.90 else GOOD if v > 0.80 else FAIR if v > 0.70 else POOR
    if metric == "dead_fraction":
        return EXCELLENT if v < 0.30 else GOOD if v < 0.50 else FAIR if v < 0.70 else POOR
    if metric == "interpretability":
        return GOOD if v >= 8 else FAIR if v >= 5 else POOR
    return None


def _known_band(metric: str, value: float) -> str:
    """band() for a metric it defines, given a number: never None."""
    b = band(metric, value)
    assert b is not None, metric
    return b


def l0_band(l0_mean: float, k: int) -> str:
    """How close the mean L0 is to k (saetui's tolerance, named in DEFINITIONS)."""
    if k <= 0 or not math.isfinite(l0_mean):
        return POOR
    gap = abs(l0_mean - k) / k
    return GOOD if gap <= L0_GOOD_GAP else FAIR if gap <= L0_FAIR_GAP else POOR


RECONSTRUCTION_POINTS = {EXCELLENT: 2.0, GOOD: 1.5, FAIR: 1.0, POOR: 0.0}
SPARSITY_POINTS = {EXCELLENT: 2.0, GOOD: 1.5, FAIR: 1.0, POOR: 0.0}
INTERPRETABILITY_POINTS = {GOOD: 1.0, FAIR: 0.5, POOR: 0.0}

RATINGS = {
    EXCELLENT: "Excellent - ready for production research",
    GOOD: "Good - suitable for interpretability work",
    FAIR: "Fair - consider retraining with different hyperparameters",
    POOR: "Poor - retraining strongly recommended",
}
NEXT_STEP_GO = "Score >= 3.5: go on to feature analysis."
NEXT_STEP_RETRAIN = "Score < 3.5: consider retraining (see the advice) before feature analysis."


def rating(score: float) -> str:
    return EXCELLENT if score >= 4.5 else GOOD if score >= 3.5 else FAIR if score >= 2.5 else POOR


def quality_score(cosine: float, dead_fraction_practical: float, n_interpretable: int) -> dict[str, Any]:
    """The guide's 0-5 score, its parts, its rating and its next step."""
    rec = RECONSTRUCTION_POINTS[_known_band("cosine_similarity", cosine)]
    spa = SPARSITY_POINTS[_known_band("dead_fraction", dead_fraction_practical)]
    itp = INTERPRETABILITY_POINTS[_known_band("interpretability", n_interpretable)]
    total = rec + spa + itp
    r = rating(total)
    return {
        "reconstruction": rec,
        "sparsity": spa,
        "interpretability": itp,
        "total": total,
        "max": MAX_SCORE,
        "rating": r,
        "verdict": RATINGS[r],
        "next_step": NEXT_STEP_GO if total >= 3.5 else NEXT_STEP_RETRAIN,
        "proceed": total >= 3.5,
    }


ADVICE = {
    "reconstruction": {
        "title": "Poor reconstruction",
        "symptoms": "cosine similarity < 0.85, MSE > 0.10, explained variance < 70 %",
        "causes": ["expansion factor too small", "k (sparsity) too low", "too few training epochs", "poor training data"],
        "solutions": [
            "increase the expansion factor, e.g. 64 with k 256",
            "or keep more features active, e.g. k 200",
            "or train longer, e.g. 10 epochs instead of 5",
        ],
    },
    "dead_features": {
        "title": "Too many dead features",
        "symptoms": "dead features > 80 %, most features never activate",
        "causes": [
            "dataset not diverse enough",
            "training stopped before ghost gradients engaged",
            "expansion factor too high",
            "k (sparsity) too low",
        ],
        "solutions": [
            "use a more diverse dataset",
            "enable ghost gradients earlier: dead_feature_window 500 with sparsity_warm_up_steps 2000",
            "or reduce the expansion factor, e.g. 16 with k 64",
        ],
    },
    "interpretability": {
        "title": "Features not interpretable",
        "symptoms": "top activating texts seem random, no clear pattern",
        "causes": [
            "SAE under-trained",
            "wrong layer or component",
            "dataset too homogeneous",
            "too few examples to see a pattern",
        ],
        "solutions": [
            "look at the top 100 examples instead of 20",
            "try other layers",
            "use a more diverse dataset",
        ],
    },
}
DEAD_NOTE = (
    "The practical dead fraction is poor (>= 70 %) but not above the guide's troubleshooting line of 80 %; "
    "the guide expects 60-75 % dead with ghost gradients."
)


def advice(bands: dict[str, str | None], dead_fraction_practical: float) -> list[dict[str, Any]]:
    """The guide's troubleshooting entries for whatever is poor."""
    out: list[dict[str, Any]] = []
    poor_rec = [m for m in ("cosine_similarity", "mse", "explained_variance") if bands.get(m) == POOR]
    if poor_rec:
        out.append(dict(ADVICE["reconstruction"], topic="reconstruction", triggered_by=poor_rec))
    if dead_fraction_practical > 0.80:
        out.append(dict(ADVICE["dead_features"], topic="dead_features", triggered_by=["dead_fraction"]))
    elif bands.get("dead_fraction") == POOR:
        out.append({"topic": "dead_features", "title": "Many dead features", "note": DEAD_NOTE, "triggered_by": ["dead_fraction"]})
    if bands.get("interpretability") == POOR:
        out.append(dict(ADVICE["interpretability"], topic="interpretability", triggered_by=["interpretability"]))
    return out


DEFINITIONS: dict[str, str] = {
    "tokens": "Every metric uses the activations at the SAE's hook over the evaluation contexts; "
    "the BOS position of each context is excluded.",
    "mse": "Mean over tokens and dimensions of (x - x_hat)^2, in the activation's units. "
    "Bands: excellent < 0.01, good < 0.05, fair < 0.10, poor otherwise.",
    "cosine_similarity": "Mean over tokens of cos(x, x_hat). Bands: excellent > 0.95, good > 0.90, "
    "fair > 0.85, poor otherwise. Scores reconstruction: 2 / 1.5 / 1 / 0 points.",
    "explained_variance": "The guide's form, 1 - var(x - x_hat) / var(x) over all elements pooled "
    "(used for the band). SAEBench's form, 1 - sum||x - x_hat||^2 / sum||x - mean_token(x)||^2, is shown "
    "beside it. Bands: excellent > 90 %, good > 80 %, fair > 70 %, poor otherwise.",
    "l0": "Mean number of non-zero features per token, with the median, 10th and 90th percentile of the "
    f"per-token counts. Should be close to k (saetui's bands: within {L0_GOOD_GAP:.0%} good, "
    f"within {L0_FAIR_GAP:.0%} fair).",
    "dead_features": "Strict: features that never fire on the evaluation tokens. Practical (the guide's, "
    "used for the score): features firing on fewer than max(10, 1 % of tokens). Bands on the practical "
    "fraction: excellent < 30 %, good < 50 %, fair < 70 %, poor otherwise; 2 / 1.5 / 1 / 0 points.",
    "interpretability": f"Among the {INTERP_CANDIDATES} most frequent live features, those with at least "
    f"{INTERP_TOP_EXAMPLES} firings whose {INTERP_TOP_EXAMPLES} strongest activations fall on one token "
    f"string (ignoring case and spaces) at least {INTERP_MIN_SHARE:.0%} of the time, counted once per "
    "distinct token; plus features named in the registry with confidence high. "
    "Bands: good >= 8, fair >= 5, poor otherwise; 1 / 0.5 / 0 points.",
    "score": "reconstruction (0-2, by cosine) + sparsity (0-2, by the practical dead fraction) + "
    "interpretability (0-1). 4.5-5 excellent, 3.5-4.5 good, 2.5-3.5 fair, < 2.5 poor. "
    "Score >= 3.5: go on to feature analysis.",
    "ce_loss": "Next-token cross-entropy (nats) of the model as is (clean), with the hook's activation "
    "replaced by the SAE's reconstruction inside the forward pass (SAE), and replaced by zeros (zero). "
    "The BOS position keeps its clean activation; every non-BOS target token is scored.",
    "ce_loss_recovered": "(CE_zero - CE_sae) / (CE_zero - CE_clean): 1 is perfect, 0 is no better than "
    "zero ablation.",
    "kl": "Mean KL(p_clean || p_sae) of next-token distributions over the same positions; "
    "KL score = (KL_zero - KL_sae) / KL_zero, 1 is perfect.",
    "l2_ratio": "Mean over tokens of ||x_hat|| / ||x||; below 1 means the SAE shrinks activations.",
    "density": "Per feature, the fraction of evaluation tokens it fires on, shown as a histogram of "
    f"log10(density); dead features are counted apart. Dense features fire on more than {DENSE_THRESHOLD:.0%} "
    "of tokens.",
}
