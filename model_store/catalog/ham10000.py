"""HAM10000 out of the box: the `sklesion` wheel (MIT), a Keras 3 Xception trained on HAM10000
(7 classes) with the patient's sex, anatomical site and age beside the image.

Everything the export needs is read from the wheel itself, not guessed:
- labels: `model_props.pkl`'s `i_cl_map` (output index → code); names and descriptions from
  `cl_info.pkl`, which also says which classes are malignant;
- the metadata schema: `sklesion/model.py`'s `preprocess` builds the 10 values as
  `sex` one-hot (`oh_map["sex"]`) + `location` one-hot (`oh_map["loc"]`) + `age / age_max` +
  `age_missing` (1 when age is missing, which is then filled with `age_mean`); the request
  fields are named as its `x["meta"]` keys;
- the input pipeline: `tf.image.decode_jpeg` then `tf.image.resize` to `img_shape`, values
  0–255 into the model (which normalises itself): `tf-bilinear`, no preprocessing;
- the authors' own test figures: `cr_test.pkl`.
The code's markers are checked first, so a wheel whose pipeline changed is refused rather
than served another way than it was trained.
"""

from __future__ import annotations

import json
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_store.catalog.wheels import Wheel, unpack

NAME = "ham10000"
ISIC = Path(__file__).resolve().parents[2] / "data" / "isic-uda1"
RECIPE = 2  # 2: predict graph returns features; calibrated on isic-uda1 (trust block)
REQUIREMENTS = Path(__file__).with_name("ham10000.txt")
RESIZE = "tf-bilinear"
# What sklesion/model.py must still do for the derivation above to hold.
CODE_MARKERS = (
    'tf.image.decode_jpeg(x["image"], channels=3)',
    'tf.image.resize(image, self.model_props["img_shape"])',
    'meta["age_missing"] = meta["age"].isnull().astype(int)',
    'meta["age"].fillna(self.model_props["age_mean"]',
    'meta["age"] = meta["age"] / self.model_props["age_max"]',
    'self.model_props["oh_map"]["sex"].items()',
    'self.model_props["oh_map"]["loc"].items()',
    'meta["sex"]\n            + meta["location"]\n            + meta["age"].apply(lambda x: [x])\n'
    '            + meta["age_missing"].apply(lambda x: [x])',
)
AGE_BOUNDS = (0.0, 120.0)  # the wheel sets none; these refuse only impossible ages
HAM10000 = {
    "name": "HAM10000",
    "description": "10,015 dermatoscopic images of pigmented lesions, 7 diagnostic categories "
    "(Tschandl, Rosendahl & Kittler, Sci. Data 5, 180161, 2018)",
    "licence": "CC BY-NC 4.0",
    "use": "research and non-commercial use",
    "url": "https://doi.org/10.7910/DVN/DBW86T",
}


class WheelChanged(ValueError):
    """The wheel's own prediction code no longer does what the derivation assumes."""


def read(package: Path) -> tuple[dict, dict, dict]:
    """(model_props, cl_info, cr_test) from an unpacked wheel's package folder, after checking
    its prediction code still builds inputs as derived."""
    code = (package / "model.py").read_text()
    missing = [m for m in CODE_MARKERS if m not in code]
    if missing:
        raise WheelChanged(f"sklesion/model.py no longer contains {missing[0]!r}")

    def load(name: str) -> Any:
        with open(package / name, "rb") as fh:  # the wheel's own pickles, hash-pinned
            return pickle.load(fh)  # noqa: S301

    return load("model_props.pkl"), load("cl_info.pkl"), load("cr_test.pkl")


def _one_hot_order(mapping: dict[str, list[int]]) -> list[str]:
    """Categories in the order of their one-hot position."""
    return [name for name, hot in sorted(mapping.items(), key=lambda item: list(item[1]).index(1))]


def labels(props: dict, info: dict) -> list[dict[str, str]]:
    found = []
    for index in sorted(props["i_cl_map"]):
        code = props["i_cl_map"][index]
        found.append(
            {
                "code": code,
                "name": info[code]["name"],
                "description": re.sub(r"\s+", " ", info[code]["description"]).strip(),
            }
        )
    return found


def schema(props: dict) -> dict:
    """The request fields → the model's 10 values, as sklesion's `preprocess` builds them."""
    fields: list[dict] = []
    for field, key in (("sex", "sex"), ("location", "loc")):
        categories = _one_hot_order(props["oh_map"][key])
        fields.append(
            {
                "name": field,
                "type": "categorical",
                "categories": categories,
                "default": "unknown" if "unknown" in categories else None,
            }
        )
    fields.append(
        {
            "name": "age",
            "type": "numeric",
            "scale": 1.0 / float(props["age_max"]),
            "offset": 0.0,
            "min": AGE_BOUNDS[0],
            "max": AGE_BOUNDS[1],
            "missing": {"fill": float(props["age_mean"]), "indicator": True},
        }
    )
    return {"fields": fields}


def card(wheel: Wheel, info: dict, report: dict) -> dict:
    """What the page and `?model=1` say about the model (docs/models/ham10000.md has more)."""
    per_class = {
        code: {
            "precision": round(report["precision"][code], 4),
            "recall": round(report["recall"][code], 4),
            "f1": round(report["f1-score"][code], 4),
            "support": int(report["support"][code]),
        }
        for code in info
    }
    return {
        "title": "HAM10000 skin-lesion classifier",
        "summary": "An Xception network trained on HAM10000 (7 classes) that also reads the "
        "patient's sex, anatomical site and age.",
        "source": {
            "package": wheel.name,
            "version": wheel.version,
            "sha256": wheel.sha256,
            "url": f"https://pypi.org/project/{wheel.name}/{wheel.version}/",
            "author": "Elio Pereira",
        },
        "licence": "MIT (the model and its code)",
        "training_data": HAM10000,
        "intended_use": "Research and education on dermoscopic images of pigmented lesions. "
        "Not a diagnosis, not a medical device.",
        "limits": [
            "Trained on HAM10000 only: dermoscopy of fair-skinned patients from two centres; "
            "phone photos and other skin types are outside what it has seen.",
            "Trained on 254-px images resized with TensorFlow's bilinear sampling; dermcam "
            "serves it the same pixels (input.resize tf-bilinear).",
            "Calibrated by dermcam on isic-uda1: two of its seven classes (nevus, melanoma), "
            "250-px thumbnails, one collection. The temperature, the melanoma operating point, "
            "the prediction sets and the out-of-scope rule hold for photographs like those; "
            "recalibrate on your own (python -m model_store.calibrate, docs/TRUST.md).",
        ],
        "malignant": [code for code in info if info[code]["severity"] == "Malign"],
        "reported": {
            "by": "the wheel's authors (cr_test.pkl)",
            "test_images": int(report["support"]["accuracy"]),
            "accuracy": round(report["f1-score"]["accuracy"], 4),
            "macro_f1": round(report["f1-score"]["macro avg"], 4),
            "per_class": per_class,
        },
        "details": "docs/models/ham10000.md",
    }


def export(
    wheel: Wheel, out: Path, log: Callable[[str], None] = print, quantization: str = "none"
) -> dict:
    """The wheel's model → dermcam artifacts in `out` (TensorFlow; under a minute)."""
    from model_store.exporting.export import export as export_model
    from model_store.exporting.sources import load_subject

    with tempfile.TemporaryDirectory(prefix="sklesion-") as tmp:
        package = unpack(wheel, Path(tmp)) / "sklesion"
        props, info, report = read(package)
        subject = load_subject(package / "model.keras")
        size = tuple(int(side) for side in props["img_shape"])
        if (subject.height, subject.width) != size:
            raise WheelChanged(f"the model takes {subject.height}x{subject.width}, not {size}")
        log(f"{wheel.path.name}: sha256 {wheel.sha256[:16]}…, {len(info)} classes, {size} px")
        return export_model(
            subject,
            labels(props, info),
            out,
            name=NAME,
            version=wheel.version,
            preprocessing="none",  # the model's own Normalization layer does it
            resize=RESIZE,
            metadata=schema(props),
            card=card(wheel, info, report),
            source=package / "model.keras",
            quantization=quantization,
            log=log,
        ) | {"trust": calibrate_on_isic(out, log)}


def calibrate_on_isic(out: Path, log: Callable[[str], None] = print) -> dict:
    """The trust block, fitted on the repository's isic-uda1 photographs (nevus and melanoma,
    250-px thumbnails of one collection: the card says what that leaves out)."""
    from model_store.calibration.cli import main as calibrate

    log(f"{NAME}: calibrating on {ISIC} (temperature, melanoma at 90 % sensitivity, sets, scope)")
    argv = [
        str(out),
        "--images",
        str(ISIC / "images"),
        "--labels",
        str(ISIC / "labels.csv"),
        "--map",
        "melanoma=mel,nevus=nv",
        "--fields",
        "age=age_approx,sex",
        "--concern",
        "mel:0.90",
        "--out",
        str(out / "calibration"),
    ]
    if calibrate(argv) != 0:
        raise WheelChanged("calibration on isic-uda1 failed (see above)")
    return json.loads((out / "manifest.json").read_text())["trust"]
