"""The model's labels: from a file (lines `code,Display name`; a JSON list; Teachable
Machine's labels.txt) or a comma list, checked against the model's outputs."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from model_store.exporting.errors import ExportError
from model_store.exporting.sources import Subject

_TEACHABLE_LINE = re.compile(r"^(\d+)\s+(\S.*)$")


def parse_labels(spec: str) -> list[dict[str, str]]:
    """Labels from a file (lines `code,Display name`; a JSON list; or Teachable Machine's
    labels.txt, lines `0 Benign`) or a comma list of codes."""
    path = Path(spec)
    if path.is_file():
        text = path.read_text()
        if path.suffix == ".json":
            items = json.loads(text)
            return [
                {"code": str(x["code"]), "name": str(x.get("name", x["code"]))}
                if isinstance(x, dict)
                else {"code": str(x), "name": str(x)}
                for x in items
            ]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        numbered = [_TEACHABLE_LINE.match(line) for line in lines]
        if lines and all(numbered) and not any("," in line for line in lines):
            return _teachable_labels([(int(m[1]), m[2].strip()) for m in numbered if m])
        rows = [line.split(",", 1) for line in lines]
        return [
            {"code": r[0].strip(), "name": (r[1] if len(r) > 1 else r[0]).strip()} for r in rows
        ]
    return [{"code": c.strip(), "name": c.strip()} for c in spec.split(",") if c.strip()]


def _teachable_labels(rows: list[tuple[int, str]]) -> list[dict[str, str]]:
    """`0 Benign` lines: the number is the output index, the rest the name; the code is the
    name made URL-safe ("Basal cell carcinoma" → "basal-cell-carcinoma")."""
    if [index for index, _ in rows] != list(range(len(rows))):
        raise ExportError("labels.txt must number its lines 0, 1, 2, ... in order.")
    labels, seen = [], set()
    for index, name in rows:
        code = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or str(index)
        if code in seen:
            code = f"{code}-{index}"
        seen.add(code)
        labels.append({"code": code, "name": name})
    return labels


def check_labels(labels: Sequence[dict[str, str]], subject: Subject) -> None:
    classes = subject.classes
    if subject.head.binary and len(labels) != 2:
        raise ExportError(
            f"The model ends in one {subject.head.activation} unit: a two-class model whose "
            "probabilities are [1 - p, p]. Give two labels, the class of p = 0 first "
            f"(e.g. benign,malignant); {len(labels)} were given."
        )
    if len(labels) != classes:
        raise ExportError(f"The model has {classes} outputs but {len(labels)} labels were given.")
    codes = [label["code"] for label in labels]
    if len(set(codes)) != len(codes):
        raise ExportError(f"Label codes must be unique: {', '.join(codes)}")
