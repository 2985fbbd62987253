"""Calibrate a model on your own labelled photographs and record what its answers may claim.

    python -m model_store.calibrate MODEL_DIR --images DIR --labels CSV
        [--map melanoma=mel,nevus=nv] [--fields age=age_approx,sex]
        [--concern mel:0.90] [--concern malignant=mel+bcc+akiec:0.90] [--coverage 0.90]
        [--acceptance 0.95] [--no-scope] [--report-fraction 0.5] [--seed 0] [--out DIR]
        [--no-record] [--limit N]

One split, stratified by class and seeded by each image's id: the fit part sets the
temperature (NLL), each concern's threshold (the target sensitivity reached on the fit part)
and the conformal thresholds; the report part, never seen by any of them, measures what the
deployed rule gives (ECE before and after, sensitivity and specificity with 95 % intervals,
coverage and set size). The trust block goes into the manifest (unless --no-record), with the
data set's hash and counts; report.json, report.md and reliability.png go to --out.
Degenerate thumbnails (every row the same) and photographs the quality bounds would decline
are left out and counted. The block also carries the scope rule: the quality bounds
(dermcam.quality) and a k-NN distance in the model's features whose threshold accepts
--acceptance of in-scope photographs (model_store.calibration.scope; its reference features
are written beside the manifest).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermcam.engine import LiteRTEngine
from dermcam.errors import DermcamError
from dermcam.manifest import MANIFEST
from dermcam.quality import Bounds, measure
from dermcam.trust import FORMAT, calibrated
from model_store.calibration import fit
from model_store.calibration.report import write_report
from model_store.calibration.scope import ACCEPTANCE, fit_scope, write_reference
from model_store.evaluation.folder import class_mapping, field_mapping, find_items, read_table
from model_store.evaluation.per_image import Setup, flat_rows, prepare

MIN_CONCERN = 20  # photographs of a class of concern: 10 to fit its threshold, 10 to measure it
DEFAULT_COVERAGE = 0.90


@dataclass(frozen=True)
class ConcernSpec:
    name: str
    codes: tuple[str, ...]
    target: float


def parse_concern(text: str, codes: list[str]) -> ConcernSpec:
    """`mel:0.90`, `mel+bcc+akiec:0.9` or `malignant=mel+bcc+akiec:0.9`."""
    head, sep, target = text.rpartition(":")
    if not sep:
        raise ValueError(f"--concern {text!r}: write CLASS:SENSITIVITY, e.g. mel:0.90")
    name, _, group = head.rpartition("=")
    members = tuple(c.strip() for c in group.split("+") if c.strip())
    unknown = [c for c in members if c not in codes]
    if not members or unknown:
        raise ValueError(
            f"--concern {text!r}: {', '.join(unknown) or 'no class'} is not among the "
            f"model's classes ({', '.join(codes)})"
        )
    value = float(target)
    if not 0.5 <= value < 1.0:
        raise ValueError(f"--concern {text!r}: the target sensitivity must be in [0.5, 1)")
    return ConcernSpec(name.strip() or "+".join(members), members, value)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m model_store.calibrate", description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--images", required=True)
    parser.add_argument("--labels", required=True, help="CSV: an image-id and a class column")
    parser.add_argument("--map", help="CSV class names to the model's codes: melanoma=mel,...")
    parser.add_argument("--fields", help="patient fields from CSV columns: age=age_approx,sex")
    parser.add_argument("--concern", action="append", default=[], help="CLASS[+CLASS]:SENS")
    parser.add_argument("--coverage", type=float, default=DEFAULT_COVERAGE)
    parser.add_argument(
        "--acceptance",
        type=float,
        default=ACCEPTANCE,
        help="share of in-scope photographs the out-of-scope rule accepts",
    )
    parser.add_argument("--report-fraction", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="report folder (default MODEL_DIR/calibration)")
    parser.add_argument("--no-record", action="store_true", help="do not write the manifest")
    parser.add_argument(
        "--no-scope",
        action="store_true",
        help="no out-of-scope feature rule (only the quality bounds): for a model whose "
        "features do not tell its photographs from others (docs/TRUST.md, the demo)",
    )
    parser.add_argument("--limit", type=int)
    return parser.parse_args(argv)


def split(ids: list[str], labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for the report part: per class, the `fraction` of images that come first in an
    order seeded by their ids (the same split on any machine, for any file order)."""
    report = np.zeros(len(ids), dtype=bool)
    for k in np.unique(labels):
        members = [i for i in range(len(ids)) if labels[i] == k]
        members.sort(key=lambda i: zlib.crc32(f"{seed}:{ids[i]}".encode()))
        report[members[: int(round(len(members) * fraction))]] = True
    return report


def collect(args: argparse.Namespace, engine: LiteRTEngine) -> dict:
    """Every labelled photograph's raw probabilities; the data set's hash and what was left out."""
    codes = engine.manifest.codes
    table = read_table(args.labels, class_mapping(codes, args.map), field_mapping(args.fields))
    if table.unknown:
        raise ValueError(
            f"labels not among the model's classes: {', '.join(sorted(table.unknown))}; the "
            f"model has {', '.join(codes)} (name them with --map, e.g. melanoma=mel)"
        )
    items = find_items(args.images, None, table.labels, table.fields)
    items = items[: args.limit] if args.limit else items
    if not items:
        raise ValueError(f"no labelled images found in {args.images}")
    setup = Setup(engine, methods=[])
    digest = hashlib.sha256()
    bounds = Bounds()
    ids, labels, probs, features, degenerate, skipped, declined = [], [], [], [], [], [], []
    for item in items:
        try:
            prepared = prepare(item, setup)
        except (DermcamError, OSError, ValueError) as exc:
            skipped.append({"id": item.id, "reason": str(exc)[:200]})
            continue
        digest.update(f"{item.id}:{prepared.decoded.sha256}:{codes[item.label]}\n".encode())
        decoded = prepared.decoded
        if flat_rows(decoded.image):
            degenerate.append(item.id)
            continue
        if measure(decoded.image, decoded.width, decoded.height).problem(bounds):
            declined.append(item.id)  # served, it would get no answer: not a calibration case
            continue
        seen = engine.observe(decoded.tensor, prepared.extras)
        ids.append(item.id)
        labels.append(item.label)
        probs.append(seen.probabilities)
        features.append(seen.features)
    return {
        "ids": ids,
        "labels": np.array(labels, dtype=np.int64),
        "raw": np.array(probs, dtype=np.float64),
        "features": None if any(f is None for f in features) else np.array(features),
        "sha256": digest.hexdigest(),
        "degenerate": degenerate,
        "declined": declined,
        "skipped": skipped,
        "bounds": bounds,
    }


def check_counts(labels: np.ndarray, concerns: list[ConcernSpec], codes: list[str]) -> None:
    for concern in concerns:
        count = int(np.isin(labels, [codes.index(c) for c in concern.codes]).sum())
        if count < MIN_CONCERN:
            raise ValueError(
                f"class of concern {concern.name!r} has {count} photographs; calibrate needs at "
                f"least {MIN_CONCERN} ({MIN_CONCERN // 2} to fit its threshold, "
                f"{MIN_CONCERN // 2} to measure it)"
            )
    if len(labels) < 2 * MIN_CONCERN:
        raise ValueError(f"{len(labels)} usable photographs; calibrate needs {2 * MIN_CONCERN}")


def calibrate(args: argparse.Namespace) -> dict:
    """The trust block and its report, from the photographs (nothing written here)."""
    engine = LiteRTEngine(args.model_dir, artifacts=("predict",))
    manifest = engine.manifest
    codes = manifest.codes
    independent = manifest.probabilities == "independent"
    concerns = [parse_concern(text, codes) for text in args.concern]
    if not 0.5 <= args.coverage < 1.0:
        raise ValueError("--coverage must be in [0.5, 1)")
    if not 0.5 <= args.acceptance < 1.0:
        raise ValueError("--acceptance must be in [0.5, 1)")
    data = collect(args, engine)
    labels, raw = data["labels"], data["raw"]
    check_counts(labels, concerns, codes)
    report = split(data["ids"], labels, args.report_fraction, args.seed)
    fit_part = ~report

    temperature = fit.fit_temperature(raw[fit_part], labels[fit_part], independent)
    probs = calibrated(raw, temperature, independent)
    block: dict = {
        "format": FORMAT,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "independent": independent,
        "data": {
            "sha256": data["sha256"],
            "images": int(len(labels)),
            "per_class": {codes[k]: int((labels == k).sum()) for k in np.unique(labels)},
            "left_out": {
                "degenerate": len(data["degenerate"]),
                "declined_by_quality": len(data["declined"]),
                "unreadable": len(data["skipped"]),
            },
            "split": {
                "how": "stratified by class, seeded by image id",
                "seed": args.seed,
                "fit": int(fit_part.sum()),
                "report": int(report.sum()),
            },
        },
        "calibration": {
            "method": "temperature scaling (NLL on the fit part)",
            "temperature": round(temperature, 6),
            "before": fit.calibration_metrics(raw[report], labels[report]),
            "after": fit.calibration_metrics(probs[report], labels[report]),
        },
        "concerns": [],
    }
    for concern in concerns:
        classes = tuple(codes.index(c) for c in concern.codes)
        figures = fit.concern_figures(
            probs[fit_part], labels[fit_part], probs[report], labels[report],
            classes, concern.target, independent,
        )  # fmt: skip
        block["concerns"].append(
            {
                "name": concern.name,
                "classes": list(concern.codes),
                "target_sensitivity": concern.target,
                "threshold": round(figures["threshold"], 6),
                "fit": figures["fit"],
                "measured": figures["measured"],
            }
        )
    if not independent:
        thresholds, how = fit.conformal_thresholds(probs[fit_part], labels[fit_part], args.coverage)
        measured = fit.set_figures(probs[report], labels[report], thresholds)
        measured["per_class"] = {codes[k]: v for k, v in measured["per_class"].items()}
        block["prediction_sets"] = {
            "coverage": args.coverage,
            "score": "LAC (1 - calibrated probability of the class)",
            "thresholds": {codes[k]: round(float(t), 6) for k, t in enumerate(thresholds)},
            "mondrian": [codes[k] for k in how["mondrian_classes"]],
            "mondrian_minimum": how["minimum"],
            "marginal_threshold": round(how["marginal"], 6),
            "measured": measured,
        }
    block["quality"] = data["bounds"].block()
    reference = None
    if args.no_scope:
        pass
    elif data["features"] is None:
        print(
            "the predict artifact returns no features (exported before they were added): "
            "no out-of-scope rule; re-export to get one",
            file=sys.stderr,
        )
    else:
        feats = data["features"]
        block["scope"], reference = fit_scope(feats[fit_part], feats[report], args.acceptance)
    block["version"] = f"{block['created'][:10]}-{data['sha256'][:12]}"
    return {
        "block": block,
        "data": data,
        "probs": probs,
        "raw": raw,
        "report_part": report,
        "reference": reference,
    }


def record(model_dir: str | Path, block: dict) -> None:
    """The block into manifest.json, replaced whole (written beside, then renamed)."""
    path = Path(model_dir) / MANIFEST
    manifest = json.loads(path.read_text())
    slim = json.loads(json.dumps(block))
    for side in ("before", "after"):
        slim["calibration"][side].pop("reliability", None)
    manifest["trust"] = slim
    staged = path.with_suffix(".json.tmp")
    staged.write_text(json.dumps(manifest, indent=2) + "\n")
    staged.replace(path)


def calibrate_on_generated(
    model_dir: str | Path, seed: int = 1313, count: int = 840, scope: bool = False
) -> int:
    """What the demo builds record: calibration on generated lesions of a seed no training
    used (120 of each class at the default count, enough for a threshold of its own each).
    No feature scope rule by default: the demo's small network does not separate its lesions
    from photographs (generated lesions at 128 px reach a k-NN distance of 0.30 from a
    256-px reference whose threshold is 0.028, while scikit-learn's china.jpg is at 0.017),
    so a rule on it would decline lesions and pass scenes. The quality bounds apply."""
    import tempfile

    from model_store.synthetic import write_folder

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "images", seed, count, 256)
        argv = [str(model_dir), "--images", str(folder), "--labels", str(folder / "labels.csv")]
        concerns = ["--concern", "mel:0.90", "--concern", "malignant=mel+bcc+akiec:0.90"]
        rule = [] if scope else ["--no-scope"]
        return main([*argv, *concerns, *rule, "--out", str(Path(tmp) / "report")])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        found = calibrate(args)
    except (ValueError, DermcamError) as exc:
        print(exc, file=sys.stderr)
        return 2
    out = Path(args.out or Path(args.model_dir) / "calibration")
    write_report(out, found)
    if not args.no_record:
        if found["reference"] is not None:
            block = found["block"]
            block["scope"] = write_reference(args.model_dir, block["scope"], found["reference"])
        record(args.model_dir, found["block"])
    block = found["block"]
    after = block["calibration"]["after"]
    print(
        f"temperature {block['calibration']['temperature']:.3f}: ECE "
        f"{block['calibration']['before']['ece']} -> {after['ece']} on "
        f"{block['data']['split']['report']} held-out photographs; report in {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
