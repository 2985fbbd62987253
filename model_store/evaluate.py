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
) -> dict[str, float]:
    """Accuracy, and the share of images whose CAM maximum (for the true class, upsampled to
    the image) falls inside the lesion mask: the pointing game of Zhang et al. 2016."""
    h, w = engine.manifest.height, engine.manifest.width
    correct = hits = 0
    for image, label, mask in zip(images, labels, masks, strict=True):
        tensor = image[None].astype(np.float32)
        if tensor.shape[1:3] != (h, w):
            raise ValueError(f"images must be {h}x{w}")
        explanation = engine.explain(tensor, int(label))
        correct += int(np.argmax(explanation.probabilities)) == int(label)
        full = cam.upsample(
            cam.class_map(explanation.activations, explanation.gradients, method), w, h
        )
        y, x = np.unravel_index(int(np.argmax(full)), full.shape)
        hits += bool(mask[y, x])
    n = len(labels)
    return {"images": n, "accuracy": correct / n, "pointing_game": hits / n}
