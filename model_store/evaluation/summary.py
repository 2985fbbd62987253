"""Per-image rows → the evaluation's summary: classification, localisation beside image-blind
baselines, faithfulness beside a random order, the sanity check, and where the time went.
The same function summarises rows made in one process or on a Beam pipeline's workers."""

from __future__ import annotations

from typing import Any

import numpy as np

from dermcam import cam
from model_store.evaluation import metrics, verdicts

SANITY_FLAG = 0.8  # median rank correlation at or above which maps barely changed
LOCALISATION = ["pointing_game", "energy_pointing_game", *(f"iou@{x}" for x in metrics.IOU_LEVELS)]


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def classification(rows: list[dict], codes: list[str]) -> dict | None:
    labelled = sorted((r for r in rows if r["label"] is not None), key=lambda r: r["id"])
    if not labelled:
        return None
    probs = np.array([r["probabilities"] for r in labelled], dtype=np.float64)
    return metrics.classification(probs, np.array([r["label"] for r in labelled]), codes)


def skipped(rows: list[dict]) -> dict[str, Any]:
    """How many images were not used, by kind of reason, and each one's reason."""
    left = sorted((r for r in rows if "skipped" in r), key=lambda r: r["id"])
    kinds: dict[str, int] = {}
    for row in left:
        kind = row["skipped"].split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"count": len(left), "by_reason": kinds, "images": {r["id"]: r["skipped"] for r in left}}


def summarise(rows: list[dict], codes: list[str], methods: list[str]) -> dict[str, Any]:
    left = skipped(rows)
    rows = sorted((r for r in rows if "skipped" not in r), key=lambda r: r["id"])
    summary: dict[str, Any] = {"images": len(rows), "methods": {}}
    if left["count"]:
        summary["skipped"] = left
    found = classification(rows, codes)
    if found:
        summary["classification"] = found
    masked = [r for r in rows if "baselines" in r]
    if masked:
        summary["baselines"] = {
            name: {k: _mean([r["baselines"][name][k] for r in masked]) for k in LOCALISATION}
            for name in ("centre", "uniform")
        }
    curved = [r for r in rows if "random" in r]
    if curved:
        summary["random_order"] = {
            k: _mean([r["random"][k] for r in curved]) for k in ("deletion", "insertion")
        }
    for method in methods:
        figures: dict[str, Any] = {}
        if curved:
            figures = {
                k: _mean([r["methods"][method][k] for r in curved])
                for k in ("deletion", "insertion")
            }
        if masked:
            figures.update(
                {k: _mean([r["methods"][method][k] for r in masked]) for k in LOCALISATION}
            )
        rhos = [r["sanity"][method] for r in rows if method in r.get("sanity", {})]
        if rhos:
            rho = float(np.median(rhos))
            figures["sanity_rank_correlation"] = round(rho, 4)
            figures["sanity_flag"] = rho >= SANITY_FLAG
        figures["blank_maps"] = blank_maps(rows, method)
        summary["methods"][method] = figures
    flat = [r["id"] for r in rows if r.get("flat_rows")]
    if flat:
        summary["flat_rows"] = flat
    judged = verdicts.summary(rows, codes)
    if judged:
        summary["trust"] = judged
    summary["seconds_per_image"] = time_per_image(rows)
    return summary


def blank_maps(rows: list[dict], method: str) -> list[str]:
    """Images whose map is blank (`cam.is_blank`); they score 0 in the localisation figures."""
    return [
        r["id"]
        for r in rows
        if method in r.get("grids", {}) and cam.is_blank(np.asarray(r["grids"][method]))
    ]


def time_per_image(rows: list[dict]) -> dict[str, float]:
    """Mean seconds per image in each stage (decode, predict, explain, curves, sanity)."""
    stages: dict[str, list[float]] = {}
    for row in rows:
        for stage, seconds in row.get("seconds", {}).items():
            stages.setdefault(stage, []).append(seconds)
    return {stage: round(float(np.mean(v)), 4) for stage, v in stages.items()}
