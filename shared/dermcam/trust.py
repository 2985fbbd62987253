"""What an answer may claim, from the manifest's `trust` block (written by model_store.calibrate
on the user's own labelled photographs): calibrated probabilities, a referral decision at an
operating point chosen for sensitivity, and a conformal prediction set. NumPy only.

- Calibration: temperature scaling. The artifacts answer probabilities; log p is the logit
  vector up to a constant per image, so softmax(log p / T) is the calibrated softmax exactly
  (and sigmoid(logit(p) / T) per unit for independent, multi-label heads).
- Decision: per class of concern (one class, or a group summed, e.g. mel+bcc+akiec), refer
  when its calibrated probability reaches the threshold that gave the target sensitivity.
- Prediction set (exclusive heads): split conformal, LAC score 1 - p_y; a class with enough
  calibration photographs has its own threshold (Mondrian), the others share the marginal one.
- Scope: photographs to decline before any diagnosis: quality bounds (`dermcam.quality`)
  checked on the upload, and a k-NN distance in the model's features (`dermcam.scope`).
A manifest without the block serves as before, marked `"calibrated": false`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dermcam.errors import OutOfScope
from dermcam.quality import Bounds, measure
from dermcam.scope import Scope, read_scope

FORMAT = 1
TINY = 1e-30  # below float32's smallest normal: a probability that underflowed to 0


@dataclass(frozen=True)
class Concern:
    name: str
    classes: tuple[int, ...]  # label indices summed into the concern's score
    threshold: float
    target_sensitivity: float
    measured: dict[str, Any]


@dataclass(frozen=True)
class Trust:
    version: str
    temperature: float
    independent: bool  # multi-label head: per-unit sigmoid scaling, no prediction set
    concerns: tuple[Concern, ...]
    coverage: float | None
    set_thresholds: np.ndarray | None  # per class: the largest LAC score (1 - p) in the set
    set_measured: dict[str, Any]
    quality: Bounds | None  # photographs too small, dark, washed out or blurred to read
    scope: Scope | None  # photographs unlike the calibration set: "not a skin lesion"


def read_trust(raw: dict[str, Any], codes: list[str], directory: Path) -> Trust | None:
    """The manifest's trust block, or None when there is none. ValueError when it is malformed
    or names classes the model does not have."""
    block = raw.get("trust")
    if not block:
        return None
    if block.get("format") != FORMAT:
        raise ValueError(f"trust block format {block.get('format')!r}, expected {FORMAT}")
    index = {code: i for i, code in enumerate(codes)}

    def classes_of(names: list[str]) -> tuple[int, ...]:
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(f"trust block names classes the model lacks: {unknown}")
        return tuple(index[n] for n in names)

    concerns = tuple(
        Concern(
            name=str(c["name"]),
            classes=classes_of(c["classes"]),
            threshold=float(c["threshold"]),
            target_sensitivity=float(c["target_sensitivity"]),
            measured=dict(c.get("measured") or {}),
        )
        for c in block.get("concerns", [])
    )
    sets = block.get("prediction_sets")
    thresholds = None
    if sets:
        per_class = sets["thresholds"]
        thresholds = np.array([float(per_class[code]) for code in codes], dtype=np.float64)
    temperature = float(block["calibration"]["temperature"])
    if not temperature > 0:
        raise ValueError("the temperature must be positive")
    return Trust(
        version=str(block["version"]),
        temperature=temperature,
        independent=bool(block.get("independent", False)),
        concerns=concerns,
        coverage=float(sets["coverage"]) if sets else None,
        set_thresholds=thresholds,
        set_measured=dict(sets.get("measured") or {}) if sets else {},
        quality=Bounds.from_block(block["quality"]) if block.get("quality") else None,
        scope=read_scope(block.get("scope"), directory),
    )


def calibrated(probs: np.ndarray, temperature: float, independent: bool = False) -> np.ndarray:
    """Probabilities rescaled by the temperature: [classes] or [n, classes], float64."""
    p = np.clip(np.asarray(probs, dtype=np.float64), TINY, 1.0)
    if independent:
        q = np.clip(p, TINY, 1.0 - 1e-16)
        return 1.0 / (1.0 + np.exp(-np.log(q / (1.0 - q)) / temperature))
    z = np.log(p) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def concern_score(
    probs: np.ndarray, classes: tuple[int, ...], independent: bool = False
) -> np.ndarray:
    """The probability of a concern, [n] or a scalar: the sum over its classes (exclusive
    heads); for an independent head, the largest of them."""
    picked = np.asarray(probs)[..., list(classes)]
    return picked.max(axis=-1) if independent else picked.sum(axis=-1)


def prediction_set(probs: np.ndarray, thresholds: np.ndarray) -> list[int]:
    """Classes whose LAC score 1 - p is within their threshold, most probable first, and the
    most probable class always: a set that left out the class the answer ranks first would
    read as a contradiction (adding it only raises the coverage; the measured figures are of
    this rule)."""
    order = [int(i) for i in np.argsort(-probs, kind="stable")]
    return [i for n, i in enumerate(order) if n == 0 or 1.0 - probs[i] <= thresholds[i]]


def decision(trust: Trust, probs: np.ndarray, codes: list[str]) -> dict[str, Any] | None:
    """Refer or not, by the first concern (in manifest order) whose score reaches its
    threshold; the figures measured for that operating point go with it."""
    if not trust.concerns:
        return None
    checks = []
    for concern in trust.concerns:
        score = float(concern_score(probs, concern.classes, trust.independent))
        checks.append(
            {
                "concern": concern.name,
                "classes": [codes[i] for i in concern.classes],
                "probability": round(score, 6),
                "threshold": round(concern.threshold, 6),
                "target_sensitivity": concern.target_sensitivity,
                "refer": score >= concern.threshold,
                "measured": concern.measured,
            }
        )
    referred = [c for c in checks if c["refer"]]
    return {
        "refer": bool(referred),
        "because": referred[0]["concern"] if referred else None,
        "checks": checks,
    }


def assess(trust: Trust | None, raw: np.ndarray, codes: list[str]) -> dict[str, Any]:
    """The served probabilities and what may be said of them, for the answer."""
    if trust is None:
        return {"calibrated": False, "probabilities": np.asarray(raw, dtype=np.float64)}
    probs = calibrated(raw, trust.temperature, trust.independent)
    found: dict[str, Any] = {
        "calibrated": True,
        "probabilities": probs,
        "trust": {"version": trust.version, "temperature": round(trust.temperature, 4)},
        "decision": decision(trust, probs, codes),
    }
    if trust.set_thresholds is not None and not trust.independent:
        members = prediction_set(probs, trust.set_thresholds)
        found["prediction_set"] = {
            "classes": [codes[i] for i in members],
            "coverage": trust.coverage,
            "measured": trust.set_measured,
        }
    return found


def figures(block: dict[str, Any] | None) -> dict[str, Any] | None:
    """The trust block's figures a reader needs (GET ?model=1, the page's model card): what it
    was measured on and what each rule gave on the held-out part."""
    if not block:
        return None
    calibration = block["calibration"]
    sets = block.get("prediction_sets")
    scope = block.get("scope")
    return {
        "version": block["version"],
        "data": {k: block["data"][k] for k in ("images", "per_class", "split")},
        "calibration": {
            "temperature": calibration["temperature"],
            "ece_before": calibration["before"]["ece"],
            "ece_after": calibration["after"]["ece"],
        },
        "concerns": [
            {k: c[k] for k in ("name", "classes", "target_sensitivity", "threshold", "measured")}
            for c in block.get("concerns", [])
        ],
        "prediction_sets": {
            "coverage": sets["coverage"],
            "measured": {
                k: sets["measured"][k] for k in ("coverage", "mean_size") if k in sets["measured"]
            },
        }
        if sets
        else None,
        "scope": {k: scope[k] for k in ("acceptance", "measured")} if scope else None,
        "quality": block.get("quality"),
    }


ADVICE = {
    "too small": "Send the photograph at a larger size (at least {min_side} px on its short side).",
    "too dark": "Retake the photograph in better light.",
    "over-exposed": "Retake the photograph with less light or without the flash glare.",
    "too blurred": "Retake the photograph in focus, holding the camera or dermatoscope still.",
    "not a skin lesion": "Send a dermoscopic photograph of one skin lesion, centred; this "
    "model was calibrated on no photograph like this one.",
}


def _decline(abstain: dict[str, Any], bounds: Bounds | None = None) -> OutOfScope:
    reason = abstain["reason"]
    advice = ADVICE[reason].format(**(bounds.block() if bounds else {}))
    abstain["advice"] = advice
    return OutOfScope(
        f"No diagnosis: the photograph is {reason}. {advice}"
        if reason != "not a skin lesion"
        else f"No diagnosis: this does not look like a skin lesion. {advice}",
        abstain,
    )


def screen_photo(
    trust: Trust | None, image: Any, width: int, height: int, enforce: bool = True
) -> str | None:
    """Before the model: OutOfScope when the photograph fails the trust block's quality
    bounds (`image` the upright RGB PIL image, `width`, `height` the upload's). Not
    enforced, the reason is returned instead (None: it passes)."""
    if trust is None or trust.quality is None:
        return None
    quality = measure(image, width, height)
    reason = quality.problem(trust.quality)
    if reason and enforce:
        abstain = {"reason": reason, "figures": quality.figures(), "bounds": trust.quality.block()}
        raise _decline(abstain, trust.quality)
    return reason


def screen_features(
    trust: Trust | None, features: np.ndarray | None, enforce: bool = True
) -> str | None:
    """After the forward pass, before any answer or heat map: OutOfScope when the photograph's
    features are unlike every calibration photograph's (not enforced: the reason, or None)."""
    if trust is None or trust.scope is None:
        return None
    abstain = trust.scope.declines(features)
    if abstain and enforce:
        raise _decline(abstain)
    return abstain["reason"] if abstain else None
