"""Whole archives on one machine: the single-process tools against Beam's direct runner on both
cores, in the same run, on the same real photographs (the HAM10000 Xception on isic-uda1 by
default), each as the user runs it: the whole command, wall clock, start to report.

    python -m bench.archive [--model ham10000] [--count 24] [--audit-count 40]

Evaluate with Grad-CAM and Grad-CAM++ and their deletion/insertion curves (two explained
passes per image, and the curves' masked predictions); the audit with its eight artefacts
and two controls. Writes bench/archive.json; docs/PERFORMANCE.md quotes it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from model_store import catalog

ROOT = Path(__file__).resolve().parents[1]
ISIC = ROOT / "data" / "isic-uda1"
FIELDS = ["--fields", "age=age_approx,sex", "--map", "melanoma=mel,nevus=nv"]
TOOLS = {
    "evaluate": ["--methods", "gradcam,gradcam++", *FIELDS],
    "audit": FIELDS,
}


def run(tool: str, model_dir: Path, count: int, out: Path, runner: list[str]) -> dict:
    command = [sys.executable, "-m", f"model_store.{tool}", str(model_dir)]
    command += ["--images", str(ISIC / "images"), "--labels", str(ISIC / "labels.csv")]
    command += [*TOOLS[tool], "--limit", str(count), "--out", str(out), "--fresh", *runner]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads((out / "report.json").read_text())["summary"]
    return {"seconds": round(seconds, 1), "summary": summary}


def passes_per_image(tool: str, summary: dict) -> float:
    if tool == "audit":
        return summary["speed"]["explained_passes"] / summary["images"]
    return float(len(TOOLS[tool][1].split(",")))


def compare(tool: str, model_dir: Path, count: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        single = run(tool, model_dir, count, Path(tmp) / "single", [])
        direct = run(
            tool, model_dir, count, Path(tmp) / "direct",
            ["--runner", "direct", "--workers", str(workers)],
        )  # fmt: skip
    images = single["summary"]["images"]
    passes = passes_per_image(tool, single["summary"])
    rate = {k: images * passes / r["seconds"] for k, r in (("single", single), ("direct", direct))}
    same = _without_timing(single["summary"]) == _without_timing(direct["summary"])
    return {
        "images": images,
        "passes_per_image": round(passes, 2),
        "single_s": single["seconds"],
        "direct_s": direct["seconds"],
        "single_passes_per_s": round(rate["single"], 3),
        "direct_passes_per_s": round(rate["direct"], 3),
        "speedup": round(rate["direct"] / rate["single"], 2),
        "same_summary": same,
        "seconds_per_image_single": single["summary"].get("seconds_per_image"),
    }


def _without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("seconds_per_image", "speed")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive", description=__doc__)
    parser.add_argument("--model", default="ham10000", help="a catalog name or a model folder")
    parser.add_argument("--count", type=int, default=24, help="images for evaluate")
    parser.add_argument("--audit-count", type=int, default=40, help="images for the audit")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--tools", default="evaluate,audit", help="which to compare")
    parser.add_argument("--json", default=str(ROOT / "bench" / "archive.json"))
    args = parser.parse_args(argv)
    path = Path(args.json)
    earlier = json.loads(path.read_text()) if path.exists() else {}
    model_dir = catalog.resolve(args.model)
    results = {
        **earlier,  # a tool not run this time keeps its last figures
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": str(args.model),
        "cores": os.cpu_count(),
        "workers": args.workers,
    }
    for tool, count in (("evaluate", args.count), ("audit", args.audit_count)):
        if tool not in args.tools.split(","):
            continue
        results[tool] = compare(tool, model_dir, count, args.workers)
        results[tool]["date"] = results["date"]
        print(tool, json.dumps(results[tool]), flush=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
