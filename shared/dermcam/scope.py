"""Is this photograph like the ones the model was calibrated on? k-NN distance in its features.

The score (Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors"):
the cosine distance from the photograph's pooled target-layer features (`engine.pooled`,
the predict graph's `features` output) to its k-th nearest calibration photograph, the
features L2-normalised. No outlier photographs are needed to fit it, so the rule is not
tuned to any one kind of outlier; the threshold is a conformal quantile of the calibration
photographs' own leave-one-out scores, so a new in-scope photograph (exchangeable with them)
is accepted with probability >= the stated acceptance. `model_store.calibration.scope` fits
it; the reference features live beside the manifest (`trust.scope.reference`, hash-checked).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1


@dataclass(frozen=True)
class Scope:
    k: int
    threshold: float
    acceptance: float  # the in-scope acceptance the threshold was chosen for
    measured: dict[str, Any]  # in-scope acceptance on the held-out part
    reference: np.ndarray  # [n, features], L2-normalised, float32

    def distance(self, features: np.ndarray) -> float:
        """Cosine distance from one photograph's features to its k-th nearest reference."""
        return float(knn_distances(self.reference, normalised(features[None]), self.k)[0])

    def declines(self, features: np.ndarray | None) -> dict[str, Any] | None:
        """The abstain object when the photograph is out of scope, else None. Features are
        None for artifacts exported before the predict graph returned them: no check then."""
        if features is None:
            return None
        score = self.distance(features)
        if score <= self.threshold:
            return None
        return {
            "reason": "not a skin lesion",
            "detail": "unlike every photograph the model was calibrated on",
            "score": round(score, 4),
            "threshold": round(self.threshold, 4),
            "acceptance": self.acceptance,
        }


def normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def knn_distances(
    reference: np.ndarray, queries: np.ndarray, k: int, leave_one_out: bool = False
) -> np.ndarray:
    """Cosine distance of each (normalised) query to its k-th nearest reference; with
    `leave_one_out` the queries are the reference itself and each skips its own row."""
    distance = 1.0 - queries @ reference.T
    if leave_one_out:
        np.fill_diagonal(distance, np.inf)
    k = min(k, reference.shape[0] - int(leave_one_out))
    return np.partition(distance, k - 1, axis=1)[:, k - 1]


def read_scope(block: dict | None, directory: Path) -> Scope | None:
    """The scope rule of a trust block, its reference features checked against their hash."""
    if not block:
        return None
    if block.get("format") != FORMAT:
        raise ValueError(f"trust.scope format {block.get('format')!r}; this code reads {FORMAT}")
    path = directory / block["reference"]
    if not path.is_file():
        raise ValueError(f"trust.scope names {path.name}, which is not beside the manifest")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != block["sha256"]:
        raise ValueError(f"{path.name} does not match the sha256 in trust.scope")
    reference = np.load(path, allow_pickle=False).astype(np.float32)
    return Scope(
        k=int(block["k"]),
        threshold=float(block["threshold"]),
        acceptance=float(block["acceptance"]),
        measured=dict(block.get("measured") or {}),
        reference=normalised(reference),
    )
