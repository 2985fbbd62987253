"""make zoo: every keras.applications family through the exporter, nested and flat.

    python -m bench.zoo [--families ResNet50,...] [--forms nested,flat] [--no-fitcheck]
                        [--fresh] [--timeout 2400]

Each family is built with weights=None (nothing can be downloaded), its BatchNorm statistics
calibrated on generated lesions, saved as `.keras` and exported with the parity gate, in a
process of its own (a model that exhausts memory or the time limit is a measured failure,
not a crash of the run). Two forms: `nested` (a transfer-learning model: the backbone one
nested layer, pooling, dropout, a softmax Dense head) and `flat` (the family's own top,
include_top=True); four families also as a `sequential` model with a Flatten head. A few more
heads (binary sigmoid, logits, multi-label) on MobileNetV2.
Then the fit check (real servers in memory cgroups, at a whole vCPU) on each nested export.

Results accumulate in bench/out/zoo.json (a rerun skips what is there unless --fresh) and
are written to docs/MODELS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "zoo"
RESULTS = ROOT / "bench" / "out" / "zoo.json"
DOC = ROOT / "docs" / "MODELS.md"
CLASSES = 7
# family → (keras.applications factory, preprocessing to bake in, input size). Sizes are the
# smallest each architecture takes at which its last block is still spatial enough to look
# at; the preprocessing is the family's own preprocess_input mode ("none": in the model).
FAMILIES: dict[str, tuple[str, int]] = {
    "VGG16": ("caffe", 96),
    "VGG19": ("caffe", 96),
    "ResNet50": ("caffe", 96),
    "ResNet101": ("caffe", 96),
    "ResNet152": ("caffe", 96),
    "ResNet50V2": ("tf", 96),
    "ResNet101V2": ("tf", 96),
    "ResNet152V2": ("tf", 96),
    "InceptionV3": ("tf", 96),
    "InceptionResNetV2": ("tf", 96),
    "Xception": ("tf", 96),
    "MobileNet": ("tf", 96),
    "MobileNetV2": ("tf", 96),
    "MobileNetV3Small": ("none", 96),
    "MobileNetV3Large": ("none", 96),
    "DenseNet121": ("torch", 96),
    "DenseNet169": ("torch", 96),
    "DenseNet201": ("torch", 96),
    "NASNetMobile": ("tf", 96),
    "NASNetLarge": ("tf", 96),
    **{f"EfficientNetB{i}": ("none", 96) for i in range(8)},
    **{f"EfficientNetV2{v}": ("none", 96) for v in ("B0", "B1", "B2", "B3", "S", "M", "L")},
    **{f"ConvNeXt{v}": ("none", 96) for v in ("Tiny", "Small", "Base", "Large", "XLarge")},
}
FORMS = ("nested", "flat")
# Also as a Keras Sequential with augmentation in front and a Flatten head, as transfer-learning
# tutorials write it: the families make test used to export in every form.
SEQUENTIAL_FAMILIES = ("MobileNetV2", "EfficientNetB0", "ResNet50", "DenseNet121")
# Heads beyond softmax, on one backbone: what users ship for binary and multi-label tasks.
EXTRA_HEADS = (("MobileNetV2", "sigmoid"), ("MobileNetV2", "logits"), ("MobileNetV2", "multilabel"))


def build(family: str, form: str, head: str):  # noqa: ANN201 - a keras.Model
    import keras
    import tensorflow as tf

    from dermcam.keras_engine import preprocess
    from model_store.demos.calibrate import calibrate_batchnorm, calibration_batch
    from model_store.demos.specimens import HEADS

    mode, size = FAMILIES[family]
    factory = getattr(keras.applications, family)
    keras.utils.set_random_seed(0)
    shape = (size, size, 3)
    if form == "flat":
        model = factory(weights=None, input_shape=shape, classes=CLASSES)
    elif form == "sequential":
        model = keras.Sequential(
            [
                keras.Input(shape),
                keras.layers.RandomRotation(0.1),
                factory(weights=None, include_top=False, input_shape=shape),
                keras.layers.Flatten(),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dropout(0.2),
                keras.layers.Dense(CLASSES, activation="softmax"),
            ]
        )
    else:
        units, activation = HEADS[head][0](CLASSES), HEADS[head][1]
        inputs = keras.Input(shape)
        x = factory(weights=None, include_top=False, input_shape=shape)(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dropout(0.2)(x)
        model = keras.Model(inputs, keras.layers.Dense(units, activation=activation)(x))
    images = preprocess(mode, tf.constant(calibration_batch(size))).numpy()
    calibrate_batchnorm(model, images)
    return model


def labels_for(head: str) -> list[dict[str, str]]:
    from model_store.synthetic import CLASSES as CODES

    if head == "sigmoid":
        return [{"code": "benign", "name": "Benign"}, {"code": "malignant", "name": "Malignant"}]
    return [{"code": code, "name": name} for code, name in CODES[:CLASSES]]


def export_one(family: str, form: str, head: str, out: Path) -> dict:
    """Build and export one model in this process; the row for the table."""
    from model_store.exporting.errors import ExportError
    from model_store.exporting.export import export

    row: dict = {"family": family, "form": form, "head": head, "size": FAMILIES[family][1]}
    started = time.perf_counter()
    model = build(family, form, head)
    row["parameters"] = int(model.count_params())
    source = out.parent / f"{out.name}.keras"
    source.parent.mkdir(parents=True, exist_ok=True)
    model.save(source)
    skipped: list[str] = []
    options = {
        "name": f"{family.lower()}-{form}-{head}",
        "preprocessing": FAMILIES[family][0],
        "source": source,
        "log": lambda line: skipped.append(line.strip()) if "skipped" in line else None,
    }
    try:
        try:
            manifest = export(model, labels_for(head), out, **options)
        except ExportError as exc:
            figures = exc.parity
            if not (figures and figures.only_probabilities_differ()):
                raise
            # What a user is told to do: accept the float32 rounding, recorded as such.
            row["refused_at_default"] = figures.as_dict()
            manifest = export(
                model,
                labels_for(head),
                out,
                max_prob_diff=figures.suggested_tolerance(),
                tolerance_reason="make zoo: top-1 and maps agree at the default bar",
                **options,
            )
    except ExportError as exc:
        row.update(result="refused", reason=str(exc)[:400])
    else:
        row.update(
            result="exported",
            target=manifest["target_layer"],
            activations=manifest["activations_shape"],
            parity=manifest["parity"],
            bytes={k: v["bytes"] for k, v in manifest["artifacts"].items()},
            dir=str(out.relative_to(ROOT)),
        )
    finally:
        source.unlink(missing_ok=True)
    row["skipped_targets"] = skipped
    row["export_s"] = round(time.perf_counter() - started, 1)
    return row


def _run_isolated(family: str, form: str, head: str, timeout: int) -> dict:
    """export_one in a child process: memory and time limits become measured results."""
    command = [sys.executable, "-m", "bench.zoo", "--one", f"{family},{form},{head}"]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return _failure(family, form, head, f"did not finish within {timeout} s", started)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = [line for line in done.stderr.splitlines() if line.strip()][-3:]
    why = f"exit code {done.returncode}"
    if done.returncode < 0:
        why += " (killed: out of memory?)"
    return _failure(family, form, head, f"{why}: {' | '.join(tail)[:400]}", started)


def _failure(family: str, form: str, head: str, reason: str, started: float) -> dict:
    return {
        "family": family,
        "form": form,
        "head": head,
        "size": FAMILIES[family][1],
        "result": "failed",
        "reason": reason,
        "export_s": round(time.perf_counter() - started, 1),
    }


def fitcheck_row(row: dict, warm: int) -> None:
    """The smallest memory tier each function fits, at a whole vCPU (the memory question;
    the vCPU each would want is the full fit check's, `make fitcheck`)."""
    from model_store.fitting import exhaustive

    report = exhaustive.check_with_storage(ROOT / row["dir"], warm=warm, cpus=(1.0,))
    row["fit"] = {
        function: {
            "tier_mb": result["tier_mb"],
            "whole_core_peak_mb": result["whole_core"]["peak_mb"],
            "whole_core_cold_start_s": result["whole_core"]["cold_start_s"],
        }
        for function, result in report.items()
    }


def load() -> list[dict]:
    return json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []


def save(rows: list[dict]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "rows": rows}
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")


def plan(families: list[str], forms: list[str]) -> list[tuple[str, str, str]]:
    entries = [(f, form, "softmax") for f in families for form in forms]
    entries += [(f, "sequential", "softmax") for f in SEQUENTIAL_FAMILIES if f in families]
    return entries + [(f, "nested", h) for f, h in EXTRA_HEADS if f in families]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.zoo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--forms", default=",".join(FORMS))
    parser.add_argument("--no-fitcheck", action="store_true")
    parser.add_argument("--warm", type=int, default=10, help="warm requests per fit-check run")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--timeout", type=int, default=2400, help="seconds per export")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # family,form,head: in-process
    args = parser.parse_args(argv)
    if args.one:
        family, form, head = args.one.split(",")
        out = OUT / f"{family.lower()}-{form}-{head}" / "1"
        print(json.dumps(export_one(family, form, head, out)), flush=True)
        return 0

    from bench import zoo_report

    rows = [] if args.fresh else load()
    done = {(r["family"], r["form"], r["head"]) for r in rows}
    for family, form, head in plan(args.families.split(","), args.forms.split(",")):
        if (family, form, head) in done:
            continue
        print(f"{family} {form} {head}: exporting…", flush=True)
        row = _run_isolated(family, form, head, args.timeout)
        print(f"  {zoo_report.one_line(row)}", flush=True)
        rows.append(row)
        save(rows)
    if not args.no_fitcheck:
        for row in rows:
            if row["result"] == "exported" and row["form"] == "nested" and "fit" not in row:
                print(f"{row['family']} {row['head']}: fit check…", flush=True)
                fitcheck_row(row, args.warm)
                save(rows)
    DOC.write_text(zoo_report.markdown(rows))
    print(f"wrote {DOC.relative_to(ROOT)} ({len(rows)} exports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
