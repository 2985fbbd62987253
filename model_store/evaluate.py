"""How good are a model's predictions and explanations on your own images? LiteRT only.

    python -m model_store.evaluate MODEL_DIR --images DIR [--labels CSV] [--masks DIR]
        [--map melanoma=mel,nevus=nv] [--methods gradcam,layercam,...] [--sanity]
        [--out DIR] [--record] [--limit N]

ISIC-style folders: `<id>.jpg|png`; masks `<id>_segmentation.png` in --masks or beside the
images; a CSV with an image-id column and a class column (codes of the model's labels, names
mapped with --map, or benign/malignant and 0/1 for two-class models). Reports classification
(when labels are given), localisation against the masks beside image-blind baselines (when
masks are given), deletion/insertion faithfulness beside a random order, per CAM method, and
with --sanity the model-randomisation check. Writes report.md, report.json, a plot per
metric and contact sheets of the best and worst maps; --record puts the summary into the
manifest's `evaluation`. Score-CAM (top-64 channels, probability-weighted) is offered here,
not in the function: it needs 64 more forward passes per map.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dermcam import cam, imaging
from dermcam.engine import LiteRTEngine
from dermcam.manifest import MANIFEST
from model_store import metrics

SCORECAM = "scorecam"
SCORECAM_CHANNELS = 64
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ID_COLUMNS = ("image_id", "isic_id", "image", "id", "name")
CLASS_COLUMNS = ("dx", "diagnosis", "label", "class", "benign_malignant", "target", "melanoma")


@dataclass
class Item:
    id: str
    image: Path
    mask: Path | None = None
    label: int | None = None


@dataclass
class Results:
    items: list[dict] = field(default_factory=list)  # per image, per method
    probabilities: list[np.ndarray] = field(default_factory=list)
    truth: list[int] = field(default_factory=list)
    sanity: dict[str, list[float]] = field(default_factory=dict)


# --- the folder --------------------------------------------------------------------------


def class_mapping(codes: list[str], spec: str | None) -> dict[str, int]:
    """CSV value → label index: the codes themselves, the --map pairs, and for a two-class
    model benign/malignant and 0/1."""
    mapping = {code.lower(): i for i, code in enumerate(codes)}
    if len(codes) == 2:
        mapping.update({"benign": 0, "malignant": 1, "0": 0, "1": 1, "0.0": 0, "1.0": 1})
    for pair in (spec or "").split(","):
        if "=" in pair:
            name, code = (p.strip() for p in pair.split("=", 1))
            if code.lower() not in mapping:
                raise ValueError(f"--map {pair}: {code!r} is not a label of the model")
            mapping[name.lower()] = mapping[code.lower()]
    return mapping


def read_labels(path: Path, mapping: dict[str, int]) -> dict[str, int]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return {}
    header = [h.strip().lower() for h in rows[0]]
    id_col = next((header.index(c) for c in ID_COLUMNS if c in header), None)
    class_col = next((header.index(c) for c in CLASS_COLUMNS if c in header), None)
    if id_col is None or class_col is None:  # ISIC 2016: no header, "id,class"
        id_col, class_col, body = 0, 1, rows
    else:
        body = rows[1:]
    labels, unknown = {}, set()
    for row in body:
        if len(row) <= max(id_col, class_col):
            continue
        value = row[class_col].strip().lower()
        if value in mapping:
            labels[row[id_col].strip()] = mapping[value]
        else:
            unknown.add(value)
    if unknown:
        print(f"labels left out (not among the model's, add --map): {sorted(unknown)[:8]}")
    return labels


def find_items(images: Path, masks: Path | None, labels: dict[str, int] | None) -> list[Item]:
    items = []
    for path in sorted(images.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.stem.endswith("_segmentation"):
            continue
        mask = next(
            (
                folder / f"{path.stem}_segmentation{suffix}"
                for folder in (masks, images)
                if folder
                for suffix in (".png", ".jpg")
                if (folder / f"{path.stem}_segmentation{suffix}").exists()
            ),
            None,
        )
        label = labels.get(path.stem) if labels is not None else None
        if labels is not None and label is None:
            continue
        items.append(Item(path.stem, path, mask, label))
    return items


# --- maps and scores ---------------------------------------------------------------------


class BatchPredict:
    """predict.tflite on a batch: the scorer of deletion, insertion and Score-CAM."""

    def __init__(self, engine: LiteRTEngine, extras: dict[str, np.ndarray]) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(
            model_path=str(engine.manifest.artifact_path("predict")), num_threads=1
        )
        self.inputs = {
            d["name"].removeprefix("serving_default_").split(":")[0]: d
            for d in self.interpreter.get_input_details()
        }
        self.extras = extras
        self.size = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        n = len(images)
        if n != self.size:
            for detail in self.inputs.values():
                self.interpreter.resize_tensor_input(detail["index"], [n, *detail["shape"][1:]])
            self.interpreter.allocate_tensors()
            self.size = n
        for name, detail in self.inputs.items():
            value = images if name == "image" else np.repeat(self.extras[name], n, axis=0)
            self.interpreter.set_tensor(detail["index"], value.astype(np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.interpreter.get_output_details()[0]["index"])


def scorecam_map(
    tensor: np.ndarray, activations: np.ndarray, target: int, predict: BatchPredict
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
    scores = predict(tensor * keep + soft * (1.0 - keep))[:, target]
    weights = scores / scores.sum() if scores.sum() > 0 else scores
    return np.tensordot(weights, activations[..., top].transpose(2, 0, 1), axes=1)


def evaluate_one(
    item: Item,
    engine: LiteRTEngine,
    methods: list[str],
    predict: BatchPredict,
    extras: dict[str, np.ndarray],
    randomised: LiteRTEngine | None,
    seed: int,
    results: Results,
) -> dict:
    decoded = imaging.decode(item.image.read_bytes(), 200_000_000)
    h, w = engine.manifest.height, engine.manifest.width
    tensor = imaging.to_tensor(decoded.image, h, w)
    probs = engine.predict(tensor, extras)
    predicted = int(np.argmax(probs))
    target = item.label if item.label is not None else predicted
    mask = None
    if item.mask is not None:
        with Image.open(item.mask) as m:
            mask = np.asarray(m.convert("L").resize(decoded.image.size, Image.Resampling.NEAREST))
        mask = mask > 127
    row: dict[str, Any] = {
        "id": item.id,
        "label": item.label,
        "predicted": predicted,
        "target": target,
        "probability": float(probs[target]),
        "methods": {},
    }
    explained = engine.explain(tensor, target, extras)
    explained_top = explained if predicted == target else engine.explain(tensor, predicted, extras)
    shuffled = np.random.default_rng(seed).permutation(h * w)
    random_curves = metrics.perturbation_curves(
        tensor[0], shuffled, lambda x: predict(x)[:, predicted]
    )
    row["random"] = {
        "deletion": random_curves.deletion_auc,
        "insertion": random_curves.insertion_auc,
    }
    if mask is not None:
        row["baselines"] = metrics.baselines(mask)
    for method in methods:
        figures: dict[str, Any] = {}
        for kind, explanation, klass in (
            ("loc", explained, target),
            ("faith", explained_top, predicted),
        ):
            if method == SCORECAM:
                raw = scorecam_map(tensor, explanation.activations, klass, predict)
                grid = cam.normalise(np.maximum(raw, 0.0))
            else:
                grid = cam.class_map(explanation.activations, explanation.gradients, method)
            if kind == "loc":
                row.setdefault("grids", {})[method] = grid
                if mask is not None:
                    full = cam.upsample(grid, *decoded.image.size)
                    figures.update(metrics.localisation(full, mask))
            else:
                order = metrics.map_order(cam.upsample(grid, w, h))
                curves = metrics.perturbation_curves(
                    tensor[0], order, lambda x, k=klass: predict(x)[:, k]
                )
                figures["deletion"] = curves.deletion_auc
                figures["insertion"] = curves.insertion_auc
        if randomised is not None and method != SCORECAM:
            other = randomised.explain(tensor, target, extras)
            rho = metrics.spearman(
                cam.class_map(other.activations, other.gradients, method), row["grids"][method]
            )
            results.sanity.setdefault(method, []).append(rho)
        row["methods"][method] = figures
    results.probabilities.append(probs)
    if item.label is not None:
        results.truth.append(item.label)
    row["mask"] = mask
    row["picture"] = decoded.image
    results.items.append(row)
    return row


def evaluate(
    engine: LiteRTEngine,
    images: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray,
    method: str = "gradcam",
    extras: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, float]:
    """Accuracy and the pointing game on arrays of images at the model's size: the quick
    held-out figures the demo builds record (the folder CLI above reports the rest)."""
    h, w = engine.manifest.height, engine.manifest.width
    correct = hits = 0
    for i, (image, label, mask) in enumerate(zip(images, labels, masks, strict=True)):
        tensor = image[None].astype(np.float32)
        if tensor.shape[1:3] != (h, w):
            raise ValueError(f"images must be {h}x{w}")
        explanation = engine.explain(tensor, int(label), extras[i] if extras else None)
        correct += int(np.argmax(explanation.probabilities)) == int(label)
        grid = cam.class_map(explanation.activations, explanation.gradients, method)
        full = cam.upsample(grid, w, h)
        y, x = np.unravel_index(int(np.argmax(full)), full.shape)
        hits += bool(mask[y, x])
    n = len(labels)
    return {"images": n, "accuracy": correct / n, "pointing_game": hits / n}


# --- the summary -------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


SANITY_FLAG = 0.8  # median rank correlation at or above which maps barely changed


def summarise(results: Results, codes: list[str], methods: list[str]) -> dict:
    items = results.items
    summary: dict[str, Any] = {"images": len(items), "methods": {}}
    labelled = [r for r in items if r["label"] is not None]
    if labelled:
        probs = np.stack(
            [results.probabilities[i] for i, r in enumerate(items) if r["label"] is not None]
        )
        summary["classification"] = metrics.classification(probs, np.array(results.truth), codes)
    masked = [r for r in items if "baselines" in r]
    keys = ["pointing_game", "energy_pointing_game", *(f"iou@{x}" for x in metrics.IOU_LEVELS)]
    if masked:
        summary["baselines"] = {
            name: {k: _mean([r["baselines"][name][k] for r in masked]) for k in keys}
            for name in ("centre", "uniform")
        }
    summary["random_order"] = {
        k: _mean([r["random"][k] for r in items]) for k in ("deletion", "insertion")
    }
    for method in methods:
        figures = {
            k: _mean([r["methods"][method][k] for r in items]) for k in ("deletion", "insertion")
        }
        if masked:
            figures.update({k: _mean([r["methods"][method][k] for r in masked]) for k in keys})
        if method in results.sanity:
            rho = float(np.median(results.sanity[method]))
            figures["sanity_rank_correlation"] = round(rho, 4)
            figures["sanity_flag"] = rho >= SANITY_FLAG
        summary["methods"][method] = figures
    return summary


def record_on_generated(model_dir: str | Path, seed: int = 909, count: int = 140) -> int:
    """What the demo builds record: this evaluation, sanity check included, on a folder of
    generated lesions with their masks (held out: a seed no training used)."""
    import tempfile

    from model_store.synthetic import write_folder

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "images", seed, count, 256)
        return main(
            [
                str(model_dir),
                "--images",
                str(folder),
                "--labels",
                str(folder / "labels.csv"),
                "--sanity",
                "--record",
                "--out",
                str(Path(tmp) / "report"),
            ]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_store.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir")
    parser.add_argument("--images", required=True, help="folder of <id>.jpg|png")
    parser.add_argument("--labels", help="CSV with an image-id column and a class column")
    parser.add_argument("--masks", help="folder of <id>_segmentation.png (default: --images)")
    parser.add_argument("--map", help="CSV class names to label codes: melanoma=mel,nevus=nv")
    parser.add_argument(
        "--methods", default=",".join([*cam.METHODS, SCORECAM]), help="CAM methods to compare"
    )
    parser.add_argument("--sanity", action="store_true", help="the randomisation check too")
    parser.add_argument("--out", help="report folder (default: evaluation-<model>-<version>)")
    parser.add_argument("--record", action="store_true", help="summary into the manifest")
    parser.add_argument("--limit", type=int, help="at most this many images")
    args = parser.parse_args(argv)

    from model_store import evaluation_report

    engine = LiteRTEngine(args.model_dir)
    manifest = engine.manifest
    codes = manifest.codes
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in cam.METHODS and m != SCORECAM]
    if unknown:
        print(f"unknown methods: {unknown}; known: {[*cam.METHODS, SCORECAM]}", file=sys.stderr)
        return 2
    labels = None
    if args.labels:
        labels = read_labels(Path(args.labels), class_mapping(codes, args.map))
    items = find_items(Path(args.images), Path(args.masks) if args.masks else None, labels)
    items = items[: args.limit] if args.limit else items
    if not items:
        print("no images found (or none with a known label)", file=sys.stderr)
        return 1
    out = Path(args.out or f"evaluation-{manifest.name}-{manifest.version}")
    out.mkdir(parents=True, exist_ok=True)
    extras = manifest.metadata.example().inputs if manifest.metadata else {}
    predict = BatchPredict(engine, extras)
    randomised = None
    if args.sanity:
        from model_store.sanity import randomised_copy

        randomised = LiteRTEngine(str(randomised_copy(args.model_dir, out / "randomised-model")))
    results = Results()
    started = time.monotonic()
    for i, item in enumerate(items, start=1):
        row = evaluate_one(item, engine, methods, predict, extras, randomised, i, results)
        label = "" if item.label is None else f", label {codes[item.label]}"
        print(
            f"[{i}/{len(items)}] {item.id}: {codes[row['predicted']]}{label} "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    summary = summarise(results, codes, methods)
    summary["model"] = manifest.summary()
    summary["metadata_used"] = "defaults" if manifest.metadata else None
    evaluation_report.write(out, summary, results, methods)
    print(evaluation_report.markdown(summary))
    print(f"\nwrote {out}/report.md, report.json and the plots")
    if args.record:
        raw = json.loads((manifest.directory / MANIFEST).read_text())
        raw.setdefault("evaluation", {})["evaluate"] = {
            **summary,
            "images_folder": Path(args.images).name,
            "date": time.strftime("%Y-%m-%d"),
        }
        (manifest.directory / MANIFEST).write_text(json.dumps(raw, indent=2) + "\n")
        print(f"recorded in {manifest.directory / MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
