"""The model-randomisation sanity check (Adebayo et al. 2018), on the LiteRT artifacts alone.

An explanation that does not change when the classifier's weights are replaced by random ones
explains the image, not the model. This copies a model directory with the classifier layer's
weights randomised in its gradcam artifact (the forward copy [classes, features] and the
transposed copy the backward pass keeps, replaced consistently; mean and spread kept), and
the same kernel in the attention artifact a transformer's rollouts read, so maps can be
compared before and after without TensorFlow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from dermcam.manifest import MANIFEST, read_manifest, sha256_file


def _head_weights(path: Path, classes: int) -> list[np.ndarray]:
    """Constant float tensors shaped like the classifier's kernel, widest first."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    found = []
    for detail in interpreter.get_tensor_details():
        shape = tuple(detail["shape"])
        if detail["dtype"] != np.float32 or len(shape) != 2 or classes not in shape:
            continue
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:
            continue  # not a constant
        if value.size > classes and np.abs(value).sum() > 0:
            found.append(value)
    return found


def randomised_copy(model_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """`out_dir` = `model_dir` with the classifier's weights randomised in gradcam.tflite."""
    manifest = read_manifest(model_dir)
    classes = (
        1 if (manifest.raw.get("head") or {}).get("kind") == "binary" else len(manifest.labels)
    )
    source = manifest.artifact_path("gradcam")
    data = bytearray(source.read_bytes())
    kernels = _head_weights(source, classes)
    if not kernels:
        raise ValueError("no classifier weights found in the gradcam artifact")
    rng = np.random.default_rng(seed)
    forward = max(kernels, key=lambda k: k.size if k.shape[0] == classes else -1)
    random = rng.normal(forward.mean(), forward.std() or 1.0, forward.shape).astype(np.float32)
    replaced = _replace(data, forward, random)
    if not replaced:
        raise ValueError("the classifier's weights could not be located in the artifact")
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(manifest.directory, out)
    raw = dict(manifest.raw)
    raw["artifacts"] = {**raw["artifacts"]}
    rewritten = {"gradcam": data}
    if "attention" in raw["artifacts"]:  # the same kernel, in the graph rollouts read
        attention = bytearray(manifest.artifact_path("attention").read_bytes())
        if _replace(attention, forward, random):
            rewritten["attention"] = attention
    for kind, content in rewritten.items():
        path = out / manifest.artifact_path(kind).name
        path.write_bytes(bytes(content))
        raw["artifacts"][kind] = {**raw["artifacts"][kind], "sha256": sha256_file(path)}
    raw["sanity"] = {
        "randomised": "classifier weights",
        "copies_replaced": replaced,
        "artifacts": sorted(rewritten),
    }
    (out / MANIFEST).write_text(json.dumps(raw, indent=2) + "\n")
    return out


def _replace(data: bytearray, forward: np.ndarray, random: np.ndarray) -> int:
    """The kernel and its transpose replaced in a flatbuffer's bytes; how many were found."""
    replaced = 0
    for original, replacement in ((forward, random), (forward.T, random.T)):
        needle = np.ascontiguousarray(original, np.float32).tobytes()
        at = data.find(needle)
        if at >= 0:
            data[at : at + len(needle)] = np.ascontiguousarray(replacement).tobytes()
            replaced += 1
    return replaced
