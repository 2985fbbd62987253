"""One image's evaluation, as a plain JSON-able row: the class probabilities, each CAM
method's localisation (with a mask) and faithfulness, the sanity check's correlations, the
raw maps (for contact sheets), and where the time went. The single-process CLI writes these
rows as it goes; a Beam pipeline makes the same rows on its workers."""

from __future__ import annotations

import io
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dermcam import cam, imaging
from dermcam.engine import Explanation, LiteRTEngine, pooled
from dermcam.inputs import image_input
from dermcam.metadata import Encoded
from dermcam.rollout import ROLLOUTS, rollout_map
from model_store.evaluation import metrics
from model_store.evaluation.folder import Item, read_bytes
from model_store.evaluation.scoring import SCORECAM, BatchPredict, scorecam_map
from model_store.evaluation.verdicts import verdict

MAX_PIXELS = 200_000_000
GRID_DECIMALS = 4


@dataclass
class Setup:
    """What every image is evaluated with (one per process: the engines are loaded once)."""

    engine: LiteRTEngine
    methods: list[str]
    randomised: LiteRTEngine | None = None  # the sanity check's model, when asked for
    curves: bool = True  # deletion and insertion (most of the time per image)

    def __post_init__(self) -> None:
        self.predict = BatchPredict(self.engine)


def artifacts_for(methods: list[str]) -> tuple[str, ...]:
    """The artifacts an evaluation with `methods` loads: a rollout reads the attention one."""
    return ("predict", "gradcam", *(("attention",) if set(methods) & set(ROLLOUTS) else ()))


def seed_of(image_id: str) -> int:
    """The random order's seed: from the image's id, so any worker makes the same one."""
    return zlib.crc32(image_id.encode())


def read(location: Path | str) -> bytes:
    return read_bytes(location)


def flat_rows(picture: Image.Image) -> bool:
    """Every row the same (a degenerate thumbnail: vertical stripes, no lesion)."""
    pixels = np.asarray(picture.convert("L"), dtype=np.int16)
    return bool(np.all(pixels == pixels[:1]))


@dataclass
class Prepared:
    """An image decoded for the model, with its patient fields encoded."""

    item: Item
    decoded: imaging.DecodedImage
    encoded: Encoded | None
    seconds: float

    @property
    def extras(self) -> dict[str, np.ndarray]:
        return self.encoded.inputs if self.encoded else {}


def prepare(item: Item, setup: Setup, data: bytes | None = None) -> Prepared:
    """Read and decode `item` the model's way. Raises the imaging errors for an image that
    cannot be decoded, OSError when it cannot be read, InvalidMetadata for bad fields."""
    started = time.perf_counter()
    manifest = setup.engine.manifest
    decoded = imaging.decode(
        read(item.image) if data is None else data, MAX_PIXELS, image_input(manifest)
    )
    schema = manifest.metadata
    # The image's own fields; a field the model requires and the table lacks takes an example.
    encoded = schema.encode({**schema.example_values(), **item.fields}) if schema else None
    return Prepared(item, decoded, encoded, time.perf_counter() - started)


def evaluate_one(
    item: Item,
    setup: Setup,
    data: bytes | None = None,
    prepared: Prepared | None = None,
    probs: np.ndarray | None = None,
    predict_s: float = 0.0,
) -> dict[str, Any]:
    """The row for `item` (read and decoded here unless `prepared`; predicted here unless
    its `probs` come from a batch, which took `predict_s` of this image's share)."""
    engine, methods = setup.engine, setup.methods
    manifest = engine.manifest
    clock = _Clock()
    prepared = prepared or prepare(item, setup, data)
    decoded, encoded, extras = prepared.decoded, prepared.encoded, prepared.extras
    h, w = manifest.height, manifest.width
    tensor = decoded.tensor
    clock.seconds["decode"] = round(prepared.seconds, 4)
    if probs is None:
        probs = engine.predict(tensor, extras)
        clock.mark("predict")
    else:
        clock.seconds["predict"] = round(predict_s, 4)
        clock.last = time.perf_counter()
    predicted = int(np.argmax(probs))
    target = item.label if item.label is not None else predicted
    mask = load_mask(item.mask, decoded.image.size) if item.mask is not None else None
    row: dict[str, Any] = {
        "id": item.id,
        "label": item.label,
        "predicted": predicted,
        "target": target,
        "probability": round(float(probs[target]), 8),
        "probabilities": [round(float(p), 8) for p in probs],
        "metadata": encoded.used if encoded else None,
        "flat_rows": flat_rows(decoded.image),
        "methods": {},
        "grids": {},
        "sanity": {},
    }
    explained = engine.explain(tensor, target, extras)
    explained_top = explained if predicted == target else engine.explain(tensor, predicted, extras)
    other = setup.randomised.explain(tensor, target, extras) if setup.randomised else None
    clock.mark("explain")
    found = verdict(
        manifest, decoded.image, decoded.width, decoded.height, probs, pooled(explained.activations)
    )
    if found is not None:
        row["trust"] = found

    def score(klass: int):  # noqa: ANN202 - a batch scorer
        return lambda x: setup.predict(x, extras)[:, klass]

    if setup.curves:
        shuffled = np.random.default_rng(seed_of(item.id)).permutation(h * w)
        random_curves = metrics.perturbation_curves(tensor[0], shuffled, score(predicted))
        row["random"] = {
            "deletion": random_curves.deletion_auc,
            "insertion": random_curves.insertion_auc,
        }
        clock.mark("curves")
    if mask is not None:
        row["baselines"] = metrics.baselines(mask)
    for method in methods:
        figures: dict[str, Any] = {}
        grid = _map(method, explained, tensor, target, setup, extras)
        row["grids"][method] = np.round(grid.astype(np.float64), GRID_DECIMALS).tolist()
        if mask is not None:
            figures.update(metrics.localisation(cam.upsample(grid, *decoded.image.size), mask))
        clock.mark("explain")
        if setup.curves:
            top = (
                grid
                if predicted == target
                else _map(method, explained_top, tensor, predicted, setup, extras)
            )
            order = metrics.map_order(cam.upsample(top, w, h))
            curves = metrics.perturbation_curves(tensor[0], order, score(predicted))
            figures["deletion"] = curves.deletion_auc
            figures["insertion"] = curves.insertion_auc
            clock.mark("curves")
        if other is not None and method in cam.METHODS:
            mine = cam.class_map(other.activations, other.gradients, method)
            row["sanity"][method] = metrics.spearman(mine, grid)
            clock.mark("sanity")
        elif setup.randomised is not None and method in ROLLOUTS:
            mine = _rollout(setup.randomised, method, tensor, target)
            row["sanity"][method] = metrics.spearman(mine, grid)
            clock.mark("sanity")
        row["methods"][method] = figures
    row["seconds"] = clock.seconds
    return row


def _map(
    method: str,
    explanation: Explanation,
    tensor: np.ndarray,
    klass: int,
    setup: Setup,
    extras: dict,  # noqa: ANN001
) -> np.ndarray:
    if method in ROLLOUTS:  # from the attention artifact, not the Grad-CAM graph's answer
        return _rollout(setup.engine, method, tensor, klass)
    if method == SCORECAM:
        raw = scorecam_map(tensor, explanation.activations, klass, setup.predict, extras)
        return cam.normalise(np.maximum(raw, 0.0))
    return cam.class_map(explanation.activations, explanation.gradients, method)


def _rollout(engine: LiteRTEngine, method: str, tensor: np.ndarray, klass: int) -> np.ndarray:
    layout = engine.manifest.raw["attention"]
    answer = engine.attend(tensor, klass)
    return rollout_map(method, answer, layout["prefix_tokens"], tuple(layout["grid"]))


def load_mask(path: Path | str, size: tuple[int, int]) -> np.ndarray:
    """A lesion mask at the working picture's size, as booleans."""
    with Image.open(io.BytesIO(read_bytes(path))) as m:
        return np.asarray(m.convert("L").resize(size, Image.Resampling.NEAREST)) > 127


class _Clock:
    """Seconds per stage, summed over the stages' visits."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self.last, 4)
        self.last = now
