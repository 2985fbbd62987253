"""The exporter's refusal: the model cannot be exported as asked; the message says why and
what to do."""

from __future__ import annotations

from model_store.exporting import parity as parity_check


class ExportError(RuntimeError):
    """The model cannot be exported as asked; the message says why and what to do."""

    def __init__(self, message: str, parity: parity_check.Parity | None = None) -> None:
        super().__init__(message)
        self.parity = parity  # the figures, when the parity gate refused the export
