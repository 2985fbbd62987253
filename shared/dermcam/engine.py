"""Inference engines behind one interface: LiteRT (serving) and Keras (reference, lazily).

An engine takes named inputs: the float32 [1, H, W, 3] RGB tensor (0–255) from
`imaging.to_tensor`, and `extras`, the model's other inputs by name (patient metadata, from
`metadata.Schema.encode`). It answers probabilities, or probabilities plus the target
layer's activations and the gradient of the class score with respect to them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dermcam.errors import ModelUnavailable
from dermcam.manifest import Manifest, read_manifest, verify_artifact

SIGNATURE = "serving_default"


@dataclass(frozen=True)
class Observation:
    probabilities: np.ndarray  # [classes]
    features: np.ndarray | None  # [k]: target activations pooled; None from older artifacts


def pooled(activations: np.ndarray) -> np.ndarray:
    """The target layer's activations averaged over positions ([h, w, k] or [tokens, k] →
    [k]): the same reduction as the exported predict graph's `features` output."""
    return activations.reshape(-1, activations.shape[-1]).mean(axis=0)


@dataclass(frozen=True)
class Explanation:
    probabilities: np.ndarray  # [classes]
    activations: np.ndarray  # [h, w, k] at the target layer
    gradients: np.ndarray  # [h, w, k]: d score[target] / d activations


@dataclass(frozen=True)
class Attention:
    """A transformer's attention, for rollout (`dermcam.rollout`); L layers of N tokens."""

    probabilities: np.ndarray  # [classes]
    attention: np.ndarray  # [L, N, N]: each layer's attention, mean over heads
    relevance: np.ndarray  # [L, N, N]: mean over heads of relu(d score / dA ⊙ A)
    readout: np.ndarray  # [N]: |d score / d tokens| of the last token layer


Extras = Mapping[str, np.ndarray] | None  # the model's inputs besides the image, by name


class Engine(Protocol):
    manifest: Manifest

    def predict(self, tensor: np.ndarray, extras: Extras = None) -> np.ndarray: ...

    def observe(self, tensor: np.ndarray, extras: Extras = None) -> Observation: ...

    def explain(self, tensor: np.ndarray, target: int, extras: Extras = None) -> Explanation: ...


def checked_extras(manifest: Manifest, extras: Extras) -> dict[str, np.ndarray]:
    """Exactly the extra inputs the manifest declares (a caller's bug otherwise)."""
    given = dict(extras or {})
    wanted = {s.input for s in manifest.metadata.inputs} if manifest.metadata else set()
    if set(given) != wanted:
        raise ValueError(f"the model takes extra inputs {sorted(wanted)}, got {sorted(given)}")
    return given


def one_hot(target: int, classes: int) -> np.ndarray:
    if not 0 <= target < classes:
        raise ValueError(f"target {target} outside 0..{classes - 1}")
    hot = np.zeros((1, classes), dtype=np.float32)
    hot[0, target] = 1.0
    return hot


class LiteRTEngine:
    """Runs the exported artifacts on ai-edge-litert. Loads only the artifacts asked for."""

    def __init__(
        self,
        model_dir: str,
        artifacts: Sequence[str] = ("predict", "gradcam"),
        num_threads: int = 1,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.manifest = read_manifest(model_dir)
        self._runners = {}
        self._locks = {}
        self.returns_features = "predict" not in artifacts  # pooled from the CAM graph's maps
        for kind in artifacts:
            path = verify_artifact(self.manifest, kind)
            try:
                interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
                self._runners[kind] = interpreter.get_signature_runner(SIGNATURE)
                if kind == "predict":
                    outputs = interpreter.get_signature_list()[SIGNATURE]["outputs"]
                    self.returns_features = "features" in outputs
            except (ValueError, RuntimeError) as exc:
                raise ModelUnavailable(f"The {kind} artifact cannot be loaded: {exc}") from exc
            self._locks[kind] = threading.Lock()

    def _run(self, kind: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        # An interpreter is not re-entrant: one call at a time per artifact.
        with self._locks[kind]:
            outputs = self._runners[kind](**inputs)
            return {name: np.array(value, copy=True) for name, value in outputs.items()}

    def predict(self, tensor: np.ndarray, extras: Extras = None) -> np.ndarray:
        return self.observe(tensor, extras).probabilities

    def observe(self, tensor: np.ndarray, extras: Extras = None) -> Observation:
        extra = checked_extras(self.manifest, extras)
        if "predict" in self._runners:
            out = self._run("predict", image=tensor, **extra)
            features = out.get("features")  # artifacts exported before it have none
            return Observation(out["probabilities"][0], None if features is None else features[0])
        # A gradcam-only instance answers from the Grad-CAM graph.
        zeros = np.zeros((1, len(self.manifest.labels)), dtype=np.float32)
        out = self._run("gradcam", image=tensor, target=zeros, **extra)
        return Observation(out["probabilities"][0], pooled(out["activations"][0]))

    def explain(self, tensor: np.ndarray, target: int, extras: Extras = None) -> Explanation:
        if "gradcam" not in self._runners:
            raise ModelUnavailable("This instance loaded no gradcam artifact.")
        extra = checked_extras(self.manifest, extras)
        hot = one_hot(target, len(self.manifest.labels))
        out = self._run("gradcam", image=tensor, target=hot, **extra)
        return Explanation(out["probabilities"][0], out["activations"][0], out["gradients"][0])

    def attend(self, tensor: np.ndarray, target: int) -> Attention:
        """The attention artifact's answer for class `target` (a transformer's export)."""
        if "attention" not in self._runners:
            raise ModelUnavailable("This instance loaded no attention artifact.")
        hot = one_hot(target, len(self.manifest.labels))
        out = self._run("attention", image=tensor, target=hot)
        return Attention(
            out["probabilities"][0], out["attention"][0], out["relevance"][0], out["readout"][0]
        )


def load_engine(
    model_dir: str,
    kind: str = "litert",
    artifacts: Sequence[str] = ("predict", "gradcam"),
    num_threads: int = 1,
) -> Engine:
    """The engine named by config: `litert` (default) or `keras` (needs TensorFlow)."""
    if kind == "litert":
        return LiteRTEngine(model_dir, artifacts, num_threads)
    if kind == "keras":
        from dermcam.keras_engine import KerasEngine  # imports TensorFlow: reference only

        return KerasEngine(model_dir)
    raise ValueError(f"unknown engine {kind!r}")
