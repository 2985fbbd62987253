"""onnx2tf in a process of its own (the exporter's `onnx.convert` runs it): an ONNX file →
a tf_keras model (NHWC) → a SavedModel whose serving signature takes [1, H, W, 3].

    python -m model_store.exporting.sources.onnx_convert MODEL.onnx SAVED_DIR H W strict|lenient

Exit 0 with the SavedModel written; otherwise the cause on a stderr line starting with CAUSE
(what onnx2tf printed before it gave up: the error and the ONNX node it was at)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

CAUSE = "onnx2tf cause: "
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ERROR_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception|NotImplemented\w*)\b:? ")
NODE_LINE = "ERROR: onnx_op_name:"


def convert(source: Path, saved: Path, height: int, width: int, strict: bool) -> None:
    import numpy as np
    import onnx2tf
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="onnx2tf-") as tmp:
        work = Path(tmp)
        # onnx2tf fetches sample images from GitHub to check its conversion; it reads them
        # from the working directory first, so they are made there (no network at export).
        from model_store.synthetic import lesion_image

        images = [lesion_image(seed=3, index=i, size=128, label=i % 7)[0] for i in range(20)]
        samples = np.stack(images).astype(np.float32) / 255.0
        np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy", samples)
        os.chdir(work)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                model = onnx2tf.convert(
                    input_onnx_file_path=str(source),
                    output_folder_path=str(work / "out"),
                    not_use_onnxsim=True,  # the exporter simplified it already
                    batch_size=1,
                    disable_model_save=True,
                    non_verbose=True,
                    verbosity="error",
                    disable_strict_mode=not strict,
                )
        except (SystemExit, Exception) as exc:  # onnx2tf exits on an op it cannot convert
            raise SystemExit(f"{CAUSE}{cause(exc, printed.getvalue())}") from None
    signature = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec([1, height, width, 3], tf.float32, name="image")
    )
    # Frozen: some conversions (grouped convolutions, ConvNeXt's layer scale) hold bare
    # tf.Variables named "/node/..." that no layer tracks and no checkpoint can name; the
    # exporter freezes the graph anyway.
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(signature)
    serve = tf.function(
        lambda x: {"output_0": tf.nest.flatten(frozen(x))[0]}
    ).get_concrete_function(tf.TensorSpec([1, height, width, 3], tf.float32, name="image"))
    tf.saved_model.save(tf.Module(), str(saved), signatures={"serving_default": serve})


def cause(exc: BaseException, printed: str) -> str:
    lines = [ANSI.sub("", line).strip() for line in printed.splitlines()]
    node = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(NODE_LINE)), None)
    errors = [ln for ln in lines if ERROR_LINE.match(ln)]
    message = errors[-1] if errors else (str(exc).strip() or type(exc).__name__)
    message = message.splitlines()[-1][:300]
    return f"{message} (at ONNX node {node})" if node else message


def main(argv: list[str]) -> int:
    source, saved, height, width, mode = argv
    convert(
        Path(source).resolve(), Path(saved).resolve(), int(height), int(width), mode == "strict"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
