"""Model files like the ones users really have, built in code (nothing can be downloaded).

- `teachable_machine`: Google Teachable Machine's image-model export, `keras_model.h5` +
  `labels.txt`: MobileNetV2 (alpha 0.35, 224 px) and pooling in one Sequential, a
  Dense(100, relu) → Dense(n, softmax, no bias) head in another, both inside an outer
  Sequential; inputs scaled to -1..1. Written by tf_keras, then its config rewritten in the
  Keras 2.4 layout Teachable Machine writes (no `module`/`registered_name` keys,
  keras_version 2.4.0), which Keras 3 refuses exactly as it refuses the real file:
  "Unrecognized keyword arguments passed to DepthwiseConv2D: {'groups': 1}".
- `tf_keras_classifier`: a tf.keras 2 transfer-learning model (keras.applications backbone
  nested, pooling, dropout, a Dense head of any kind) saved as `.h5` or as a Keras 2
  SavedModel directory.
- `multi_output`: a Keras 3 model with an auxiliary embedding output beside the classes.

Weights are random with BatchNorm statistics calibrated on generated lesions, so maps and
probabilities vary from image to image as a trained model's do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from model_store.demos.calibrate import calibrate_batchnorm, calibration_batch

TEACHABLE_LABELS = ("Benign", "Malignant")
# head kind → (units for n classes, activation)
HEADS = {
    "softmax": (lambda n: n, "softmax"),
    "logits": (lambda n: n, None),
    "sigmoid": (lambda n: 1, "sigmoid"),
    "multilabel": (lambda n: n, "sigmoid"),
}


def _scaled(images: np.ndarray, mode: str) -> np.ndarray:
    """Generated images as the model's own input expects them (the export's preprocessing)."""
    import tensorflow as tf

    from dermcam.keras_engine import preprocess

    return preprocess(mode, tf.constant(images, tf.float32)).numpy()


def teachable_machine(out_dir: str | Path, labels: tuple[str, ...] = TEACHABLE_LABELS) -> Path:
    """Write keras_model.h5 and labels.txt into out_dir; returns the .h5 path."""
    import tf_keras as tk

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tk.utils.set_random_seed(3)
    size = 224
    features = tk.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=0.35, include_top=False, weights=None
    )
    pooling = tk.layers.GlobalAveragePooling2D(
        name="global_average_pooling2d_GlobalAveragePooling2D1"
    )
    head = tk.Sequential(
        [
            tk.layers.Dense(100, activation="relu", name="dense_Dense1"),
            tk.layers.Dense(len(labels), activation="softmax", use_bias=False, name="dense_Dense2"),
        ],
        name="sequential_3",
    )
    model = tk.Sequential(name="sequential_4")
    model.add(tk.layers.InputLayer(input_shape=(size, size, 3), name="sequential_1_input"))
    model.add(tk.Sequential([features, pooling], name="sequential_1"))
    model.add(head)
    calibrate_batchnorm(model, _scaled(calibration_batch(size), "tf"))
    path = out_dir / "keras_model.h5"
    model.save(path, save_format="h5")
    _as_keras_24(path)
    (out_dir / "labels.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(labels)))
    return path


def _as_keras_24(path: Path) -> None:
    """Rewrite an .h5 file's model config in the layout Keras 2.4 wrote."""
    import h5py

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            drop = ("module", "registered_name", "build_config", "compile_config")
            return {k: strip(v) for k, v in node.items() if k not in drop}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        h5.attrs["model_config"] = json.dumps(strip(config))
        h5.attrs["keras_version"] = "2.4.0"


def tf_keras_classifier(
    path: str | Path,
    backbone: str = "MobileNetV2",
    head: str = "softmax",
    classes: int = 2,
    size: int = 96,
    preprocessing: str = "tf",
) -> Path:
    """A tf.keras 2 transfer-learning classifier saved at `path`: a `.h5` file, or (any
    other name) a Keras 2 SavedModel directory."""
    import tf_keras as tk

    tk.utils.set_random_seed(5)
    units, activation = HEADS[head][0](classes), HEADS[head][1]
    base = getattr(tk.applications, backbone)(
        input_shape=(size, size, 3), include_top=False, weights=None
    )
    # The backbone runs with training=False inside the model, as transfer-learning tutorials
    # write it, so it is calibrated on its own.
    calibrate_batchnorm(base, _scaled(calibration_batch(size), preprocessing))
    inputs = tk.Input((size, size, 3), name="image")
    x = base(inputs, training=False)
    x = tk.layers.GlobalAveragePooling2D(name="pool")(x)
    x = tk.layers.Dropout(0.2, name="dropout")(x)
    outputs = tk.layers.Dense(units, activation=activation, name="classifier")(x)
    model = tk.Model(inputs, outputs, name=f"{backbone.lower()}_{head}")
    path = Path(path)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    model.save(path, save_format="h5" if path.suffix == ".h5" else "tf")
    return path


def multi_output(path: str | Path, classes: int = 3, size: int = 64) -> Path:
    """A Keras 3 model answering [class probabilities, a 16-value embedding]."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    embedding = keras.layers.Dense(16, name="embedding")(x)
    probabilities = keras.layers.Dense(classes, activation="softmax", name="diagnosis")(x)
    model = keras.Model(inputs, [embedding, probabilities])
    path = Path(path)
    model.save(path)
    return path
