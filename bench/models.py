"""The benchmark's models: keras.applications classifiers (weights=None, BatchNorm calibrated,
7 classes, 224 px) exported with the project's exporter, float32 and quantised."""

from __future__ import annotations

from pathlib import Path

from model_store.synthetic import CLASSES

OUT = Path(__file__).resolve().parent / "out" / "models"
STORE = Path(__file__).resolve().parents[1] / "model_store" / "models"
DEMO = STORE / "demo" / "1"
# Committed models, float32 only (the metadata demo takes its patient fields' defaults).
COMMITTED = {"demo": DEMO, "demo-metadata": STORE / "demo-metadata" / "1"}
SIZE = 224
# name → (keras.applications factory name, baked-in preprocessing)
APPLICATIONS = {
    "mobilenetv2": ("MobileNetV2", "tf"),
    "efficientnetb0": ("EfficientNetB0", "none"),
    "resnet50": ("ResNet50", "caffe"),
}


def model_dir(name: str, quantization: str = "none") -> Path:
    """Where a (possibly quantised) export lives; the demo's float32 is the committed one."""
    if name in COMMITTED and quantization == "none":
        return COMMITTED[name]
    suffix = "" if quantization == "none" else f"-{quantization}"
    return OUT / f"{name}{suffix}" / "1"


def ensure(name: str, quantization: str = "none", log=print) -> Path:  # noqa: ANN001
    """Export the model unless it is already there."""
    target = model_dir(name, quantization)
    if (target / "manifest.json").exists():
        return target
    import keras
    import tensorflow as tf

    from dermcam.keras_engine import preprocess
    from dermcam.keras_loading import load_model_file
    from model_store.demos.calibrate import calibrate_batchnorm, calibration_batch
    from model_store.exporting.export import export

    labels = [{"code": code, "name": label} for code, label in CLASSES]
    if quantization != "none":  # the same weights as the float32 export
        float_dir = ensure(name, "none", log)
        source_file = "model.keras" if name == "demo" else f"../{name}.keras"
        model = load_model_file(float_dir / source_file).model
        mode = "none" if name == "demo" else APPLICATIONS[name][1]
        source = None
    else:
        factory, mode = APPLICATIONS[name]
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, factory)(
            weights=None, input_shape=(SIZE, SIZE, 3), classes=len(labels)
        )
        calibrate_batchnorm(model, preprocess(mode, tf.constant(calibration_batch(SIZE))).numpy())
        source = target.parent / f"{name}.keras"
        source.parent.mkdir(parents=True, exist_ok=True)
        model.save(source)
    log(f"exporting {name} ({quantization}) to {target}")
    export(
        model,
        labels,
        target,
        name=name,
        preprocessing=mode,
        quantization=quantization,
        source=source,
        log=log,
    )
    return target
