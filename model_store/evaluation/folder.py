"""An ISIC-style folder: images `<id>.jpg|png`, masks `<id>_segmentation.png` (in a masks
folder or beside the images), and a CSV with an image-id column and a class column."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
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
    fields: dict[str, str] = field(default_factory=dict)  # patient metadata from the CSV


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


def field_mapping(spec: str | None) -> dict[str, str]:
    """--fields age=age_approx,sex: the model's field ← the CSV's column (the same name when
    no column is given)."""
    found = {}
    for pair in (spec or "").split(","):
        if pair.strip():
            name, _, column = pair.partition("=")
            found[name.strip()] = (column or name).strip().lower()
    return found


@dataclass
class Table:
    """What a labels CSV says per image id: the class (when known to the model) and the
    patient fields asked for (empty cells left out: the model's schema fills them)."""

    labels: dict[str, int] = field(default_factory=dict)
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)  # class values the model does not have


def read_table(path: Path, mapping: dict[str, int], fields: dict[str, str] | None = None) -> Table:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    table = Table()
    if not rows:
        return table
    header = [h.strip().lower() for h in rows[0]]
    id_col = next((header.index(c) for c in ID_COLUMNS if c in header), None)
    class_col = next((header.index(c) for c in CLASS_COLUMNS if c in header), None)
    if id_col is None or class_col is None:  # ISIC 2016: no header, "id,class"
        id_col, class_col, body = 0, 1, rows
    else:
        body = rows[1:]
    missing = [c for c in (fields or {}).values() if c not in header]
    if missing:
        raise ValueError(f"--fields: no column {missing[0]!r} in {path.name} ({', '.join(header)})")
    columns = {name: header.index(column) for name, column in (fields or {}).items()}
    for row in body:
        if len(row) <= max(id_col, class_col):
            continue
        image_id = row[id_col].strip()
        value = row[class_col].strip().lower()
        if value in mapping:
            table.labels[image_id] = mapping[value]
        else:
            table.unknown.add(value)
        given = {n: row[c].strip() for n, c in columns.items() if c < len(row) and row[c].strip()}
        if given:
            table.fields[image_id] = given
    return table


def read_labels(path: Path, mapping: dict[str, int]) -> dict[str, int]:
    table = read_table(path, mapping)
    if table.unknown:
        print(f"labels left out (not among the model's, add --map): {sorted(table.unknown)[:8]}")
    return table.labels


def find_items(
    images: Path,
    masks: Path | None,
    labels: dict[str, int] | None,
    fields: dict[str, dict[str, str]] | None = None,
) -> list[Item]:
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
        items.append(Item(path.stem, path, mask, label, (fields or {}).get(path.stem, {})))
    return items
