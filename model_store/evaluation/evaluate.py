"""How good are a model's predictions and explanations on your own images? LiteRT only.

    python -m model_store.evaluate MODEL_DIR --images DIR [--labels CSV] [--masks DIR]
        [--map melanoma=mel,nevus=nv] [--fields age=age_approx,sex] [--methods gradcam,...]
        [--sanity] [--no-curves] [--out DIR] [--fresh] [--record] [--limit N]

ISIC-style folders: `<id>.jpg|png`; masks `<id>_segmentation.png` in --masks or beside the
images; a CSV with an image-id column and a class column (codes of the model's labels, names
mapped with --map, or benign/malignant and 0/1 for two-class models). Reports classification
(when labels are given), localisation against the masks beside image-blind baselines (when
masks are given), deletion/insertion faithfulness beside a random order, per CAM method, and
with --sanity the model-randomisation check. Writes report.md, report.json, a plot per
metric and contact sheets of the best and worst maps; --record puts the summary into the
manifest's `evaluation`. Score-CAM (top-64 channels, probability-weighted) is offered here,
not in the function: it needs 64 more forward passes per map. A model with patient metadata
gets each image's fields from the CSV's columns (`--fields`), else the schema's defaults.
Each image's results go to `results.jsonl` in the report folder as they are made: a stopped
run resumes where it left off (`--fresh` starts over), and the report says where the time
per image went (deletion and insertion dominate: `--no-curves` leaves them out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dermcam import cam, imaging
from dermcam.engine import LiteRTEngine
from dermcam.errors import DermcamError
from dermcam.manifest import MANIFEST, Manifest, read_manifest, sha256_file
from dermcam.rollout import ROLLOUTS
from model_store.evaluation.folder import Item, collect, field_mapping, skip_reason, skipped
from model_store.evaluation.per_image import (
    Prepared,
    Setup,
    artifacts_for,
    evaluate_one,
    load_mask,
    prepare,
    read,
)
from model_store.evaluation.runlog import RunLog
from model_store.evaluation.runners import add_runner_options, run_tool
from model_store.evaluation.scoring import SCORECAM
from model_store.evaluation.summary import summarise

# What one bad image raises: it is reported as skipped, the run goes on.
SKIPPABLE = (DermcamError, OSError, ValueError)


def evaluate(
    engine: LiteRTEngine,
    images: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray,
    method: str = "gradcam",
    extras: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, float]:
    """Accuracy and the pointing game on arrays of images at the model's size: the quick
    held-out figures the demo builds record (the folder CLI below reports the rest)."""
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


def evaluate_or_skip(item: Item, setup: Setup) -> dict:
    """The image's row, or the row saying why it could not be evaluated."""
    if item.skip:
        return skipped(item.id, item.skip)
    try:
        return evaluate_one(item, setup)
    except SKIPPABLE as exc:
        return skipped(item.id, skip_reason(exc))


def evaluate_batch(items: list[Item], setup: Setup) -> list[dict]:
    """The rows of several images, their predictions made in one batched call (what a Beam
    worker does with a batch); the same rows as one at a time, in the same order."""
    rows: dict[str, dict] = {}
    ready: list[Prepared] = []
    for item in items:
        if item.skip:
            rows[item.id] = skipped(item.id, item.skip)
            continue
        try:
            ready.append(prepare(item, setup))
        except SKIPPABLE as exc:
            rows[item.id] = skipped(item.id, skip_reason(exc))
    if ready:
        started = time.perf_counter()
        tensors = np.concatenate([p.decoded.tensor for p in ready])
        names = ready[0].extras.keys()
        extras = {n: np.concatenate([p.extras[n] for p in ready]) for n in names}
        probs = setup.predict(tensors, extras)
        share = (time.perf_counter() - started) / len(ready)
        for p, found in zip(ready, probs, strict=True):
            try:
                rows[p.item.id] = evaluate_one(
                    p.item, setup, prepared=p, probs=found, predict_s=share
                )
            except SKIPPABLE as exc:
                rows[p.item.id] = skipped(p.item.id, skip_reason(exc))
    return [rows[item.id] for item in items]


def pictures_of(items: list[Item], engine: LiteRTEngine):  # noqa: ANN201 - report.Pictures
    """The working-size picture and mask of an image id, read again for the report."""
    by_id = {item.id: item for item in items}

    def load(image_id: str) -> tuple[Image.Image, np.ndarray | None]:
        item = by_id[image_id]
        picture = imaging.decode(read(item.image), 200_000_000).image
        mask = load_mask(item.mask, picture.size) if item.mask is not None else None
        return picture, mask

    return load


def settings(args: argparse.Namespace, engine: LiteRTEngine, methods: list[str]) -> dict[str, Any]:
    """What the rows depend on: a resumed run must have been made with the same."""
    manifest = engine.manifest
    return {
        "model": manifest.summary(),
        "artifacts": {k: sha256_file(manifest.artifact_path(k)) for k in artifacts_for(methods)},
        "methods": methods,
        "sanity": args.sanity,
        "curves": not args.no_curves,
        "fields": field_mapping(args.fields),
        "map": args.map,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
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
        "--fields",
        help="the model's patient fields from the CSV's columns: age=age_approx,sex "
        "(default: every field at the schema's default)",
    )
    parser.add_argument(
        "--methods",
        help="methods to compare (default: every CAM method, Score-CAM, and for a "
        f"transformer exported with its attention {', '.join(ROLLOUTS)})",
    )
    parser.add_argument("--sanity", action="store_true", help="the randomisation check too")
    parser.add_argument(
        "--no-curves", action="store_true", help="leave out deletion and insertion (faster)"
    )
    parser.add_argument("--out", help="report folder (default: evaluation-<model>-<version>)")
    parser.add_argument("--fresh", action="store_true", help="do not resume an earlier run")
    parser.add_argument("--record", action="store_true", help="summary into the manifest")
    parser.add_argument("--limit", type=int, help="at most this many images")
    add_runner_options(parser)
    return parser.parse_args(argv)


@dataclass
class Job:
    """An evaluation as asked: the model, the methods and the images (with why any is
    skipped); run in this process, or on Beam (model_store.archive)."""

    args: argparse.Namespace
    engine: LiteRTEngine
    methods: list[str]
    fields: dict[str, str]
    items: list[Item]
    out: Path

    def settings(self) -> dict[str, Any]:
        return settings(self.args, self.engine, self.methods)


def job_from(args: argparse.Namespace) -> Job:
    """The job, or ValueError saying what is wrong with what was asked."""
    manifest = read_manifest(args.model_dir)
    methods = chosen_methods(args.methods, manifest)
    engine = LiteRTEngine(args.model_dir, artifacts_for(methods))
    fields = field_mapping(args.fields)
    if fields and not manifest.metadata:
        raise ValueError("--fields: this model takes only the image")
    items = collect(
        args.images, args.labels, args.masks, manifest.codes, args.map, fields, args.limit
    )
    out = Path(args.out or f"evaluation-{manifest.name}-{manifest.version}")
    return Job(args, engine, methods, fields, items, out)


def chosen_methods(spec: str | None, manifest: Manifest) -> list[str]:
    """The methods asked for (every one the model can be explained with by default); a
    rollout only for a model exported with its attention (a transformer's)."""
    rollouts = list(ROLLOUTS) if manifest.raw.get("attention") else []
    known = [*cam.METHODS, SCORECAM, *rollouts]
    if not spec:
        return known
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    if [m for m in methods if m in ROLLOUTS and not rollouts]:
        raise ValueError(
            f"{', '.join(ROLLOUTS)} need a transformer exported with its attention artifact "
            "(global self-attention); this model has none"
        )
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown methods: {unknown}; known: {known}")
    return methods


def make_setup(job: Job) -> Setup:
    randomised = None
    if job.args.sanity:
        from model_store.evaluation.sanity import randomised_copy

        copy = randomised_copy(job.args.model_dir, job.out / "randomised-model")
        randomised = LiteRTEngine(str(copy), artifacts_for(job.methods))
    return Setup(job.engine, job.methods, randomised, curves=not job.args.no_curves)


def run_here(job: Job) -> list[dict]:
    """Every image in this process, each row on disk as it is made (resumed when asked)."""
    codes = job.engine.manifest.codes
    log = RunLog(job.out, job.settings(), resume=not job.args.fresh)
    setup = make_setup(job)
    done = log.done()
    todo = [item for item in job.items if item.id not in done]
    if log.resumed:
        print(f"resuming: {log.resumed} images already in {log.path}, {len(todo)} to go")
    started = time.monotonic()
    for i, item in enumerate(todo, start=1):
        row = evaluate_or_skip(item, setup)
        log.append(row)
        elapsed = time.monotonic() - started
        left = elapsed / i * (len(todo) - i)
        if "skipped" in row:
            said = f"skipped ({row['skipped']})"
        else:
            label = "" if item.label is None else f", label {codes[item.label]}"
            said = f"{codes[row['predicted']]}{label}"
        print(
            f"[{len(done) + i}/{len(job.items)}] {item.id}: {said} "
            f"({elapsed:.0f} s, about {left:.0f} s left)",
            flush=True,
        )
    wanted = {item.id for item in job.items}
    return [row for row in log.rows if row["id"] in wanted]


def finish(job: Job, rows: list[dict]) -> dict:
    """The summary and the report of the rows (however they were made); --record."""
    from model_store.evaluation import report as evaluation_report

    manifest = job.engine.manifest
    reporting = time.perf_counter()
    summary = summarise(rows, manifest.codes, job.methods)
    summary["model"] = manifest.summary()
    summary["metadata_used"] = _metadata_used(manifest, job.fields)
    evaluated = [row for row in rows if "skipped" not in row]
    job.out.mkdir(parents=True, exist_ok=True)
    pictures = pictures_of(job.items, job.engine)
    evaluation_report.write(job.out, summary, evaluated, job.methods, pictures)
    took = (time.perf_counter() - reporting) / max(1, len(evaluated))
    summary["seconds_per_image"]["report"] = round(took, 4)
    (job.out / "report.md").write_text(evaluation_report.markdown(summary))  # with its time
    written = json.loads((job.out / "report.json").read_text())
    (job.out / "report.json").write_text(
        json.dumps({**written, "summary": summary}, indent=2) + "\n"
    )
    print(evaluation_report.markdown(summary))
    print(f"\nwrote {job.out}/report.md, report.json and the plots")
    if job.args.record:
        raw = json.loads((manifest.directory / MANIFEST).read_text())
        raw.setdefault("evaluation", {})["evaluate"] = {
            **summary,
            "images_folder": job.args.images.rstrip("/").rsplit("/", 1)[-1],
            "date": time.strftime("%Y-%m-%d"),
        }
        (manifest.directory / MANIFEST).write_text(json.dumps(raw, indent=2) + "\n")
        print(f"recorded in {manifest.directory / MANIFEST}")
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_tool("evaluate", sys.modules[__name__], argv)


def _metadata_used(manifest, fields: dict[str, str]) -> str | None:  # noqa: ANN001
    if not manifest.metadata:
        return None
    if not fields:
        return "every field at the schema's default (no --fields)"
    given = ", ".join(f"{name} from column {column!r}" for name, column in fields.items())
    return f"per image, {given}; missing values as the schema fills them"


if __name__ == "__main__":
    sys.exit(main())
