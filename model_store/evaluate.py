"""Held-out accuracy and the Grad-CAM pointing game, run on exported artifacts."""

from __future__ import annotations

import numpy as np

from dermcam import cam
from dermcam.engine import Engine


def evaluate(
    engine: Engine,
    images: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray,
    method: str = "gradcam",
    extras: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, float]:
    """Accuracy, and the share of images whose CAM maximum (for the true class, upsampled to
    the image) falls inside the lesion mask: the pointing game of Zhang et al. 2016.
    `extras`: each image's other model inputs (patient metadata), when the model takes any."""
    h, w = engine.manifest.height, engine.manifest.width
    correct = hits = 0
    for i, (image, label, mask) in enumerate(zip(images, labels, masks, strict=True)):
        tensor = image[None].astype(np.float32)
        if tensor.shape[1:3] != (h, w):
            raise ValueError(f"images must be {h}x{w}")
        explanation = engine.explain(tensor, int(label), extras[i] if extras else None)
        correct += int(np.argmax(explanation.probabilities)) == int(label)
        full = cam.upsample(
            cam.class_map(explanation.activations, explanation.gradients, method), w, h
        )
        y, x = np.unravel_index(int(np.argmax(full)), full.shape)
        hits += bool(mask[y, x])
    n = len(labels)
    return {"images": n, "accuracy": correct / n, "pointing_game": hits / n}
