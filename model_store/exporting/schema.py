"""The patient-metadata schema given to the exporter, resolved against the model's own
inputs: every input named, every width checked."""

from __future__ import annotations

from dataclasses import replace

from dermcam.metadata import Schema, SchemaError, parse_schema
from model_store.exporting.errors import ExportError
from model_store.exporting.sources import Subject


def resolve_metadata(subject: Subject, metadata: Schema | dict | list | None) -> Schema | None:
    """The schema with every input named and its width checked against the model's."""
    extras = subject.extra_inputs
    described = ", ".join(f"{n} ({w} values)" for n, w in extras.items())
    if metadata is None:
        if extras:
            raise ExportError(
                f"The model takes inputs besides the image: {described}. Say how request "
                "fields become them with --metadata SCHEMA.json (the format is in the README, "
                "'Patient metadata')."
            )
        return None
    try:
        schema = metadata if isinstance(metadata, Schema) else parse_schema(metadata)
    except SchemaError as exc:
        raise ExportError(f"The metadata schema is malformed: {exc}") from exc
    if not extras:
        raise ExportError("--metadata was given, but the model takes only an image.")
    resolved = []
    for item in schema.inputs:
        name = item.input
        if name is None and len(extras) == 1:
            name = next(iter(extras))
        if name not in extras:
            raise ExportError(
                f"The schema's input {name!r} is not one of the model's extra inputs: {described}."
            )
        if item.width != extras[name]:
            widths = ", ".join(f"{f.name} {f.width}" for f in item.fields)
            raise ExportError(
                f"The schema for {name!r} encodes {item.width} values ({widths}); "
                f"the model's input takes {extras[name]}."
            )
        resolved.append(replace(item, input=name))
    missing = sorted(set(extras) - {item.input for item in resolved})
    if missing:
        raise ExportError(f"No schema describes the model's input(s) {', '.join(missing)}.")
    try:
        return parse_schema(Schema(tuple(resolved)).as_json())  # names checked as a file's are
    except SchemaError as exc:
        raise ExportError(str(exc)) from exc
