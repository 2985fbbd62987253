"""BatchNorm calibration for untrained (weights=None) models.

A freshly initialised keras.applications model has moving mean 0 and variance 1, so deep
features collapse (often to all zeros after the last ReLU) and Grad-CAM has nothing to show.
Setting each BatchNorm's moving statistics from one batch of images makes the network
behave like a trained one, numerically, without any download."""

from __future__ import annotations

from typing import Any

import numpy as np

from model_store.synthetic import dataset


def _batchnorms(model: Any) -> list[Any]:
    """Every BatchNormalization layer, nested models included (Keras 3 or tf_keras)."""
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            found.extend(_batchnorms(layer))
        elif type(layer).__name__ == "BatchNormalization":
            found.append(layer)
    return found


def calibrate_batchnorm(model: Any, images: np.ndarray) -> None:
    """One training-mode pass with momentum 0: moving stats := this batch's stats.
    `images` are what the model's own input expects (preprocessing already applied)."""
    layers = _batchnorms(model)
    saved = [bn.momentum for bn in layers]
    for bn in layers:
        bn.momentum = 0.0
    try:
        model(images, training=True)
    finally:
        for bn, momentum in zip(layers, saved, strict=True):
            bn.momentum = momentum


def calibration_batch(size: int, count: int = 16, seed: int = 7) -> np.ndarray:
    """Generated lesion images, RGB 0–255 float32 [count, size, size, 3]."""
    images, _, _ = dataset(seed, count, size)
    return images.astype(np.float32)
