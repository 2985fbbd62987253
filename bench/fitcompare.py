"""How good is the predicted fit check? Both fit checks on the same models in one run.

    python -m bench.fitcompare [--models demo,demo-metadata,mobilenetv2,resnet50-sigmoid]
                               [--no-export-timing] [--json bench/fitcompare.json]

For each model the exhaustive fit check (every configuration run for real) and the predicted
one (one whole-core run, then the recommendation and the next cheaper verified); per
configuration the exhaustive run measured, the prediction's error in cold start and warm p50,
and whether both recommend the same. Then a nested EfficientNetB0 (7 classes, 224 px) is
exported twice through `python -m model_store.export`, with each fit check, and timed. Writes
bench/fitcompare.json and prints the tables docs/PERFORMANCE.md quotes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import models
from model_store.fitting import exhaustive, predicted
from model_store.fitting.report import recommendation

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("demo", "demo-metadata", "mobilenetv2", "resnet50-sigmoid")


def model_dir(name: str) -> Path:
    if name != "resnet50-sigmoid":
        return models.ensure(name)
    # The README's real-world example: a tf.keras ResNet50 .h5, one sigmoid unit, 96 px.
    target = models.OUT / name / "1"
    if not (target / "manifest.json").exists():
        from model_store.demos import specimens
        from model_store.exporting.cli import main as export_main

        source = specimens.tf_keras_classifier(
            models.OUT / "resnet50-sigmoid.h5", "ResNet50", "sigmoid", preprocessing="caffe"
        )
        argv = [str(source), "--labels", "benign,malignant", "--out", str(target)]
        export_main([*argv, "--preprocess", "caffe", "--fitcheck", "none"])
    return target


def compare(name: str) -> dict:
    folder = model_dir(name)
    started = time.perf_counter()
    full = exhaustive.check_with_storage(folder)
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    guess = predicted.check_with_storage(folder)
    guess_s = time.perf_counter() - started
    rows = []
    for function in full:
        measured = {(o["memory_mb"], o["cpu"]): o for o in full[function]["options"]}
        foreseen = {(o["memory_mb"], o["cpu"]): o for o in guess[function]["options"]}
        for key, real in measured.items():
            other = foreseen.get(key)
            if other is None:
                continue
            rows.append(
                {
                    "function": function,
                    "memory_mb": key[0],
                    "cpu": key[1],
                    "fits": [real["fits"], other["fits"]],
                    "cold_start_s": [real["cold_start_s"], other["cold_start_s"]],
                    "p50_ms": [real["p50_ms"], other["p50_ms"]],
                    "cold_error": _error(real["cold_start_s"], other["cold_start_s"]),
                    "p50_error": _error(real["p50_ms"], other["p50_ms"]),
                    "source": other["source"],
                }
            )
    chosen = {}
    for function in full:
        a, _ = recommendation(full[function])
        b, _ = recommendation(guess[function])
        chosen[function] = [a.flags if a else None, b.flags if b else None]
    return {
        "model": name,
        "seconds": {"exhaustive": round(full_s, 1), "predicted": round(guess_s, 1)},
        "recommended": chosen,
        "rows": rows,
        "profiles": {f: guess[f]["profile"] for f in guess},
    }


def _error(real: float | None, other: float | None) -> float | None:
    if real in (None, 0) or other is None:
        return None
    return round((other - real) / real, 3)


def export_timing() -> dict:
    """A nested EfficientNetB0 through the exporter's CLI with each fit check, timed."""
    from bench import zoo
    from model_store.synthetic import CLASSES

    tmp = Path(tempfile.mkdtemp(prefix="fitcompare-"))
    source = tmp / "efficientnetb0-nested.keras"
    zoo.build("EfficientNetB0", "nested", "softmax").save(source)
    labels = ",".join(code for code, _ in CLASSES)
    found = {}
    for mode in ("exhaustive", "predicted"):
        out = tmp / mode
        command = [sys.executable, "-m", "model_store.export", str(source), "--labels", labels]
        command += ["--out", str(out), "--fitcheck", mode]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        manifest = json.loads((out / "manifest.json").read_text()) if done.returncode == 0 else {}
        fit = manifest.get("fitcheck", {})
        found[mode] = {
            "seconds": round(seconds, 1),
            "returncode": done.returncode,
            "recommended": {
                f: (fit.get(f) or {}).get("recommended") for f in ("predict", "gradcam")
            },
        }
    found["ratio"] = round(found["predicted"]["seconds"] / found["exhaustive"]["seconds"], 3)
    return found


def accuracy(rows: list[dict]) -> dict:
    """The prediction's errors over the configurations both checks found to fit (elsewhere a
    measured p50 is a thrashing page cache, which nothing predicts and nobody deploys)."""
    found = {}
    for key in ("cold_error", "p50_error"):
        errors = [abs(r[key]) for r in rows if all(r["fits"]) and r[key] is not None]
        found[key] = {
            "configurations": len(errors),
            "within_25pct": sum(e <= 0.25 for e in errors),
            "median": round(sorted(errors)[len(errors) // 2], 3) if errors else None,
            "max": round(max(errors), 3) if errors else None,
        }
    return found


def report(results: dict) -> str:
    lines = []
    for entry in results["models"]:
        fit = accuracy(entry["rows"])
        same = all(a == b for a, b in entry["recommended"].values())
        lines += [
            f"{entry['model']}: exhaustive {entry['seconds']['exhaustive']:.0f} s, predicted "
            f"{entry['seconds']['predicted']:.0f} s; recommended "
            + "; ".join(f"{f} {a} | {b}" for f, (a, b) in entry["recommended"].items())
            + f" ({'same' if same else 'different'}); where both fit, error within 25 %: "
            + ", ".join(
                f"{label} {fit[k]['within_25pct']}/{fit[k]['configurations']} "
                f"(median {_pct(fit[k]['median'])}, max {_pct(fit[k]['max'])})"
                for label, k in (("cold start", "cold_error"), ("p50", "p50_error"))
            ),
            "| function | memory | vCPU | fits (measured, predicted) | cold start s "
            "(measured, predicted, error) | p50 ms (measured, predicted, error) |",
            "|---|---|---|---|---|---|",
        ]
        for r in entry["rows"]:
            lines.append(
                f"| {r['function']} | {r['memory_mb']} | {r['cpu']:g} | "
                f"{'yes' if r['fits'][0] else 'no'}, {'yes' if r['fits'][1] else 'no'} | "
                f"{_v(r['cold_start_s'][0])}, {_v(r['cold_start_s'][1])}, "
                f"{_pct(r['cold_error'])} | "
                f"{_v(r['p50_ms'][0])}, {_v(r['p50_ms'][1])}, {_pct(r['p50_error'])} |"
            )
        lines.append("")
    timing = results.get("export_timing")
    if timing:
        lines.append(
            "nested EfficientNetB0 export + fit check: exhaustive "
            f"{timing['exhaustive']['seconds']} s, predicted {timing['predicted']['seconds']} s "
            f"({timing['ratio']:.2f}×)"
        )
    return "\n".join(lines)


def _v(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.0%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fitcompare", description=__doc__)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-export-timing", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="print the tables of --json")
    parser.add_argument("--json", default=str(ROOT / "bench" / "fitcompare.json"))
    args = parser.parse_args(argv)
    if args.report_only:
        print(report(json.loads(Path(args.json).read_text())))
        return 0
    results: dict = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "models": []}
    for name in args.models.split(","):
        results["models"].append(compare(name))
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(report({"models": results["models"][-1:]}), flush=True)
    if not args.no_export_timing:
        results["export_timing"] = export_timing()
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
