"""What the families of looks cost the audit: `model_store.audit` on the same real photographs
(isic-uda1, the first 40 whole ones), every artefact, with `--looks classic` (each artefact's
one drawing of before the families) and `--looks family`, alternated `--runs` times in one
process so both meet the same machine. Reports the median seconds per image of each and their
ratio; written to bench/audit_looks.json and quoted in docs/AUDIT.md.

    python -m bench.audit_looks [--model model_store/models/demo/1] [--images 40] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from model_store.evaluation.audit.cli import main as audit

ROOT = Path(__file__).resolve().parents[1]
ISIC = ROOT / "data" / "isic-uda1"
FIRST_WHOLE = "ISIC_0000114"  # the thumbnails before it are degenerate (data/isic-uda1/README)
OUT = Path(__file__).resolve().parent / "audit_looks.json"


def seconds_per_image(model: Path, photos: Path, looks: str, out: Path) -> float:
    argv = [str(model), "--images", str(photos), "--labels", str(photos / "labels.csv")]
    argv += ["--map", "melanoma=mel,nevus=nv", "--looks", looks, "--out", str(out), "--fresh"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert audit(argv) == 0
    return json.loads((out / "report.json").read_text())["summary"]["speed"]["seconds_per_image"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_looks")
    parser.add_argument("--model", default=str(ROOT / "model_store" / "models" / "demo" / "1"))
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        chosen = sorted(p for p in (ISIC / "images").glob("*.jpg") if p.stem >= FIRST_WHOLE)
        for path in chosen[: args.images]:
            shutil.copyfile(path, photos / path.name)
        shutil.copyfile(ISIC / "labels.csv", photos / "labels.csv")
        times: dict[str, list[float]] = {"classic": [], "family": []}
        for run in range(args.runs):
            for looks in times:
                times[looks].append(
                    seconds_per_image(Path(args.model), photos, looks, Path(tmp) / looks)
                )
            last = {looks: t[-1] for looks, t in times.items()}
            print(f"run {run + 1}: {last['classic']} s classic, {last['family']} s family")
    medians = {looks: statistics.median(t) for looks, t in times.items()}
    result = {
        "when": time.strftime("%Y-%m-%d"),
        "model": str(Path(args.model).relative_to(ROOT)),
        "images": args.images,
        "runs": times,
        "median_seconds_per_image": medians,
        "family_over_classic": round(medians["family"] / medians["classic"], 3),
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
