"""make zoo-onnx: PyTorch families (timm, torchvision; random weights, 7 classes) through
`torch.onnx.export` and dermcam's exporter, each Grad-CAM map held to pytorch-grad-cam's.

    python -m bench.zoo_onnx [--families resnet18,...] [--images 8] [--no-fitcheck] [--fresh]
    python -m bench.zoo_onnx --report-only

Per family, three processes, two environments (torch never meets TensorFlow):
1. `.venv-torch`: `model_store.demos.torch_specimens family` builds the network, exports the
   ONNX file and keeps its weights;
2. `.venv`: `python -m model_store.export FILE.onnx --preprocess torch` (its parity gates:
   TensorFlow and onnxruntime), then the served engine on isic-uda1 photographs: the input
   tensors, the class it explains (its top-1) and its Grad-CAM map at the target's resolution;
3. `.venv-torch`: `torch_specimens reference` runs pytorch-grad-cam's `GradCAM` on the same
   network at the module whose output is dermcam's target tensor, upsamples dermcam's maps
   with pytorch-grad-cam's own `scale_cam_image` and gives Pearson r per image.
Results accumulate in bench/out/zoo_onnx.json and are written into docs/MODELS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "zoo_onnx"
RESULTS = ROOT / "bench" / "out" / "zoo_onnx.json"
DOC = ROOT / "docs" / "MODELS.md"
TORCH = ROOT / ".venv-torch" / "bin" / "python"
ISIC = ROOT / "data" / "isic-uda1" / "images"
LABELS = "akiec,bcc,bkl,df,mel,nv,vasc"
FAMILIES = (
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "tf_efficientnet_b3",
    "densenet121",
    "mobilenetv3_large_100",
    "convnext_tiny",
    "regnety_008",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "vit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "vit_little_patch16_reg4_gap_256",
    "swin_tiny_patch4_window7_224",
    "hf_vit_tiny_patch16_224",
)
MARK = "<!-- zoo-onnx -->"
# Where the automatic target (the last spatial map) is a tensor no PyTorch module outputs, the
# layer pytorch-grad-cam's own README names for the family, so both explain the same tensor:
# DenseNet's last feature map is `F.relu(features)`, functional; `features` ends in norm5.
TARGETS = {"densenet121": "/features/norm5/BatchNormalization"}


def _run(command: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and "WARNING" not in line]
    return lines[-1][:300] if lines else ""


def job(model_dir: Path, images: int, path: Path) -> dict:
    """The served engine on real photographs: what pytorch-grad-cam is given to redo."""
    from dermcam import cam, imaging
    from dermcam.engine import LiteRTEngine
    from dermcam.inputs import image_input
    from dermcam.keras_engine import preprocess
    from model_store.evaluation.per_image import MAX_PIXELS

    engine = LiteRTEngine(str(model_dir))
    files = sorted(ISIC.glob("*.jpg"))[-images:]  # the last ones: real lesions, not flat rows
    tensors, classes, maps, first = [], [], [], None
    for file in files:
        decoded = imaging.decode(file.read_bytes(), MAX_PIXELS, image_input(engine.manifest))
        k = int(np.argmax(engine.predict(decoded.tensor)))
        explained = engine.explain(decoded.tensor, k)
        first = explained.activations if first is None else first
        x = preprocess(engine.manifest.raw.get("preprocessing", "none"), decoded.tensor).numpy()
        tensors.append(np.transpose(x[0], (2, 0, 1)))
        classes.append(k)
        maps.append(cam.class_map(explained.activations, explained.gradients))
    fold = engine.manifest.raw.get("target_fold")
    np.savez(
        path,
        **({"fold": np.array(json.dumps(fold))} if fold else {}),
        images=np.stack(tensors).astype(np.float32),
        classes=np.array(classes),
        target=np.transpose(first, (2, 0, 1))[None].astype(np.float32),
        dermcam_maps=np.stack(maps).astype(np.float32),
    )
    return {"images": len(files)}


def one(name: str, images: int, fitcheck: bool) -> dict:
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    source, model_dir = folder / f"{name}.onnx", folder / "model"
    row: dict = {"family": name, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    made = _run([str(TORCH), "-m", "model_store.demos.torch_specimens", "family", name,
                 "--out", str(source)], 1800)  # fmt: skip
    if made.returncode != 0:
        return {**row, "result": "torch export failed", "note": _last_line(made.stderr)}
    row.update(json.loads(made.stdout.strip().splitlines()[-1]))
    command = [sys.executable, "-m", "model_store.export", str(source), "--labels", LABELS,
               "--preprocess", "torch", "--out", str(model_dir)]  # fmt: skip
    command += [] if fitcheck else ["--fitcheck", "none"]
    command += ["--target-layer", TARGETS[name]] if name in TARGETS else []
    started = time.perf_counter()
    exported = _run(command, 3600)
    row["export_s"] = round(time.perf_counter() - started, 1)
    if exported.returncode != 0:
        return {**row, "result": "not exported", "note": _last_line(exported.stderr)}
    manifest = json.loads((model_dir / "manifest.json").read_text())
    row.update(
        result="exported",
        target=manifest["target_layer"],
        parity_tf=manifest["parity"]["max_abs_prob_diff"],
        parity_ort=manifest["parity"]["original"]["max_abs_prob_diff"],
        top1_ort=manifest["parity"]["original"]["top1_agreement"],
        mb={k: round(v["bytes"] / 1e6, 1) for k, v in manifest["artifacts"].items()},
        tiers=recommended_tiers(manifest),
    )
    if name in TARGETS:
        row["note"] = (
            f"named with --target-layer (pytorch-grad-cam's layer for the family); the automatic "
            f"choice, `{automatic_target(source)}`, is a tensor no module outputs"
        )
    work = folder / "job.npz"
    row.update(job(model_dir, images, work))
    weights = str(source.with_suffix(".pt"))
    reference = _run([str(TORCH), "-m", "model_store.demos.torch_specimens", "reference", name,
                      "--weights", weights, "--job", str(work)], 1800)  # fmt: skip
    if reference.returncode != 0:
        return {**row, "note": "pytorch-grad-cam: " + _last_line(reference.stderr)}
    done = np.load(work)
    r = done["r"]
    row.update(
        torch_layer=str(done["torch_layer"]), r_min=float(r.min()), r_median=float(np.median(r))
    )
    return row


def recommended_tiers(manifest: dict) -> dict:
    """The fit check's recommendation per function, as `deploy.sh` would deploy it."""
    found = {}
    for function in ("predict", "gradcam"):
        best = (manifest.get("fitcheck", {}).get(function) or {}).get("recommended")
        found[function] = (
            f"{best['memory_mb']} MiB / {best['cpu']:g} vCPU, cold {best['cold_start_s']:.1f} s, "
            f"p50 {best['p50_ms']:.0f} ms ({best.get('source', 'measured')})"
            if best
            else None
        )
    return found


def automatic_target(source: Path) -> str:
    from model_store.exporting.sources.onnx_graph import OnnxGraph, spatial_nodes

    return spatial_nodes(OnnxGraph.read(source).simplified)[-1][0]


def table(rows: list[dict], kept: dict[str, str] | None = None) -> str:
    columns = (
        "family", "input", "result", "target (ONNX node) → PyTorch module",
        "max abs Δp vs TF / vs onnxruntime", "top-1 vs onnxruntime",
        "r vs pytorch-grad-cam (min / median)", "MB predict / gradcam", "predict", "gradcam",
        "note",
    )  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    measured = {r["family"]: r for r in rows}
    for name in FAMILIES:
        if name not in measured:
            if name in (kept or {}):
                lines.append(kept[name])
            continue
        r = measured[name]
        mb = r.get("mb") or {}
        tiers = r.get("tiers") or {}
        lines.append(
            f"| {r['family']} | {r.get('size', '–')} px | {r['result']} | "
            f"{'`' + r['target'] + '`' if r.get('target') else '–'}"
            f"{' → `' + r['torch_layer'] + '`' if r.get('torch_layer') else ''} | "
            f"{_fmt(r.get('parity_tf'), '.2e')} / {_fmt(r.get('parity_ort'), '.2e')} | "
            f"{_fmt(r.get('top1_ort'), '.0%')} | "
            f"{_fmt(r.get('r_min'), '.4f')} / {_fmt(r.get('r_median'), '.4f')} | "
            f"{mb.get('predict', '–')} / {mb.get('gradcam', '–')} | "
            f"{tiers.get('predict') or '–'} | {tiers.get('gradcam') or '–'} | {r.get('note', '')} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _rows_in_doc(text: str) -> dict[str, str]:
    """The table's rows as the doc has them, by family: kept for families this machine's
    bench/out (not committed) holds no results for, so a partial rerun does not drop them."""
    if MARK not in text:
        return {}
    rows = {}
    for line in text[text.index(MARK) :].splitlines():
        cells = line.split("|")
        if len(cells) > 2 and cells[1].strip() in FAMILIES:
            rows[cells[1].strip()] = line
    return rows


def write_doc(rows: list[dict], images: int) -> None:
    text = DOC.read_text()
    body = (
        f"{MARK}\n## PyTorch models through ONNX (`make zoo-onnx`)\n\n"
        "Written by `python -m bench.zoo_onnx`. Each family from torchvision or timm, random "
        "weights (BatchNorm settled on noise, as training would), a 7-class head, exported by "
        "`torch.onnx.export` (opset 17, dynamic batch, the TorchScript exporter), then "
        "`python -m model_store.export FILE.onnx --preprocess torch`: onnx2tf, the artifacts, "
        "both parity gates (TensorFlow, and onnxruntime running the file itself; max |Δp| ≤ "
        "1e-4, top-1 100 %). Transformers: the target's tokens folded into the patch grid, "
        "prefix tokens dropped, as pytorch-grad-cam's `reshape_transform` does (the reference "
        "is given the same transform). Then each Grad-CAM map of the served engine on "
        f"{images} isic-uda1 photographs (6 in rows without cold start and p50, kept from "
        "earlier runs), for its top class, against pytorch-grad-cam 1.5.7's "
        "`GradCAM` on the PyTorch network itself at the module whose output is the same tensor, "
        "both upsampled by pytorch-grad-cam's `scale_cam_image`: Pearson r per image. Tiers: the "
        "predicted fit check's recommendation, with its cold start and p50 (verified: measured "
        "in a cgroup at that tier; predicted: from the one-core measurement).\n\n"
        + table(rows, _rows_in_doc(text))
        + "\n"
    )
    if MARK in text:
        text = text[: text.index(MARK)] + body
    else:
        text = text.rstrip("\n") + "\n\n" + body
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.zoo_onnx", description=__doc__)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--no-fitcheck", action="store_true")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the doc from the results and manifests"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        done = json.loads(RESULTS.read_text())
        for name, row in done.items():
            manifest = OUT / name / "model" / "manifest.json"
            if row.get("result") == "exported" and manifest.exists():
                row["tiers"] = recommended_tiers(json.loads(manifest.read_text()))
        RESULTS.write_text(json.dumps(done, indent=2) + "\n")
        images = next((r["images"] for r in done.values() if "images" in r), args.images)
        write_doc([done[n] for n in FAMILIES if n in done], images)
        return 0
    if not TORCH.exists():
        print("no .venv-torch: run `make zoo-onnx`, which makes it", file=sys.stderr)
        return 2
    done = {} if args.fresh or not RESULTS.exists() else json.loads(RESULTS.read_text())
    for name in args.families.split(","):
        if done.get(name, {}).get("result") == "exported":
            continue  # a failure is retried: the exporter may have learnt the op since
        print(f"{name} ...", flush=True)
        done[name] = one(name, args.images, not args.no_fitcheck)
        print(json.dumps(done[name]), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(done, indent=2) + "\n")
    write_doc([done[n] for n in FAMILIES if n in done], args.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
