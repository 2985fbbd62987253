"""Per-image results written as they are made (`results.jsonl` in the report folder), so a run
that is stopped loses nothing and the next one resumes where it left off.

`run.json` beside it says what the rows were made with (the model's artifacts, the methods,
the options); a run with other settings starts afresh rather than mixing rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROWS = "results.jsonl"
SETTINGS = "run.json"


class RunLog:
    def __init__(self, folder: Path, settings: dict[str, Any], resume: bool = True) -> None:
        self.folder = folder
        self.path = folder / ROWS
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / SETTINGS
        same = kept.exists() and json.loads(kept.read_text()) == _plain(settings)
        if not (resume and same) and self.path.exists():
            self.path.unlink()  # other settings (or told to start over): the rows do not mix
        kept.write_text(json.dumps(_plain(settings), indent=2) + "\n")
        self.rows: list[dict] = read_rows(self.path)
        self.resumed = len(self.rows)

    def done(self) -> set[str]:
        return {row["id"] for row in self.rows}

    def append(self, row: dict) -> None:
        """One row, on disk before the next image starts."""
        line = json.dumps(row, default=float, separators=(",", ":")) + "\n"
        with open(self.path, "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.append(row)


def read_rows(path: Path) -> list[dict]:
    """Rows of a results file. A last line cut short by a killed run is dropped, and the file
    rewritten without it, so the next row starts on a line of its own."""
    rows, damaged = [], False
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            damaged = True
    if damaged:
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
        path.write_text(text)
    return rows


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, default=str))
