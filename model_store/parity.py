"""Parity of the LiteRT artifacts against TensorFlow on generated images."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dermcam import cam
from dermcam.engine import Engine, one_hot
from model_store.subjects import Reference
from model_store.synthetic import dataset

# float32 artifacts must reach these, or the export is refused.
MAX_PROB_DIFF = 1e-4
MIN_TOP1 = 1.0
MIN_CAM_R = 0.99


@dataclass(frozen=True)
class Parity:
    images: int
    max_abs_prob_diff: float
    top1_agreement: float
    cam_pearson_min: float  # Grad-CAM maps, TensorFlow vs LiteRT
    cam_pp_pearson_min: float  # Grad-CAM++

    def passes(self) -> bool:
        return (
            self.max_abs_prob_diff <= MAX_PROB_DIFF
            and self.top1_agreement >= MIN_TOP1
            and self.cam_pearson_min >= MIN_CAM_R
        )

    def as_dict(self) -> dict:
        return {k: round(v, 8) if isinstance(v, float) else v for k, v in asdict(self).items()}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two maps; two constant maps agree (1.0) when they are equal."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    sa, sb = a.std(), b.std()
    if sa < 1e-12 or sb < 1e-12:
        return 1.0 if np.allclose(a, b, atol=1e-6) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def measure(
    reference: Reference,
    engine: Engine,
    count: int = 6,
    seed: int = 2024,
) -> Parity:
    """Run TensorFlow (GradientTape, no rewrites) and the artifacts on `count` images.

    Maps are compared before the ReLU (sum_k w_k A_k), so a class the model does not see in
    an image still has a map to compare rather than an all-zero one."""
    h, w = engine.manifest.height, engine.manifest.width
    classes = len(engine.manifest.labels)
    images, _, _ = dataset(seed, count, max(h, w))
    prob_diff, top1, r_cam, r_pp = 0.0, 0, [], []
    for i, image in enumerate(images):
        tensor = image[None, :h, :w, :].astype(np.float32)
        probs = engine.predict(tensor)
        for target in sorted({int(np.argmax(probs)), i % classes}):
            ref = reference(tensor, one_hot(target, classes))
            got = engine.explain(tensor, target)
            prob_diff = max(prob_diff, float(np.abs(ref.probabilities - got.probabilities).max()))
            prob_diff = max(prob_diff, float(np.abs(ref.probabilities - probs).max()))
            for method, sink in (("gradcam", r_cam), ("gradcam++", r_pp)):
                sink.append(
                    pearson(
                        cam.linear_map(ref.activations, ref.gradients, method),
                        cam.linear_map(got.activations, got.gradients, method),
                    )
                )
        top1 += int(np.argmax(ref.probabilities)) == int(np.argmax(probs))
    return Parity(count, prob_diff, top1 / count, min(r_cam), min(r_pp))
