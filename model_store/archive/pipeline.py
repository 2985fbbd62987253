"""The Beam graph: the images spread over the workers, the LiteRT artifacts run on them by
RunInference, one JSON line per image, and the images that could not be used in a dead-letter
output with their reasons.

    Images → Spread → Explain (RunInference) → WriteRows          (rows/<run>-*.jsonl)
                                  ↘ failed → DeadLetters → WriteDeadLetters

Rows are written bundle by bundle, each bundle's to a file of its own as the bundle finishes:
a worker killed mid-run loses only the bundle it was on. Beam retries that bundle where the
runner does (Dataflow); where it does not (the local runner stops), the launcher runs the
pipeline again for the images with no row yet. A row written twice is the same row.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from model_store.evaluation.folder import Item, listing, read_bytes, skipped

STEPS = ("Images", "Spread", "Explain", "WriteRows", "DeadLetters", "WriteDeadLetters")


def _failure(failed: Any) -> dict:
    """A batch RunInference could not process (the handler keeps images' own faults as rows,
    so this is what was left: a worker error): each image as a dead letter."""
    element, error = failed if isinstance(failed, tuple) else (failed, "unknown error")
    items = element if isinstance(element, list) else [element]
    reason = f"failed: {type(error).__name__}: {str(error)[:200]}"
    return [skipped(item.id, reason) for item in items if isinstance(item, Item)]


def build(
    pipeline: beam.Pipeline, items: list[Item], handler: ModelHandler, rows_prefix: str
) -> None:
    inferred = (
        pipeline
        | "Images" >> beam.Create(items)
        | "Spread" >> beam.Reshuffle()
        | "Explain" >> RunInference(handler).with_exception_handling()
    )
    main, other = inferred
    # Written in the same fused stage as Explain, so rows reach the disk as they are made.
    _ = main | "WriteRows" >> beam.ParDo(WriteBundle(rows_prefix))
    _ = (
        other.failed_inferences
        | "DeadLetters" >> beam.FlatMap(_failure)
        | "WriteDeadLetters" >> beam.ParDo(WriteBundle(rows_prefix))
    )


class WriteBundle(beam.DoFn):
    """Rows as JSON lines, a few at a time in files of their own (local or gs://): a worker
    killed mid-bundle loses at most the rows it had not yet written. Rows that say why an
    image was skipped go to the dead-letter files (`<prefix>-dead-letters-*.jsonl`)."""

    EVERY = 8

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def start_bundle(self) -> None:
        self.rows: dict[str, list[dict]] = {"": [], "-dead-letters": []}

    def process(self, row: dict) -> None:
        kind = "-dead-letters" if "skipped" in row else ""
        self.rows[kind].append(row)
        if len(self.rows[kind]) >= self.EVERY:
            self._flush(kind)

    def finish_bundle(self) -> None:
        for kind in self.rows:
            self._flush(kind)

    def _flush(self, kind: str) -> None:
        rows = self.rows[kind]
        if not rows:
            return
        from apache_beam.io.filesystems import FileSystems

        path = f"{self.prefix}{kind}-{uuid.uuid4().hex[:12]}.jsonl"
        text = "".join(json.dumps(r, default=float, separators=(",", ":")) + "\n" for r in rows)
        with FileSystems.create(path) as fh:
            fh.write(text.encode())
        self.rows[kind] = []


def run(
    items: list[Item],
    handler: ModelHandler,
    rows_prefix: str,
    options: PipelineOptions,
    wait: bool = True,
) -> Any:
    """Run (or, on Dataflow without `wait`, submit) the pipeline; its result."""
    pipeline = beam.Pipeline(options=options)
    build(pipeline, items, handler, rows_prefix)
    result = pipeline.run()
    if wait:
        result.wait_until_finish()
    return result


def rows_in(location: str) -> list[dict]:
    """Every row written under a rows folder (local or gs://), by any run; the last of each."""
    found: dict[str, dict] = {}
    try:
        names = listing(location)
    except (FileNotFoundError, OSError):
        return []
    for name, where in sorted(names.items()):
        if not name.endswith(".jsonl"):
            continue
        for line in read_bytes(where).decode().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed worker
            found[row["id"]] = row
    return list(found.values())


def ids_in(location: str) -> set[str]:
    return {row["id"] for row in rows_in(location)}
