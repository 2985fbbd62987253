"""The instance's model: loaded once into global scope, lazily and thread-safely.

A load that fails is not remembered: the next request tries again, so a fixed model
directory recovers without a restart (and a broken one never crash-loops the instance)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dermcam import cam, telemetry, trust
from dermcam.config import Settings
from dermcam.engine import Engine, load_engine
from dermcam.inputs import FUNCTION_OPTIONS, warmup_extras


class ModelCache:
    """`warm_also`: what a warmup (and a ?model=1) readies besides the model, e.g. gradcam's
    storage client, so a page that asks at start finds the instance wholly warm."""

    def __init__(
        self,
        settings: Settings,
        artifacts: Sequence[str],
        warm_also: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.settings = settings
        self.artifacts = tuple(artifacts)
        self.warm_also = tuple(warm_also)
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self.load_ms: float | None = None
        self.loads = 0  # how many times a model was actually loaded (tests check it is 1)

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def loaded_version(self) -> str | None:
        """The model version for logs, without loading anything."""
        engine = self._engine
        return engine.manifest.version if engine is not None else None

    def get(self) -> Engine:
        """The engine, loading it on first use. Raises ModelUnavailable."""
        engine = self._engine
        if engine is not None:
            return engine
        with self._lock:
            if self._engine is None:
                started = time.perf_counter()
                self._engine = load_engine(
                    self.settings.model_dir,
                    self.settings.engine,
                    self.artifacts,
                    self.settings.num_threads,
                )
                self.load_ms = round((time.perf_counter() - started) * 1000, 1)
                self.loads += 1
            return self._engine

    def warmup(self) -> dict[str, Any]:
        """Load the model and run one inference, so the next real request is warm."""
        already_loaded = self.loaded
        engine = self.get()
        for prepare in self.warm_also:
            prepare()
        manifest = engine.manifest
        started = time.perf_counter()
        blank = np.full((1, manifest.height, manifest.width, 3), 128.0, np.float32)
        extras = warmup_extras(manifest)
        if "gradcam" in self.artifacts:
            engine.explain(blank, 0, extras)
        else:
            engine.predict(blank, extras)
        return {
            "status": "warm",
            "model": manifest.summary(),
            "engine": self.settings.engine,
            "already_loaded": already_loaded,
            "model_loads": self.loads,
            "load_ms": self.load_ms,
            "inference_ms": round((time.perf_counter() - started) * 1000, 1),
            "memory": telemetry.headroom(),
        }

    def describe(self) -> dict[str, Any]:
        """GET ?model=1: what a client needs to build its form and read the answers (loads the
        model, so a page asking at start also warms the instance)."""
        manifest = self.get().manifest
        for prepare in self.warm_also:
            prepare()
        return {
            "model": manifest.summary(),
            "input": {"height": manifest.height, "width": manifest.width},
            "labels": [
                {"index": i, "code": x.code, "name": x.name}
                | ({"description": x.description} if x.description else {})
                for i, x in enumerate(manifest.labels)
            ],
            "methods": [{"code": m, "name": cam.NAMES[m]} for m in cam.METHODS],
            "options": list(FUNCTION_OPTIONS),
            "metadata": manifest.metadata.as_json() if manifest.metadata else None,
            "card": manifest.card,
            "trust": trust.figures(manifest.raw.get("trust")),
        }
