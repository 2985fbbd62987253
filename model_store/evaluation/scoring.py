"""Scoring many perturbed images at once: predict.tflite on a batch (the scorer of deletion,
insertion and Score-CAM), and Score-CAM itself."""

from __future__ import annotations

import numpy as np

from dermcam import cam
from dermcam.engine import LiteRTEngine
from model_store.evaluation import metrics

SCORECAM = "scorecam"
SCORECAM_CHANNELS = 64


class BatchPredict:
    """predict.tflite on a batch: the scorer of deletion, insertion and Score-CAM."""

    def __init__(self, engine: LiteRTEngine, extras: dict[str, np.ndarray] | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(
            model_path=str(engine.manifest.artifact_path("predict")), num_threads=1
        )
        self.inputs = {
            d["name"].removeprefix("serving_default_").split(":")[0]: d
            for d in self.interpreter.get_input_details()
        }
        self.extras = extras or {}  # the model's other inputs, for every image of a batch
        # by name: the predict graph has a second output (features) since the scope rule
        outputs = self.interpreter._get_full_signature_list()["serving_default"]["outputs"]
        self.probabilities = outputs["probabilities"]
        self.size = 0
        self.one_at_a_time = False

    def _resize(self, n: int) -> None:
        for detail in self.inputs.values():
            self.interpreter.resize_tensor_input(detail["index"], [n, *detail["shape"][1:]])
        self.interpreter.allocate_tensors()
        self.size = n

    def __call__(
        self, images: np.ndarray, extras: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Probabilities [n, classes] of `images` [n, H, W, 3], each with `extras` (default:
        the ones given at construction)."""
        extras = self.extras if extras is None else extras
        n = len(images)
        if n != self.size and not self.one_at_a_time:
            try:
                self._resize(n)
            except RuntimeError:  # a graph with batch 1 built in (onnx2tf's reshapes)
                self.one_at_a_time = True
                self._resize(1)
        if self.one_at_a_time and n != 1:

            def row(i: int) -> dict[str, np.ndarray]:  # its own extra inputs, or the shared row
                return {k: v if len(v) == 1 else v[i : i + 1] for k, v in extras.items()}

            return np.concatenate([self(images[i : i + 1], row(i)) for i in range(n)])
        for name, detail in self.inputs.items():
            given = extras.get(name) if name != "image" else images
            # one row of extra inputs for every image, or a row per image
            value = given if len(given) == n else np.repeat(given, n, axis=0)
            self.interpreter.set_tensor(detail["index"], value.astype(np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.probabilities)


def scorecam_map(
    tensor: np.ndarray,
    activations: np.ndarray,
    target: int,
    predict: BatchPredict,
    extras: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Score-CAM (Wang et al. 2020) on the top channels by mean activation: each channel,
    upsampled and scaled to 0–1, keeps the image where it is high and a blurred copy where it
    is low; its weight is the class probability that image gets, normalised over the channels.
    (The paper masks to zero; on skin a black field reads as a lesion.)"""
    h, w = tensor.shape[1:3]
    soft = metrics.blurred(tensor[0])
    top = np.argsort(-activations.mean(axis=(0, 1)))[:SCORECAM_CHANNELS]
    masks = []
    for k in top:
        up = cam.upsample(activations[..., k], w, h)
        span = up.max() - up.min()
        masks.append((up - up.min()) / span if span > 0 else np.zeros_like(up))
    masks = np.stack(masks)
    keep = masks[..., None]
    scores = predict(tensor * keep + soft * (1.0 - keep), extras)[:, target]
    weights = scores / scores.sum() if scores.sum() > 0 else scores
    return np.tensordot(weights, activations[..., top].transpose(2, 0, 1), axes=1)
