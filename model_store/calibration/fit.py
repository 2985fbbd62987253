"""The figures a trust block rests on, fitted on one part of the user's photographs and measured
on the other: the temperature, operating points for sensitivity, conformal thresholds; and the
calibration metrics (ECE, MCE, Brier, NLL). NumPy only; the serving side is dermcam.trust."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dermcam.trust import calibrated, concern_score

ECE_BINS = 15  # equal-width bins of the top probability, as Guo et al. 2017 report ECE
MONDRIAN_MIN = 30  # calibration photographs a class needs for a threshold of its own
WILSON_Z = 1.959964  # 95 % intervals


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def fit_temperature(raw: np.ndarray, labels: np.ndarray, independent: bool = False) -> float:
    """The temperature minimising the NLL of the labels: a grid over log T in [-3, 3], then
    golden-section refinement around the best point (the NLL is convex in 1/T)."""

    def loss(log_t: float) -> float:
        scaled = calibrated(raw, math.exp(log_t), independent)
        if independent:  # one-vs-rest NLL over every unit
            hot = np.eye(raw.shape[1])[labels]
            q = np.clip(scaled, 1e-12, 1 - 1e-12)
            return float(-np.mean(hot * np.log(q) + (1 - hot) * np.log(1 - q)))
        return nll(scaled, labels)

    grid = np.linspace(-3.0, 3.0, 61)
    best = float(grid[int(np.argmin([loss(t) for t in grid]))])
    lo, hi = best - 0.1, best + 0.1
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(a) < loss(b):
            hi = b
        else:
            lo = a
    return math.exp((lo + hi) / 2)


def calibration_metrics(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """ECE and MCE over equal-width bins of the top probability, Brier score (sum over
    classes, mean over images), NLL, and the mean top probability beside the accuracy."""
    top = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1], right=True), 0, bins - 1)
    ece = mce = 0.0
    table = []
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        gap = abs(float(right[inside].mean()) - float(top[inside].mean()))
        ece += inside.mean() * gap
        mce = max(mce, gap)
        table.append(
            {
                "bin": [round(float(edges[b]), 4), round(float(edges[b + 1]), 4)],
                "images": int(inside.sum()),
                "confidence": round(float(top[inside].mean()), 4),
                "accuracy": round(float(right[inside].mean()), 4),
            }
        )
    hot = np.eye(probs.shape[1])[labels]
    return {
        "images": int(len(labels)),
        "ece": round(float(ece), 4),
        "mce": round(float(mce), 4),
        "brier": round(float(np.mean(np.sum((probs - hot) ** 2, axis=1))), 4),
        "nll": round(nll(probs, labels), 4),
        "mean_top_probability": round(float(top.mean()), 4),
        "accuracy": round(float(right.mean()), 4),
        "bins": bins,
        "reliability": table,
    }


def wilson(successes: int, trials: int, z: float = WILSON_Z) -> list[float] | None:
    """The Wilson score interval of a proportion (95 %), or None with no trials."""
    if trials == 0:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    spread = math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    half = z * spread / (1 + z * z / trials)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def sensitivity_threshold(scores: np.ndarray, positive: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (score >= threshold) on these photographs
    reaches `target`: the k-th highest positive score, k = ceil(target × positives)."""
    ranked = np.sort(scores[positive])[::-1]
    k = max(1, math.ceil(target * len(ranked) - 1e-9))
    return float(ranked[k - 1])


def operating_point(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    """Sensitivity and specificity at `threshold`, with Wilson 95 % intervals."""
    called = scores >= threshold
    tp, fn = int((called & positive).sum()), int((~called & positive).sum())
    tn, fp = int((~called & ~positive).sum()), int((called & ~positive).sum())
    return {
        "positives": tp + fn,
        "negatives": tn + fp,
        "sensitivity": round(tp / (tp + fn), 4) if tp + fn else None,
        "sensitivity_ci": wilson(tp, tp + fn),
        "specificity": round(tn / (tn + fp), 4) if tn + fp else None,
        "specificity_ci": wilson(tn, tn + fp),
        "referred": round(float(called.mean()), 4),
    }


def concern_figures(
    fit_probs: np.ndarray,
    fit_labels: np.ndarray,
    report_probs: np.ndarray,
    report_labels: np.ndarray,
    classes: tuple[int, ...],
    target: float,
    independent: bool = False,
) -> dict[str, Any]:
    """One concern's threshold (chosen on the fit part) and what it gives on both parts."""
    fit_scores = concern_score(fit_probs, classes, independent)
    threshold = sensitivity_threshold(fit_scores, np.isin(fit_labels, classes), target)
    report_scores = concern_score(report_probs, classes, independent)
    return {
        "threshold": threshold,
        "fit": operating_point(fit_scores, np.isin(fit_labels, classes), threshold),
        "measured": operating_point(report_scores, np.isin(report_labels, classes), threshold),
    }


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """Split conformal: the ceil((n + 1) × coverage)-th smallest score, 1.0 (every class)
    when n is too small for that rank to exist."""
    n = len(scores)
    rank = math.ceil((n + 1) * coverage - 1e-9)
    if rank > n:
        return 1.0
    return float(np.sort(scores)[rank - 1])


def conformal_thresholds(
    probs: np.ndarray, labels: np.ndarray, coverage: float, minimum: int = MONDRIAN_MIN
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per class, the LAC threshold: its own (Mondrian, class-conditional coverage) when it has
    at least `minimum` calibration photographs, else the marginal one over all photographs."""
    scores = 1.0 - probs[np.arange(len(labels)), labels]
    marginal = conformal_quantile(scores, coverage)
    thresholds = np.full(probs.shape[1], marginal)
    own = []
    for k in range(probs.shape[1]):
        if int((labels == k).sum()) >= minimum:
            thresholds[k] = conformal_quantile(scores[labels == k], coverage)
            own.append(k)
    return thresholds, {"marginal": marginal, "mondrian_classes": own, "minimum": minimum}


def set_figures(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> dict[str, Any]:
    """Empirical coverage and mean size of the served sets (dermcam.trust.prediction_set)."""
    from dermcam.trust import prediction_set

    sets = [prediction_set(p, thresholds) for p in probs]
    covered = np.array([int(y) in s for s, y in zip(sets, labels, strict=True)])
    per_class = {}
    for k in np.unique(labels):
        inside = labels == k
        per_class[int(k)] = {
            "images": int(inside.sum()),
            "coverage": round(float(covered[inside].mean()), 4),
        }
    return {
        "images": int(len(labels)),
        "coverage": round(float(covered.mean()), 4),
        "coverage_ci": wilson(int(covered.sum()), len(labels)),
        "mean_size": round(float(np.mean([len(s) for s in sets])), 3),
        "per_class": per_class,
    }
