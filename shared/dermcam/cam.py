"""Class activation maps in NumPy from (activations, gradients) of the target layer.

One shape for every method: a method only supplies per-channel weights from A and dS/dA
[h, w, k]; `class_map` applies them, the ReLU and the normalisation in one place.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from dermcam.errors import UnknownMethod

WeightFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
EPS = 1e-7


def gradcam_weights(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): the spatial mean of the gradient per channel."""
    return gradients.mean(axis=(0, 1))


def gradcam_plus_plus_weights(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM++ (Chattopadhay et al. 2018), the closed form pytorch-grad-cam uses.

    alpha = g^2 / (2 g^2 + sum_ij(A) g^3), zero where g == 0; weight = sum_ij alpha relu(g).
    """
    g2 = gradients**2
    g3 = g2 * gradients
    sum_a = activations.sum(axis=(0, 1), keepdims=True)
    alpha = g2 / (2.0 * g2 + sum_a * g3 + EPS)
    alpha = np.where(gradients != 0.0, alpha, 0.0)
    return (np.maximum(gradients, 0.0) * alpha).sum(axis=(0, 1))


METHODS: dict[str, WeightFn] = {
    "gradcam": gradcam_weights,
    "gradcam++": gradcam_plus_plus_weights,
}


def linear_map(activations: np.ndarray, gradients: np.ndarray, method: str) -> np.ndarray:
    """sum_k w_k A_k before the ReLU, [h, w] float32."""
    try:
        weigh = METHODS[method]
    except KeyError as exc:
        known = ", ".join(METHODS)
        raise UnknownMethod(f"Unknown method {method!r}; use one of: {known}.") from exc
    a = activations.astype(np.float64)
    weights = weigh(a, gradients.astype(np.float64))
    return (a @ weights).astype(np.float32)


def normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to 0–1 by the maximum; an all-zero map stays zero (nothing pointed at)."""
    peak = float(cam.max()) if cam.size else 0.0
    if peak <= 0.0 or not np.isfinite(peak):
        return np.zeros_like(cam, dtype=np.float32)
    return (cam / peak).astype(np.float32)


def class_map(
    activations: np.ndarray, gradients: np.ndarray, method: str = "gradcam"
) -> np.ndarray:
    """The map at the target layer's resolution: relu(sum_k w_k A_k), scaled to 0–1."""
    return normalise(np.maximum(linear_map(activations, gradients, method), 0.0))


def upsample(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear upsampling of a [h, w] map to [height, width], float32."""
    image = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32))
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
