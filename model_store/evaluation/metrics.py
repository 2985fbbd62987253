"""What an explanation and a classifier are worth on a user's own images: NumPy only.

Classification: accuracy, balanced accuracy, recall per class, one-vs-rest ROC AUC, the
confusion matrix. Localisation of a map against a lesion mask: the pointing game (Zhang et
al. 2016), the energy-based pointing game (share of the map's mass inside the mask, Wang et
al. 2020) and IoU at thresholds, each with baselines that know nothing of the image: a centred
point or Gaussian (dermoscopy centres the lesion) and a uniform map. Faithfulness without
masks: deletion and insertion (Petsiuk et al. 2018), pixels blurred away from or revealed into
the image in the map's order, against a random order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

IOU_LEVELS = (0.2, 0.4, 0.6, 0.8)
STEPS = 16  # deletion / insertion: the image in 16 equal parts


# --- classification ----------------------------------------------------------------------


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance a positive outranks a negative (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    new_value = np.ones(len(values), dtype=bool)
    new_value[1:] = ordered[1:] != ordered[:-1]
    group = np.cumsum(new_value)  # each sorted value's run of ties, 1..
    bounds = np.append(np.flatnonzero(new_value), len(values))  # each run's first place; the end
    ranks = np.empty(len(values))
    ranks[order] = 0.5 * (bounds[group - 1] + 1 + bounds[group])  # ties: their average rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def classification(probabilities: np.ndarray, truth: np.ndarray, codes: list[str]) -> dict:
    """probabilities [n, classes], truth [n] (indices)."""
    predicted = probabilities.argmax(axis=1)
    classes = len(codes)
    confusion = np.zeros((classes, classes), int)
    for t, p in zip(truth, predicted, strict=True):
        confusion[t, p] += 1
    recall = {}
    for i, code in enumerate(codes):
        total = confusion[i].sum()
        recall[code] = round(confusion[i, i] / total, 4) if total else None
    seen = [r for r in recall.values() if r is not None]
    auc = {code: roc_auc(probabilities[:, i], truth == i) for i, code in enumerate(codes)}
    valid = [a for a in auc.values() if a is not None]
    return {
        "images": int(len(truth)),
        "accuracy": round(float((predicted == truth).mean()), 4),
        "balanced_accuracy": round(float(np.mean(seen)), 4) if seen else None,
        "recall": recall,
        "roc_auc": {k: (round(v, 4) if v is not None else None) for k, v in auc.items()},
        "roc_auc_macro": round(float(np.mean(valid)), 4) if valid else None,
        "confusion": {"labels": codes, "rows_true_columns_predicted": confusion.tolist()},
    }


# --- localisation ------------------------------------------------------------------------


def centred_gaussian(height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    """A Gaussian bump at the centre, sigma a fraction of each side: the baseline that knows
    only that dermoscopy centres the lesion."""
    y = (np.arange(height) + 0.5) / height - 0.5
    x = (np.arange(width) + 0.5) / width - 0.5
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))


def localisation(saliency: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """One map [h, w] ≥ 0 against one mask [h, w] (bool), same size."""
    total = float(saliency.sum())
    y, x = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    peak = float(saliency.max())
    out = {
        "pointing_game": float(mask[y, x]) if peak > 0 else 0.0,
        "energy_pointing_game": float(saliency[mask].sum() / total) if total > 0 else 0.0,
    }
    for level in IOU_LEVELS:
        region = saliency >= level * peak if peak > 0 else np.zeros_like(mask)
        union = np.logical_or(region, mask).sum()
        out[f"iou@{level}"] = float(np.logical_and(region, mask).sum() / union) if union else 0.0
    return out


def baselines(mask: np.ndarray) -> dict[str, dict[str, float]]:
    """The same figures for maps that never looked at the image."""
    h, w = mask.shape
    centre = localisation(centred_gaussian(h, w), mask)
    uniform = localisation(np.ones((h, w)), mask)
    uniform["pointing_game"] = float(mask[h // 2, w // 2])  # a flat map's maximum: nowhere
    return {"centre": centre, "uniform": uniform}


# --- faithfulness ------------------------------------------------------------------------

Scorer = Callable[[np.ndarray], np.ndarray]  # [n, H, W, 3] 0–255 → the class's probability [n]


@dataclass(frozen=True)
class Curves:
    deletion: np.ndarray  # [STEPS + 1]
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> float:
        return _auc(self.deletion)

    @property
    def insertion_auc(self) -> float:
        return _auc(self.insertion)


def _auc(curve: np.ndarray) -> float:
    """Trapezoid area over [0, 1]."""
    x = np.linspace(0.0, 1.0, len(curve))
    return float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(x)))


def blurred(image: np.ndarray, passes: int = 8) -> np.ndarray:
    """A heavily smoothed copy (box filter, repeated): where insertion starts from."""
    out = image.astype(np.float32)
    for _ in range(passes):
        padded = np.pad(out, ((2, 2), (2, 2), (0, 0)), mode="edge")
        out = (
            sum(
                padded[dy : dy + out.shape[0], dx : dx + out.shape[1]]
                for dy in range(5)
                for dx in range(5)
            )
            / 25.0
        )
    return out


def perturbation_curves(image: np.ndarray, order: np.ndarray, score: Scorer) -> Curves:
    """`image` [H, W, 3] 0–255; `order` the pixel indices, most important first. Deletion
    replaces pixels in that order by a blurred copy's; insertion reveals them into that
    copy. (Black, the original recipe's fill, looks like a dark lesion on skin: the score
    then measures the fill, not the map.)"""
    h, w, _ = image.shape
    start = blurred(image)
    deleted, inserted = [], []
    for step in range(STEPS + 1):
        chosen = order[: round(step / STEPS * h * w)]
        keep = np.ones(h * w, bool)
        keep[chosen] = False
        keep = keep.reshape(h, w, 1)
        deleted.append(np.where(keep, image, start))
        inserted.append(np.where(keep, start, image))
    scores = score(np.stack(deleted + inserted).astype(np.float32))
    return Curves(scores[: STEPS + 1], scores[STEPS + 1 :])


def map_order(saliency: np.ndarray) -> np.ndarray:
    """Pixel indices, the map's highest first (stable for ties)."""
    return np.argsort(-saliency.ravel(), kind="stable")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two maps (the sanity check's figure)."""
    ra = np.argsort(np.argsort(a.ravel(), kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b.ravel(), kind="stable"), kind="stable").astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])
