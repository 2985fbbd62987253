"""What the functions would answer about each photograph of an evaluation or an archive, from
the manifest's trust block: declined (and why), or the calibrated top class, the referral
decision and the prediction set. Rows carry it as `trust`; the summary counts it."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from dermcam import trust
from dermcam.manifest import Manifest


def verdict(
    manifest: Manifest,
    image: Image.Image,
    width: int,
    height: int,
    raw: np.ndarray,
    features: np.ndarray | None,
) -> dict[str, Any] | None:
    """One photograph's verdict (None for a model without a trust block). `image` is the
    upright working picture, `width`, `height` the upload's, `raw` the model's probabilities,
    `features` its pooled target activations."""
    block = manifest.trust
    if block is None:
        return None
    abstain = trust.screen_photo(block, image, width, height, enforce=False)
    abstain = abstain or trust.screen_features(block, features, enforce=False)
    said = trust.assess(block, raw, manifest.codes)
    probs = said["probabilities"]
    top = int(np.argmax(probs))
    decision = said.get("decision")
    found: dict[str, Any] = {
        "abstain": abstain,
        "top": manifest.codes[top],
        "probability": round(float(probs[top]), 6),
        "refer": decision["refer"] if decision else None,
        "because": decision["because"] if decision else None,
    }
    if "prediction_set" in said:
        found["prediction_set"] = said["prediction_set"]["classes"]
    return found


def summary(rows: list[dict], codes: list[str]) -> dict[str, Any] | None:
    """Over the rows with a verdict: how many were declined and why; of the answered, how
    many referred, and (labelled rows) how often the set held the true class, its mean size."""
    judged = [r for r in rows if r.get("trust")]
    if not judged:
        return None
    declined: dict[str, int] = {}
    for row in judged:
        reason = row["trust"]["abstain"]
        if reason:
            declined[reason] = declined.get(reason, 0) + 1
    answered = [r for r in judged if not r["trust"]["abstain"]]
    found: dict[str, Any] = {
        "images": len(judged),
        "declined": declined,
        "answered": len(answered),
    }
    refers = [r["trust"]["refer"] for r in answered if r["trust"]["refer"] is not None]
    if refers:
        found["referred"] = round(float(np.mean(refers)), 4)
    sets = [r for r in answered if "prediction_set" in r["trust"]]
    labelled = [r for r in sets if r.get("label") is not None]
    if sets:
        found["mean_set_size"] = round(
            float(np.mean([len(r["trust"]["prediction_set"]) for r in sets])), 3
        )
    if labelled:
        held = [codes[r["label"]] in r["trust"]["prediction_set"] for r in labelled]
        found["set_coverage"] = round(float(np.mean(held)), 4)
    return found
