"""make rollout: attention rollout and gradient-weighted rollout judged beside Grad-CAM on
vision transformers trained on real dermoscopy, by evaluate's deletion and insertion.

    python -m bench.rollout [--archs vit,vit-gap] [--epochs 400] [--repeats 20]

Per architecture, two environments (torch never meets TensorFlow):
1. `.venv-torch`: `model_store.demos.torch_isic` trains a small ViT from scratch on the
   isic-uda1 training split and exports it to ONNX with the held-out photographs beside it;
2. `.venv`: `python -m model_store.export` (the attention artifact included), then
   `python -m model_store.evaluate` on the held-out photographs with Grad-CAM, Grad-CAM++,
   LayerCAM and both rollouts, the sanity check on; and the served cost of each answer
   (`engine.explain` against `engine.attend` plus the rollout, medians of `--repeats`).
Results go to bench/rollout.json and into docs/EXPLANATIONS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.timing import median_ms

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "rollout"
RESULTS = ROOT / "bench" / "rollout.json"
DOC = ROOT / "docs" / "EXPLANATIONS.md"
TORCH = ROOT / ".venv-torch" / "bin" / "python"
METHODS = ("gradcam", "gradcam++", "layercam", "rollout", "gradient-rollout")
MARK = "<!-- rollout -->"


def run(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, check=False)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")


def served_cost(model: Path, repeats: int) -> dict:
    """Median milliseconds of one answer on this machine, one thread: Grad-CAM (the CAM
    graph and its NumPy) against a rollout (the attention graph and its products)."""
    from PIL import Image

    from dermcam import cam
    from dermcam.engine import LiteRTEngine
    from dermcam.rollout import rollout_map

    engine = LiteRTEngine(str(model), ("predict", "gradcam", "attention"))
    layout = engine.manifest.raw["attention"]
    photo = next((model.parent / "held-out").glob("*.jpg"))
    size = (engine.manifest.width, engine.manifest.height)
    x = np.asarray(Image.open(photo).convert("RGB").resize(size), np.float32)[None]

    def gradcam() -> None:
        e = engine.explain(x, 1)
        cam.class_map(e.activations, e.gradients)

    def rollout(method: str):  # noqa: ANN202
        return lambda: rollout_map(
            method, engine.attend(x, 1), layout["prefix_tokens"], tuple(layout["grid"])
        )

    timings = {}
    for name, call in (("gradcam", gradcam), *((m, rollout(m)) for m in METHODS[3:])):
        call()  # warm
        timings[name] = median_ms(call, repeats, digits=2)
    return timings


def bench_arch(arch: str, epochs: int, repeats: int) -> dict:
    folder = OUT / arch
    trained = folder / "training.json"
    if not trained.exists() or json.loads(trained.read_text())["epochs"] != epochs:
        run([str(TORCH), "-m", "model_store.demos.torch_isic", "--out", str(folder),
             "--arch", arch, "--epochs", str(epochs)])  # fmt: skip
    model = folder / "export"
    run([sys.executable, "-m", "model_store.export", str(folder / "model.onnx"),
         "--labels", "nv,mel", "--out", str(model), "--preprocess", "torch",
         "--no-fitcheck"])  # fmt: skip
    report = folder / "evaluation"
    held_out = folder / "held-out"
    run([sys.executable, "-m", "model_store.evaluate", str(model), "--images", str(held_out),
         "--labels", str(held_out / "labels.csv"), "--methods", ",".join(METHODS),
         "--sanity", "--fresh", "--out", str(report)])  # fmt: skip
    summary = json.loads((report / "report.json").read_text())["summary"]
    manifest = json.loads((model / "manifest.json").read_text())
    return {
        "arch": arch,
        "training": json.loads((folder / "training.json").read_text()),
        "attention": manifest["attention"],
        "target_layer": manifest["target_layer"],
        "images": summary["images"],
        "auc": summary["classification"]["roc_auc"].get("mel"),
        "random_order": summary["random_order"],
        "methods": {
            m: {
                "deletion": summary["methods"][m]["deletion"],
                "insertion": summary["methods"][m]["insertion"],
                "sanity_rho": summary["methods"][m].get("sanity_rank_correlation"),
                "sanity_flag": summary["methods"][m].get("sanity_flag"),
                "blank_maps": len(summary["methods"][m].get("blank_maps") or []),
            }
            for m in METHODS
        },
        "served_ms": served_cost(model, repeats),
    }


def table(results: list[dict]) -> str:
    lines = [
        MARK,
        "| model (held-out AUC) | method | deletion ↓ | insertion ↑ | blank | sanity ρ | "
        "served ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["training"]
        first = f"{r['arch']}: {t['size']} px, {r['attention']['tokens']} tokens ({r['auc']:.3f})"
        random = r["random_order"]
        lines.append(
            f"| {first} | random order | {random['deletion']:.3f} | {random['insertion']:.3f} "
            "| – | – | – |"
        )
        for m, f in r["methods"].items():
            rho = "–" if f["sanity_rho"] is None else f"{f['sanity_rho']:.3f}"
            flag = " **flagged**" if f["sanity_flag"] else ""
            ms = r["served_ms"].get(m, "–")
            lines.append(
                f"| | {m} | {f['deletion']:.3f} | {f['insertion']:.3f} | {f['blank_maps']} "
                f"| {rho}{flag} | {ms} |"
            )
    lines.append(MARK)
    return "\n".join(lines)


def write_doc(results: list[dict]) -> None:
    text = DOC.read_text()
    if text.count(MARK) != 2:
        raise SystemExit(f"{DOC} needs two {MARK} lines where the table goes")
    head, _, tail = text.split(MARK)
    DOC.write_text(head + table(results) + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout")
    parser.add_argument("--archs", default="vit,vit-gap")
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.report_only:
        results = [bench_arch(a, args.epochs, args.repeats) for a in args.archs.split(",")]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    results = json.loads(RESULTS.read_text())
    print(table(results))
    write_doc(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
