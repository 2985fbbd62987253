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
from dermcam.inputs import image_input
from dermcam.manifest import MANIFEST
from model_store.evaluation import metrics
from model_store.evaluation.folder import Item, class_mapping, find_items, read_labels
from model_store.evaluation.scoring import SCORECAM, BatchPredict, scorecam_map


@dataclass
class Results:
    items: list[dict] = field(default_factory=list)  # per image, per method
    probabilities: list[np.ndarray] = field(default_factory=list)
    truth: list[int] = field(default_factory=list)
    sanity: dict[str, list[float]] = field(default_factory=dict)


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
    decoded = imaging.decode(item.image.read_bytes(), 200_000_000, image_input(engine.manifest))
    h, w = engine.manifest.height, engine.manifest.width
    tensor = decoded.tensor
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

    from model_store.evaluation import report as evaluation_report

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
        from model_store.evaluation.sanity import randomised_copy

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
