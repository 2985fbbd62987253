"""An ISIC-style folder: images `<id>.jpg|png`, masks `<id>_segmentation.png` (in a masks
folder or beside the images), and a CSV with an image-id column and a class column."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ID_COLUMNS = ("image_id", "isic_id", "image", "id", "name")
CLASS_COLUMNS = ("dx", "diagnosis", "label", "class", "benign_malignant", "target", "melanoma")


@dataclass
class Item:
    id: str
    image: str  # a local path or gs://bucket/name
    mask: str | None = None
    label: int | None = None
    fields: dict[str, str] = field(default_factory=dict)  # patient metadata from the CSV
    skip: str | None = None  # why it cannot be used (reported, never silently dropped)


def skipped(item_id: str, reason: str) -> dict:
    """The row of an image that was not evaluated, and why."""
    return {"id": item_id, "skipped": reason}


def skip_reason(exc: BaseException) -> str:
    """What a failing image is told: its fault, in words (no stack trace)."""
    kind = {
        "InvalidImage": "undecodable",
        "UnsupportedMediaType": "unsupported format",
        "PayloadTooLarge": "too large",
        "InvalidMetadata": "invalid metadata",
        "FileNotFoundError": "unreadable",
        "PermissionError": "unreadable",
        "IsADirectoryError": "unreadable",
    }.get(type(exc).__name__, "failed")
    return f"{kind}: {str(exc)[:200]}"


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
    unknown_ids: dict[str, str] = field(default_factory=dict)  # image id → that value


def read_table(
    path: str | Path, mapping: dict[str, int], fields: dict[str, str] | None = None
) -> Table:
    """A labels CSV, local or gs://."""
    rows = list(csv.reader(io.StringIO(read_bytes(path).decode("utf-8-sig"))))
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
        raise ValueError(f"--fields: no column {missing[0]!r} in {path} ({', '.join(header)})")
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
            table.unknown_ids[image_id] = value
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
    images: str | Path,
    masks: str | Path | None,
    labels: dict[str, int] | None,
    fields: dict[str, dict[str, str]] | None = None,
    unknown: dict[str, str] | None = None,
) -> list[Item]:
    """The folder's images with their masks, labels and fields. With labels, an image whose
    label the model does not have, or whose mask is missing from a --masks folder, is kept
    with its `skip` reason; an image the CSV does not list is left out. Folders are local
    or `gs://bucket/prefix`."""
    names = listing(images)
    mask_names = {**names, **(listing(masks) if masks is not None else {})}
    items = []
    for name in sorted(names):
        stem, dot, suffix = name.rpartition(".")
        if not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES or stem.endswith("_segmentation"):
            continue
        mask = next(
            (
                mask_names[f"{stem}_segmentation{s}"]
                for s in (".png", ".jpg")
                if f"{stem}_segmentation{s}" in mask_names
            ),
            None,
        )
        label = labels.get(stem) if labels is not None else None
        skip = None
        if labels is not None and label is None:
            if stem not in (unknown or {}):
                continue
            skip = f"label {unknown[stem]!r} is not among the model's classes"
        elif masks is not None and mask is None:
            skip = f"missing mask: no {stem}_segmentation.png in {masks}"
        items.append(Item(stem, names[name], mask, label, (fields or {}).get(stem, {}), skip))
    return items


def collect(
    images: str,
    labels: str | None,
    masks: str | None,
    codes: list[str],
    class_map: str | None = None,
    fields: dict[str, str] | None = None,
    limit: int | None = None,
) -> list[Item]:
    """What the evaluation and the audit run on: the folder's items with their labels,
    masks and patient fields (at most `limit`). ValueError when the table cannot be read as
    asked or nothing is found."""
    table = None
    if labels:
        table = read_table(labels, class_mapping(codes, class_map), fields)
    items = find_items(
        images,
        masks or None,
        table.labels if table else None,
        table.fields if table else None,
        table.unknown_ids if table else None,
    )
    items = items[:limit] if limit else items
    if not items:
        raise ValueError("no images found (or none with a known label)")
    return items


def gcs_location(location: str) -> tuple[object, str, str]:
    """(a storage client, bucket, prefix) for a gs:// location; the emulator's when
    STORAGE_EMULATOR_HOST is set (anonymous: it never asks for credentials)."""
    import os

    from google.cloud import storage

    bucket, _, prefix = location.removeprefix("gs://").partition("/")
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(project="local", credentials=AnonymousCredentials())
    else:
        client = storage.Client()
    return client, bucket, prefix


def listing(location: str | Path) -> dict[str, str]:
    """File name → where to read it, for a local folder or a gs://bucket/prefix."""
    location = str(location)
    if location.startswith("gs://"):
        client, bucket, prefix = gcs_location(location)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        return {
            blob.name[len(prefix) :]: f"gs://{bucket}/{blob.name}"
            for blob in client.list_blobs(bucket, prefix=prefix)
            if "/" not in blob.name[len(prefix) :]
        }
    return {path.name: str(path) for path in Path(location).iterdir() if path.is_file()}


def read_bytes(location: str | Path) -> bytes:
    """A local file's or a gs:// object's bytes. OSError when it cannot be read."""
    location = str(location)
    if not location.startswith("gs://"):
        return Path(location).read_bytes()
    client, bucket, name = gcs_location(location)
    try:
        return client.bucket(bucket).blob(name).download_as_bytes()
    except Exception as exc:  # NotFound, Forbidden, transport errors: the image is unreadable
        raise OSError(f"{location} cannot be read ({type(exc).__name__})") from exc
