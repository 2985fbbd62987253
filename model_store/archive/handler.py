"""RunInference ModelHandlers for the LiteRT artifacts: the model is loaded once per worker
process (from a local folder, or copied from gs:// first), and each batch of images becomes
the same rows the single-process tools write. An image that cannot be used becomes a row that
says why (a dead letter), never a failed bundle."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

from model_store.evaluation.folder import Item, listing, read_bytes

BATCH = {"min_batch_size": 1, "max_batch_size": 8}
_FETCHED: dict[str, Path] = {}  # model location → local copy, once per process


def local_model(location: str) -> Path:
    """The model directory on this worker (copied from gs:// the first time)."""
    if not location.startswith("gs://"):
        return Path(location)
    if location not in _FETCHED:
        folder = Path(tempfile.mkdtemp(prefix="dermcam-model-"))
        for name, where in listing(location).items():
            (folder / name).write_bytes(read_bytes(where))
        _FETCHED[location] = folder
    return _FETCHED[location]


class _Handler(ModelHandler[Item, dict, Any]):
    def __init__(self, model_location: str, options: dict[str, Any]) -> None:
        super().__init__()
        self.model_location = model_location
        self.options = options

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return BATCH

    def get_metrics_namespace(self) -> str:
        return "dermcam"

    def get_num_bytes(self, batch: Sequence[Item]) -> int:
        return len(batch)  # the images' sizes are not known before they are read


class EvaluateHandler(_Handler):
    """`model_store.evaluate`'s rows: classification, localisation, faithfulness, sanity."""

    def load_model(self) -> Any:
        from dermcam.engine import LiteRTEngine
        from model_store.evaluation.per_image import Setup, artifacts_for

        folder = local_model(self.model_location)
        randomised = None
        if self.options["sanity"]:
            from model_store.evaluation.sanity import randomised_copy

            copy = randomised_copy(folder, Path(tempfile.mkdtemp(prefix="randomised-")))
            randomised = LiteRTEngine(str(copy), artifacts_for(self.options["methods"]))
        methods = self.options["methods"]
        engine = LiteRTEngine(str(folder), artifacts_for(methods))
        return Setup(engine, methods, randomised, self.options["curves"])

    def run_inference(
        self, batch: Sequence[Item], model: Any, inference_args: dict | None = None
    ) -> Iterable[dict]:
        from model_store.evaluation.evaluate import evaluate_batch

        return evaluate_batch(list(batch), model)


class AuditHandler(_Handler):
    """`model_store.audit`'s rows: each image through every artefact."""

    def load_model(self) -> Any:
        from dermcam.engine import LiteRTEngine
        from model_store.evaluation.audit.probe import AuditSetup

        engine = LiteRTEngine(str(local_model(self.model_location)))
        o = self.options
        return AuditSetup(
            engine, o["artefacts"], o["strength"], o["target"], o["seed"], o.get("looks", "family")
        )

    def run_inference(
        self, batch: Sequence[Item], model: Any, inference_args: dict | None = None
    ) -> Iterable[dict]:
        from model_store.evaluation.audit.cli import audit_or_skip

        return [audit_or_skip(item, model) for item in batch]
