"""What every source of a model gives the exporter: a forward pass and TensorFlow's own
Grad-CAM inputs for one target.

A source (`keras`, `savedmodel`, `onnx`) names its candidate target layers (last first),
builds the forward pass x → (activations, logits or None, probabilities) for one of them,
and computes TensorFlow's own Grad-CAM inputs for parity; a converted format also offers
`original_parity` (its own runtime on the original file). `load_subject` picks the source
from the file.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from dermcam.engine import Explanation

# (image, extra inputs by name) → (activations, logits or None, probabilities)
Forward = Callable[[tf.Tensor, dict[str, tf.Tensor]], tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]]
# (image, one-hot target, extra inputs by name) → TensorFlow's own Grad-CAM inputs
Reference = Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], Explanation]
