"""Where an evaluation or an audit runs: in this process (no --runner), or as an Apache Beam
pipeline (`--runner direct` across this machine's cores, `--runner dataflow` on Google Cloud).

The pipeline lives in model_store.archive and runs in an environment of its own, `.venv-beam`
(`make beam`): Beam pins Pillow below the version the functions use. So it is started as a
process here, never imported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNERS = ("direct", "dataflow")


def beam_python() -> Path:
    return Path(os.environ.get("DERMCAM_BEAM_PYTHON") or ROOT / ".venv-beam" / "bin" / "python")


def add_runner_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Apache Beam (whole archives)")
    group.add_argument("--runner", choices=RUNNERS, help="run as a Beam pipeline")
    group.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="direct runner: processes"
    )
    group.add_argument("--project", help="dataflow: the Google Cloud project")
    group.add_argument("--region", default="europe-west1", help="dataflow: the region")
    group.add_argument(
        "--temp-location", help="dataflow: gs://bucket/tmp for staging and temp files"
    )
    group.add_argument("--job-name", help="dataflow: the job's name (default: from the model)")
    group.add_argument("--max-workers", type=int, default=10, help="dataflow: autoscaling bound")
    group.add_argument("--machine-type", default="n2-standard-2", help="dataflow: worker type")
    group.add_argument("--dataflow-endpoint", help=argparse.SUPPRESS)  # the local rehearsal's
    group.add_argument(
        "--no-wait", action="store_true", help="dataflow: submit and return (report later)"
    )


def delegate(tool: str, argv: list[str]) -> int:
    """Run `tool` (evaluate or audit) with the same arguments in the Beam environment."""
    python = beam_python()
    if not python.exists():
        print(f"--runner needs the Beam environment ({python}): run make beam", file=sys.stderr)
        return 2
    command = [str(python), "-m", "model_store.archive", tool, *argv]
    return subprocess.run(command, check=False).returncode


def run_tool(tool: str, module, argv: list[str] | None) -> int:  # noqa: ANN001 - evaluate or audit
    """A tool's CLI: on Apache Beam when `--runner` is given (in its own environment), else
    here in one process; a bad request or a missing model is a message and exit code 2."""
    from dermcam.errors import DermcamError

    args = module.parse(argv)
    if args.runner:
        return delegate(tool, argv if argv is not None else sys.argv[1:])
    try:
        job = module.job_from(args)
    except (ValueError, DermcamError) as exc:  # what was asked, or no model there
        print(exc, file=sys.stderr)
        return 2
    module.finish(job, module.run_here(job))
    return 0
