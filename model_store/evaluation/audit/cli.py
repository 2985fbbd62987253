"""Does the model look at the lesion, or at ink, rulers and dark corners? LiteRT only.

    python -m model_store.audit MODEL_DIR --images DIR [--labels CSV] [--masks DIR]
        [--map melanoma=mel,nevus=nv] [--fields age=age_approx,sex]
        [--artefacts ink,ruler,dark-corners,hair,colour-patch,bubbles] [--strength 1]
        [--looks family|classic]
        [--class CODE] [--positive mel,bcc,akiec] [--seed 0] [--out DIR] [--fresh]
        [--record] [--limit N]

Each image is predicted and explained as it is, then with each artefact drawn off the lesion
(the lesion from --masks, else estimated), and with two controls: re-encoded only (the noise
floor) and the lesion removed. The report says per artefact how far the answers move, how
often they flip towards or away from the malignant classes, what the labelled figures do
(bootstrap 95 % intervals), how much of the map lands on the artefact, and a verdict from
documented thresholds (model_store/evaluation/audit/figures.py; docs/AUDIT.md). Rows go to
results.jsonl as they are made: a stopped run resumes. --record keeps the summary in the
manifest as `audit`, which GET ?model=1 then shows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dermcam.engine import LiteRTEngine
from dermcam.manifest import MANIFEST, Manifest, sha256_file
from model_store.evaluation.audit import artefacts, figures, lesion, probe
from model_store.evaluation.audit import report as audit_report
from model_store.evaluation.evaluate import SKIPPABLE
from model_store.evaluation.folder import Item, collect, field_mapping, skip_reason, skipped
from model_store.evaluation.per_image import read
from model_store.evaluation.runlog import RunLog
from model_store.evaluation.runners import add_runner_options, run_tool

MALIGNANT = ("mel", "bcc", "akiec", "scc", "malignant")


def default_positive(manifest: Manifest) -> list[str]:
    """The model card's malignant classes; a two-class model's class 1; else the usual codes."""
    card = manifest.card or {}
    if card.get("malignant"):
        return list(card["malignant"])
    if len(manifest.codes) == 2:
        return [manifest.codes[1]]
    return [c for c in manifest.codes if c.lower() in MALIGNANT]


def audit_or_skip(item: Item, setup: probe.AuditSetup) -> dict:
    """The image's audit row, or the row saying why it could not be audited."""
    if item.skip:
        return skipped(item.id, item.skip)
    try:
        return probe.audit_one(item, setup)
    except SKIPPABLE as exc:
        return skipped(item.id, skip_reason(exc))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m model_store.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir")
    parser.add_argument("--images", required=True)
    parser.add_argument("--labels", help="CSV with an image-id column and a class column")
    parser.add_argument("--masks", help="folder of <id>_segmentation.png (default: --images)")
    parser.add_argument("--map", help="CSV class names to label codes: melanoma=mel,nevus=nv")
    parser.add_argument("--fields", help="patient fields from CSV columns: age=age_approx,sex")
    parser.add_argument("--artefacts", default=",".join(artefacts.ARTEFACTS))
    parser.add_argument("--strength", type=float, default=1.0, help="0–1: size and opacity")
    parser.add_argument(
        "--looks",
        choices=("family", "classic"),
        default="family",
        help="family: each image's look sampled from the artefact's family (default); classic: "
        "each artefact's one drawing of before the families, to compare with an older audit",
    )
    parser.add_argument("--class", dest="klass", help="explain this class (default: the top)")
    parser.add_argument("--positive", help="the malignant classes (default: the model's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="report folder (default: audit-<model>-<version>)")
    parser.add_argument("--fresh", action="store_true", help="do not resume an earlier run")
    parser.add_argument("--record", action="store_true", help="summary into the manifest")
    parser.add_argument("--limit", type=int)
    add_runner_options(parser)
    return parser.parse_args(argv)


@dataclass
class AuditJob:
    """An audit as asked: the model, the artefacts, the classes and the images; run in this
    process, or on Beam (model_store.archive)."""

    args: argparse.Namespace
    setup: probe.AuditSetup
    positive: list[int]
    fields: dict[str, str]
    items: list[Item]
    out: Path

    def settings(self) -> dict:
        manifest = self.setup.engine.manifest
        return {
            "model": manifest.summary(),
            "artifacts": {"gradcam": sha256_file(manifest.artifact_path("gradcam"))},
            "artefacts": self.setup.names,
            "strength": self.args.strength,
            "looks": self.args.looks,
            "class": self.args.klass,
            "seed": self.args.seed,
            "fields": self.fields,
        }


def job_from(args: argparse.Namespace) -> AuditJob:
    """The job, or ValueError saying what is wrong with what was asked."""
    engine = LiteRTEngine(args.model_dir)
    manifest = engine.manifest
    codes = manifest.codes
    names = [n.strip() for n in args.artefacts.split(",") if n.strip()]
    unknown = [n for n in names if n not in artefacts.ARTEFACTS and n not in artefacts.CONTROLS]
    positive_codes = args.positive.split(",") if args.positive else default_positive(manifest)
    asked = [*positive_codes, *([args.klass] if args.klass else [])]
    missing = [c for c in asked if c not in codes]
    if unknown or missing:
        raise ValueError(f"unknown artefacts {unknown} or classes {missing}; the model has {codes}")
    fields = field_mapping(args.fields)
    items = collect(args.images, args.labels, args.masks, codes, args.map, fields, args.limit)
    target = codes.index(args.klass) if args.klass else None
    setup = probe.AuditSetup(engine, names, args.strength, target, args.seed, args.looks)
    out = Path(args.out or f"audit-{manifest.name}-{manifest.version}")
    positive = [codes.index(c) for c in positive_codes]
    return AuditJob(args, setup, positive, fields, items, out)


def run_here(job: AuditJob) -> list[dict]:
    """Every image in this process, each row on disk as it is made (resumed when asked)."""
    log = RunLog(job.out, job.settings(), resume=not job.args.fresh)
    done = log.done()
    todo = [item for item in job.items if item.id not in done]
    if log.resumed:
        print(f"resuming: {log.resumed} images already in {log.path}, {len(todo)} to go")
    started = time.monotonic()
    for i, item in enumerate(todo, start=1):
        log.append(audit_or_skip(item, job.setup))
        elapsed = time.monotonic() - started
        print(
            f"[{len(done) + i}/{len(job.items)}] {item.id} ({elapsed:.0f} s, "
            f"about {elapsed / i * (len(todo) - i):.0f} s left)",
            flush=True,
        )
    wanted = {item.id for item in job.items}
    return [r for r in log.rows if r["id"] in wanted]


def finish(job: AuditJob, rows: list[dict]) -> dict:
    """The summary and the report of the rows (however they were made); --record."""
    args, setup = job.args, job.setup
    manifest = setup.engine.manifest
    summary = figures.summarise(rows, setup.names, job.positive, manifest.codes, args.seed)
    summary |= {
        "model": manifest.summary(),
        "lesion_method": lesion.METHOD,
        "explained": f"class {args.klass}" if args.klass else "the top class of the original",
        "strength": args.strength,
        "looks": args.looks,
    }
    by_id = {item.id: item for item in job.items}

    def pictures(image_id: str, name: str):  # noqa: ANN202
        pixels = probe.picture_of(read(by_id[image_id].image))
        mask, _ = probe.lesion_mask(by_id[image_id], pixels)
        return pixels, probe.altered(image_id, name, pixels, mask, setup)[0]

    audited = [row for row in rows if "skipped" not in row]
    job.out.mkdir(parents=True, exist_ok=True)
    audit_report.write(job.out, summary, audited, setup.names, job.positive, pictures)
    print(audit_report.markdown(summary))
    print(f"wrote {job.out}/report.md, report.json, the plots and the contact sheets")
    if args.record:
        raw = json.loads((manifest.directory / MANIFEST).read_text())
        raw["audit"] = {
            "date": time.strftime("%Y-%m-%d"),
            "images": summary["images"],
            "images_folder": args.images.rstrip("/").rsplit("/", 1)[-1],
            "verdicts": summary["verdicts"],
        }
        (manifest.directory / MANIFEST).write_text(json.dumps(raw, indent=2) + "\n")
        print(f"recorded in {manifest.directory / MANIFEST}")
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_tool("audit", sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
