"""python -m model_store.archive evaluate|audit ARGS --runner direct|dataflow [...]

The evaluation or the audit with the tool's own arguments (`python -m model_store.evaluate
--help`, `python -m model_store.audit --help`), as a Beam pipeline. `direct`: the Python
direct runner in multi-process mode, one process per core (`--workers`); rows go to
<out>/rows/ as they are written, and a run that is stopped is run again to finish: the images
already there are not redone. `dataflow`: the job is staged and submitted
(`--project`, `--region`, `--temp-location gs://...`); with `--no-wait` the command returns
once Google has the job, and `python -m model_store.archive report ...` is not needed: rerun
the same command without `--no-wait` after it finished, or wait (the default) and the report
is made here when the job is done.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from dermcam.errors import DermcamError
from model_store.archive import local, pipeline, staging
from model_store.archive.handler import AuditHandler, EvaluateHandler
from model_store.evaluation import evaluate
from model_store.evaluation.audit import cli as audit
from model_store.evaluation.summary import time_per_image

TOOLS = {"evaluate": evaluate, "audit": audit}


def handler_for(tool: str, job, model_location: str):  # noqa: ANN001, ANN201
    if tool == "evaluate":
        args = job.args
        options = {"methods": job.methods, "sanity": args.sanity, "curves": not args.no_curves}
        return EvaluateHandler(model_location, options)
    setup = job.setup
    options = {
        "artefacts": setup.artefacts, "strength": setup.strength,
        "target": setup.target, "seed": setup.seed, "looks": setup.looks,
    }  # fmt: skip
    return AuditHandler(model_location, options)


def local_rows(job, fresh: bool) -> str:  # noqa: ANN001
    """<out>/rows, kept for resuming only if made with the same settings (as run.json says)."""
    rows_dir = job.out / "rows"
    kept = rows_dir / "run.json"
    wanted = json.loads(json.dumps(job.settings(), default=str))
    if rows_dir.exists() and (fresh or not kept.exists() or json.loads(kept.read_text()) != wanted):
        shutil.rmtree(rows_dir)
    rows_dir.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(wanted, indent=2) + "\n")
    return str(rows_dir)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TOOLS:
        print(__doc__, file=sys.stderr)
        return 2
    tool, module = argv[0], TOOLS[argv[0]]
    args = module.parse(argv[1:])
    try:
        job = module.job_from(args)
    except (ValueError, DermcamError) as exc:  # what was asked, or no model there
        print(exc, file=sys.stderr)
        return 2
    runner = args.runner or "direct"
    model_dir = Path(args.model_dir).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if runner == "dataflow":
        if not (args.project and (args.temp_location or "").startswith("gs://")):
            print("--runner dataflow needs --project and --temp-location gs://...", file=sys.stderr)
            return 2
        name = args.job_name or f"dermcam-{tool}-{stamp}".lower()
        rows_dir = f"{args.temp_location.rstrip('/')}/dermcam-runs/{job.out.name}-{stamp}/rows"
        model_location = staging.upload_model(model_dir, args.temp_location)
        options = staging.dataflow_options(args, name)
    else:
        rows_dir = local_rows(job, args.fresh)
        model_location = str(model_dir)
    handler = handler_for(tool, job, model_location)
    started = time.perf_counter()
    if runner == "direct":
        todo = [item for item in job.items if item.id not in pipeline.ids_in(rows_dir)]
        if len(todo) < len(job.items):
            print(f"resuming: {len(job.items) - len(todo)} images already in {rows_dir}")
        left = local.run_until_done(todo, handler, rows_dir, stamp, args.workers)
        if left:
            print(f"{len(left)} images still without rows; run the command again", file=sys.stderr)
            return 1
    else:
        todo = job.items
        result = pipeline.run(todo, handler, f"{rows_dir}/run-{stamp}", options, not args.no_wait)
        if args.no_wait:
            print(f"submitted: job {result.job_id()} ({name}); rows go to {rows_dir}")
            return 0
    seconds = time.perf_counter() - started
    wanted = {item.id for item in job.items}
    rows = [row for row in pipeline.rows_in(rows_dir) if row["id"] in wanted]
    summary = module.finish(job, rows)
    made = [r for r in rows if "skipped" not in r]
    passes = sum(r.get("passes", 1) for r in made)
    cpu = sum(time_per_image(made).values()) if tool == "evaluate" else None
    print(
        f"{runner} runner: {len(todo)} images in {seconds:.1f} s "
        f"({len(todo) / seconds if seconds else 0:.2f} images/s)"
        + (f"; {passes} explained passes" if tool == "audit" else "")
    )
    if cpu:
        cost = staging.cost_per_10000(cpu, args.machine_type)
        print(
            f"on Dataflow, 10,000 such images at {cpu:.2f} s of one core each: "
            f"{cost['vcpu_hours']} vCPU-hours on {cost['machine']}, about ${cost['usd']}"
        )
    return 0 if summary else 1
