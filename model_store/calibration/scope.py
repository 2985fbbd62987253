"""The out-of-scope rule a trust block carries: k-NN distance in the model's features, with a
threshold that accepts a stated share of in-scope photographs (dermcam.scope serves it).

Fitted on in-scope photographs only. The reference is the fit part's features; the
threshold is the conformal quantile of their leave-one-out k-NN distances, so a photograph
exchangeable with them is accepted with probability >= `acceptance`; the held-out part
measures what it does accept. No outlier photograph enters the fit, so the rule is the same
whatever outliers a deployment meets (docs/TRUST.md measures it on several kinds).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from dermcam.scope import FORMAT, knn_distances, normalised
from model_store.calibration.fit import wilson

K = 5  # neighbours: small, as a clinic's calibration set is (a few hundred photographs)
ACCEPTANCE = 0.95  # in-scope photographs accepted; 1 in 20 real lesions declined otherwise
REFERENCE = "scope_reference.npy"


def conformal_threshold(scores: np.ndarray, acceptance: float) -> float:
    """The ceil((n + 1) * acceptance)-th smallest score: accepts a new exchangeable score
    with probability >= acceptance (the largest score when n is too small for it)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    rank = min(math.ceil((len(ordered) + 1) * acceptance), len(ordered))
    return float(ordered[rank - 1])


def fit_scope(
    fit_features: np.ndarray,
    report_features: np.ndarray,
    acceptance: float = ACCEPTANCE,
    k: int = K,
) -> tuple[dict, np.ndarray]:
    """The trust block's `scope` entry (without the file fields) and the reference features."""
    reference = normalised(fit_features)
    if len(reference) <= k:
        raise ValueError(f"the out-of-scope rule needs more than {k} fit photographs")
    threshold = conformal_threshold(knn_distances(reference, reference, k, True), acceptance)
    held = knn_distances(reference, normalised(report_features), k)
    accepted = int((held <= threshold).sum())
    block = {
        "format": FORMAT,
        "score": f"cosine distance to the {k}-th nearest calibration photograph, pooled "
        "target-layer features (Sun et al. 2022)",
        "k": k,
        "acceptance": acceptance,
        "threshold": round(threshold, 6),
        "measured": {
            "in_scope": len(held),
            "accepted": round(accepted / len(held), 4) if len(held) else None,
            "accepted_ci": wilson(accepted, len(held)),
        },
    }
    return block, reference.astype(np.float16)


def write_reference(model_dir: str | Path, block: dict, reference: np.ndarray) -> dict:
    """The reference features beside the manifest; the block gains their name and hash."""
    path = Path(model_dir) / REFERENCE
    np.save(path, reference, allow_pickle=False)
    return {
        **block,
        "reference": REFERENCE,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
