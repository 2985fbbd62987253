"""Build the metadata demo: synthetic lesions + patient age, sex and site → a two-input CNN.

    python -m model_store.metadata_demo [--out model_store/models/demo-metadata/1]

What the demo model is for the image-only path, this is for models that take patient
metadata beside the image, as HAM10000 / ISIC models often do. The class depends on the
image *and* the patient, so the metadata matters: a lesion that looks like a nevus is a
melanoma when the patient is 50 or older and it sits on the trunk or a leg, and a benign-
keratosis look on the head or neck of a patient of 60 or more is an actinic keratosis. Age
is missing for one patient in ten (the model sees the fill value and the flag, not the age).
The metadata vector is exactly the issue's example: sex one-hot of 3, site one-hot of 5,
age / 90 and an age-missing flag. Deterministic and downloads nothing; marked `demo: true`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dermcam.engine import LiteRTEngine
from dermcam.metadata import Schema, parse_schema
from model_store.demos import demo
from model_store.evaluation.evaluate import evaluate, record_on_generated
from model_store.synthetic import CLASSES, dataset

SIZE = 96
TRAIN_SEED, VALID_SEED, TEST_SEED, PATIENT_SEED = 111, 222, 333, 444
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "demo-metadata" / "1"
SEXES = ("female", "male", "unknown")
SITES = ("arm", "head-or-neck", "leg-or-genital", "trunk", "unknown")
SCHEMA: dict[str, Any] = {
    "input": "meta_input",
    "fields": [
        {"name": "sex", "type": "categorical", "categories": list(SEXES), "default": "unknown"},
        {"name": "site", "type": "categorical", "categories": list(SITES), "default": "unknown"},
        {
            "name": "age",
            "type": "numeric",
            "scale": 0.0111111,
            "offset": 0.0,
            "min": 0,
            "max": 120,
            "missing": {"fill": 51.9, "indicator": True},
        },
    ],
}
CODES = [code for code, _ in CLASSES]
AKIEC, BKL, MEL, NV = (CODES.index(c) for c in ("akiec", "bkl", "mel", "nv"))


def patients(seed: int, count: int) -> list[dict[str, Any]]:
    """Sex, site and age for `count` patients; age missing for one in ten."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        age = float(np.round(rng.uniform(5, 95)))
        rows.append(
            {
                "sex": str(rng.choice(SEXES[:2])),
                "site": str(rng.choice(SITES[:4])),
                "age": None if rng.random() < 0.1 else age,
                "true_age": age,
            }
        )
    return rows


def diagnosis(look: int, patient: dict[str, Any]) -> int:
    """The class from the lesion's look and the patient (who may not have given an age)."""
    age, site = patient["true_age"], patient["site"]
    if look == NV and age >= 50 and site in ("trunk", "leg-or-genital"):
        return MEL
    if look == BKL and age >= 60 and site == "head-or-neck":
        return AKIEC
    return look


def encode_all(schema: Schema, rows: list[dict[str, Any]]) -> np.ndarray:
    fields = schema.field_names
    return np.concatenate(
        [schema.encode({k: r[k] for k in fields}).inputs["meta_input"] for r in rows]
    )


def build_model(size: int = SIZE, classes: int = len(CLASSES)) -> keras.Model:
    """An image branch to a 12×12 map and global pooling, a metadata branch, concatenated
    into a hidden layer: the gradient at the map depends on the metadata too."""
    image = keras.Input((size, size, 3), name="image")
    meta = keras.Input((10,), name="meta_input")
    x = keras.layers.RandomFlip("horizontal_and_vertical", name="augment_flip")(image)
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    for i, (filters, strides, pool) in enumerate(((24, 2, False), (32, 1, True), (48, 1, True))):
        x = keras.layers.Conv2D(
            filters, 3, strides=strides, padding="same", use_bias=False, name=f"conv{i + 1}"
        )(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i + 1}")(x)
        x = keras.layers.ReLU(name=f"relu{i + 1}")(x)
        if pool:
            x = keras.layers.MaxPooling2D(name=f"pool{i + 1}")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="cam_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    m = keras.layers.Dense(16, activation="relu", name="meta_dense")(meta)
    x = keras.layers.Concatenate(name="joined")([x, m])
    x = keras.layers.Dense(48, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model([image, meta], outputs, name="dermcam_demo_metadata")


def labelled(seed: int, count: int, schema: Schema) -> dict[str, np.ndarray]:
    """Images, their encoded metadata, classes, the classes their looks alone say, masks."""
    images, looks, masks = dataset(seed, count, SIZE)
    rows = patients(seed + PATIENT_SEED, count)
    labels = np.array([diagnosis(int(look), r) for look, r in zip(looks, rows, strict=True)])
    return {
        "images": images,
        "metadata": encode_all(schema, rows),
        "labels": labels,
        "looks": looks,
        "masks": masks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_store.metadata_demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--train", type=int, default=4200, help="training images")
    parser.add_argument("--test", type=int, default=700, help="held-out images")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    started = time.monotonic()
    schema = parse_schema(SCHEMA)
    train = labelled(TRAIN_SEED, args.train, schema)
    valid = labelled(VALID_SEED, args.test // 2, schema)
    print(f"generated {args.train} training images in {time.monotonic() - started:.0f} s")

    model = build_model()
    validation = ([valid["images"].astype("float32"), valid["metadata"]], valid["labels"])
    inputs = [train["images"].astype("float32"), train["metadata"]]
    demo.train(model, inputs, train["labels"], validation, args.epochs)
    del train, inputs
    manifest = demo.export_trained(model, args.out, "demo-metadata", metadata=SCHEMA)

    test = labelled(TEST_SEED, args.test, schema)
    engine = LiteRTEngine(args.out)
    given = [{"meta_input": m[None]} for m in test["metadata"]]
    report = evaluate(engine, test["images"], test["labels"], test["masks"], extras=given)
    blank = [schema.encode({}).inputs] * args.test
    without = evaluate(engine, test["images"], test["labels"], test["masks"], extras=blank)
    report["accuracy_without_metadata"] = without["accuracy"]
    # Images whose class their look alone does not tell: only the metadata can.
    report["metadata_decides"] = int((test["labels"] != test["looks"]).sum())
    report["train_images"] = args.train
    report["epochs"] = args.epochs
    report["build_seconds"] = round(time.monotonic() - started)
    manifest["evaluation"] = report
    (Path(args.out) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    record_on_generated(args.out)  # every CAM method, baselines, sanity: `evaluation.evaluate`
    print(
        f"held-out accuracy {report['accuracy']:.3f} with the metadata, "
        f"{report['accuracy_without_metadata']:.3f} with every field missing; pointing game "
        f"{report['pointing_game']:.3f} on {report['images']} images; "
        f"built in {report['build_seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
