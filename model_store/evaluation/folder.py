"""An ISIC-style folder: images `<id>.jpg|png`, masks `<id>_segmentation.png` (in a masks
folder or beside the images), and a CSV with an image-id column and a class column."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ID_COLUMNS = ("image_id", "isic_id", "image", "id", "name")
CLASS_COLUMNS = ("dx", "diagnosis", "label", "class", "benign_malignant", "target", "melanoma")


@dataclass
class Item:
    id: str
    image: Path
    mask: Path | None = None
    label: int | None = None


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
