"""Class activation maps in NumPy from (activations A, gradients G = dS/dA) of the target layer,
both [h, w, k].

One shape for every method, as pytorch-grad-cam's BaseCAM has it: a method supplies only its
map before the ReLU, [h, w]; `class_map` applies the ReLU and the normalisation in one place.
Most methods are a weight per channel applied to A (`weighted`); the element-wise ones
(HiResCAM, LayerCAM, Grad-CAM element-wise) and the principal-component ones (EigenCAM,
EigenGradCAM) build the map themselves. Formulas follow pytorch-grad-cam 1.5, named there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from dermcam.errors import UnknownMethod

WeightFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (A, G) → [k]
MapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (A, G) → [h, w], before the ReLU
EPS = 1e-7


def weighted(weigh: WeightFn) -> MapFn:
    """A map from per-channel weights: sum_k w_k A_k."""

    def linear(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return activations @ weigh(activations, gradients)

    linear.__doc__ = weigh.__doc__
    return linear


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


def xgradcam_weights(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """XGrad-CAM (Fu et al. 2020): w_k = sum_ij(G A) / (sum_ij A + eps)."""
    return (gradients * activations).sum(axis=(0, 1)) / (activations.sum(axis=(0, 1)) + EPS)


def hirescam_map(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """HiResCAM (Draelos & Carin 2020): sum_k G_k ⊙ A_k, the gradient kept per position, so
    the map shows exactly where the score's gradient met the activations."""
    return (gradients * activations).sum(axis=-1)


def gradcam_elementwise_map(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): sum_k relu(G_k ⊙ A_k)."""
    return np.maximum(gradients * activations, 0.0).sum(axis=-1)


def layercam_map(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """LayerCAM (Jiang et al. 2021): sum_k relu(G_k) ⊙ A_k."""
    return (np.maximum(gradients, 0.0) * activations).sum(axis=-1)


def first_component(values: np.ndarray) -> np.ndarray:
    """Projection of [h, w, k], centred per channel as pytorch-grad-cam centres it, on its
    first principal direction, signed so that it agrees with the mean over channels (an SVD's
    sign is arbitrary; pytorch-grad-cam leaves it, which can turn a map upside down)."""
    h, w, k = values.shape
    flat = values.reshape(h * w, k)
    flat = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    projection = (flat @ vt[0]).reshape(h, w)
    mean = values.mean(axis=-1)
    if np.sum((projection - projection.mean()) * (mean - mean.mean())) < 0:
        projection = -projection
    return projection


def eigencam_map(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """EigenCAM (Muhammad & Yeasin 2020): the first principal component of A. It uses no
    gradient, so it is the same map for every class (the sanity check flags it)."""
    return first_component(activations)


def eigengradcam_map(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """EigenGradCAM (pytorch-grad-cam): the first principal component of G ⊙ A."""
    return first_component(gradients * activations)


METHODS: dict[str, MapFn] = {
    "gradcam": weighted(gradcam_weights),
    "gradcam++": weighted(gradcam_plus_plus_weights),
    "xgradcam": weighted(xgradcam_weights),
    "hirescam": hirescam_map,
    "gradcam-elementwise": gradcam_elementwise_map,
    "layercam": layercam_map,
    "eigencam": eigencam_map,
    "eigengradcam": eigengradcam_map,
}
NAMES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "hirescam": "HiResCAM",
    "gradcam-elementwise": "Grad-CAM element-wise",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
}


def linear_map(activations: np.ndarray, gradients: np.ndarray, method: str) -> np.ndarray:
    """The method's map before the ReLU, [h, w] float32 (computed in float64)."""
    try:
        build = METHODS[method]
    except KeyError as exc:
        known = ", ".join(METHODS)
        raise UnknownMethod(f"Unknown method {method!r}; use one of: {known}.") from exc
    return build(activations.astype(np.float64), gradients.astype(np.float64)).astype(np.float32)


def normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to 0–1 by the maximum; an all-zero map stays zero (nothing pointed at)."""
    peak = float(cam.max()) if cam.size else 0.0
    if peak <= 0.0 or not np.isfinite(peak):
        return np.zeros_like(cam, dtype=np.float32)
    return (cam / peak).astype(np.float32)


def is_blank(cam: np.ndarray) -> bool:
    """Zero everywhere: the method's map was negative at every position before the ReLU, so it
    found no region that raised the class's score (not "the model looked nowhere")."""
    return not (cam.size and float(cam.max()) > 0.0)


def class_map(
    activations: np.ndarray, gradients: np.ndarray, method: str = "gradcam"
) -> np.ndarray:
    """The map at the target layer's resolution: relu(the method's map), scaled to 0–1."""
    return normalise(np.maximum(linear_map(activations, gradients, method), 0.0))


def upsample(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear upsampling of a [h, w] map to [height, width], float32."""
    image = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32))
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
