"""The local runner, watched. Beam's direct runner in multi-process mode hangs for good when
one of its worker processes dies (the OOM killer, a crash in native code): the bundle that
worker held never completes. So each run of the pipeline is a child process in a session of
its own, watched from here: when a worker dies, the run is stopped (its whole session), the
rows already written stay, and the pipeline runs again for the images with no row yet.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from apache_beam.ml.inference.base import ModelHandler
from apache_beam.options.pipeline_options import PipelineOptions

from model_store.archive import pipeline
from model_store.evaluation.folder import Item

ATTEMPTS = 3  # runs of the pipeline, each for the images with no row yet
GRACE_S = 10.0  # after a worker is gone: time for a run that is finishing to exit by itself
WORKER = b"sdk_worker_main"


def _attempt(items: list[Item], handler: ModelHandler, prefix: str, workers: int) -> None:
    os.setsid()  # its workers join this session, so a stop takes them all
    options = PipelineOptions(
        flags=[],  # or Beam would read the launcher's own arguments
        runner="DirectRunner",
        direct_running_mode="multi_processing",
        direct_num_workers=workers,
    )
    pipeline.run(items, handler, prefix, options)


def workers_in(session: int) -> int:
    """Beam SDK worker processes in a session."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session and WORKER in (entry / "cmdline").read_bytes():
                count += 1
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue  # gone meanwhile
    return count


def watch(run: multiprocessing.Process) -> str | None:
    """Wait for a run; None if it finished, otherwise why it was stopped."""
    most, lost_at = 0, None
    while run.is_alive():
        run.join(1.0)
        alive = workers_in(run.pid)
        most = max(most, alive)
        if alive < most and lost_at is None:
            lost_at = time.monotonic()  # a worker died, or the run is ending: wait and see
        if lost_at is not None and time.monotonic() - lost_at > GRACE_S and run.is_alive():
            os.killpg(run.pid, signal.SIGKILL)
            run.join()
            return f"{most - alive} of its {most} worker processes died"
    return f"exit code {run.exitcode}" if run.exitcode else None


def run_until_done(
    items: list[Item], handler: ModelHandler, rows_dir: str, stamp: str, workers: int
) -> list[Item]:
    """Run the pipeline until every image has a row (at most ATTEMPTS times); the images
    still without one."""
    todo = _without_rows(items, rows_dir)
    for attempt in range(1, ATTEMPTS + 1):
        if not todo:
            break
        prefix = f"{rows_dir}/run-{stamp}-{attempt}"
        run = multiprocessing.get_context("spawn").Process(
            target=_attempt, args=(todo, handler, prefix, workers), name=f"beam-run-{attempt}"
        )
        run.start()
        why = watch(run)
        todo = _without_rows(items, rows_dir)
        if todo:
            print(
                f"the pipeline stopped ({why or 'images left without rows'}); "
                f"{len(todo)} images left" + (", running them again" if attempt < ATTEMPTS else ""),
                flush=True,
            )
    return todo


def _without_rows(items: list[Item], rows_dir: str) -> list[Item]:
    written = pipeline.ids_in(rows_dir)
    return [item for item in items if item.id not in written]
