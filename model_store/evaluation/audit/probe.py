"""One image through every artefact: the original and each altered copy predicted and
explained (one Grad-CAM pass each, for the original's top class or the one asked for), as a
plain JSON-able row. The altered copies are re-encoded as PNG and decoded the model's own way,
as an upload would be; the `identity` control is that re-encoding alone."""

from __future__ import annotations

import io
import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from dermcam import cam, imaging
from dermcam.engine import LiteRTEngine, pooled
from dermcam.inputs import image_input
from model_store.evaluation.audit import artefacts, lesion
from model_store.evaluation.folder import Item
from model_store.evaluation.per_image import read
from model_store.evaluation.verdicts import verdict

MAX_SIDE = 1024  # artefacts are drawn on the photo at most this size
GRID_DECIMALS = 4
CONTROLS = tuple(artefacts.CONTROLS)


@dataclass
class AuditSetup:
    engine: LiteRTEngine
    artefacts: list[str]  # the controls are always run too
    strength: float = 1.0
    target: int | None = None  # the class explained (default: the original's top class)
    seed: int = 0
    looks: str = "family"  # or "classic": each artefact's one drawing of before the families

    @property
    def names(self) -> list[str]:
        return [*CONTROLS, *(a for a in self.artefacts if a not in CONTROLS)]


def seed_of(image_id: str, artefact: str, seed: int = 0) -> int:
    return zlib.crc32(f"{seed}:{image_id}:{artefact}".encode())


def picture_of(data: bytes) -> np.ndarray:
    """The upload upright as RGB, at most MAX_SIDE: what artefacts are drawn on."""
    with Image.open(io.BytesIO(data)) as im:
        picture = ImageOps.exif_transpose(im).convert("RGB")
    picture.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(picture)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def lesion_mask(item: Item, pixels: np.ndarray) -> tuple[np.ndarray, str]:
    size = (pixels.shape[1], pixels.shape[0])
    if item.mask is not None:
        return lesion.load(str(item.mask), size), "mask"
    return lesion.estimate(Image.fromarray(pixels)), "estimated"


def altered(item_id: str, name: str, pixels: np.ndarray, mask: np.ndarray, setup: AuditSetup):  # noqa: ANN201
    """The altered copy of an image, what was drawn and its look (the same every time:
    seeded)."""
    look = artefacts.CLASSIC_LOOKS.get(name) if setup.looks == "classic" else None
    return artefacts.draw_with_look(
        name, pixels, mask, seed_of(item_id, name, setup.seed), setup.strength, look
    )


def _attention(grid: np.ndarray, drawn: np.ndarray) -> dict[str, Any]:
    """The share of the map's energy on the drawn pixels, beside their share of the image,
    and whether the map's maximum falls on them."""
    full = cam.upsample(grid, drawn.shape[1], drawn.shape[0])
    total = float(full.sum())
    y, x = np.unravel_index(int(np.argmax(full)), full.shape)
    return {
        "energy": round(float(full[drawn].sum()) / total, 4) if total > 0 else 0.0,
        "area": round(float(drawn.mean()), 4),
        "max_on": bool(drawn[y, x]),
    }


def audit_one(item: Item, setup: AuditSetup, data: bytes | None = None) -> dict[str, Any]:
    engine = setup.engine
    manifest = engine.manifest
    started = time.perf_counter()
    data = read(item.image) if data is None else data
    wanted = image_input(manifest)
    schema = manifest.metadata
    encoded = schema.encode({**schema.example_values(), **item.fields}) if schema else None
    extras = encoded.inputs if encoded else {}

    def explain(upload: bytes, target: int | None):  # noqa: ANN202
        decoded = imaging.decode(upload, 200_000_000, wanted)
        tensor = decoded.tensor
        probs = engine.predict(tensor, extras) if target is None else None
        klass = int(np.argmax(probs)) if target is None else target
        found = engine.explain(tensor, klass, extras)
        grid = cam.class_map(found.activations, found.gradients, "gradcam")
        said = verdict(
            manifest,
            decoded.image,
            decoded.width,
            decoded.height,
            found.probabilities,
            pooled(found.activations),
        )
        return found.probabilities, grid, klass, said

    probs, grid, target, said = explain(data, setup.target)
    pixels = picture_of(data)
    mask, how = lesion_mask(item, pixels)
    row: dict[str, Any] = {
        "id": item.id,
        "label": item.label,
        "target": target,
        "probabilities": [round(float(p), 6) for p in probs],
        "grid": np.round(grid.astype(np.float64), GRID_DECIMALS).tolist(),
        "lesion": how,
        "lesion_area": round(float(mask.mean()), 4),
        "artefacts": {},
        **({"trust": said} if said else {}),
    }
    for name in setup.names:
        changed, drawn, look = altered(item.id, name, pixels, mask, setup)
        after, after_grid, _, said_after = explain(png(changed), target)
        row["artefacts"][name] = {
            "probabilities": [round(float(p), 6) for p in after],
            "grid": np.round(after_grid.astype(np.float64), GRID_DECIMALS).tolist(),
            "placed": bool(drawn.any()) or name == "identity",
            **({"look": look} if look else {}),
            **(_attention(after_grid, drawn) if drawn.any() else {}),
            **({"trust": said_after} if said_after else {}),
        }
    row["seconds"] = round(time.perf_counter() - started, 4)
    row["passes"] = 1 + len(setup.names)
    return row
