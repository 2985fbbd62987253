"""Patient metadata beside the image: request fields → the vector a model's extra input takes.

A schema (the exporter's `--metadata` file, kept in the manifest) names the model's non-image
input and its fields, in order:

    {"input": "meta_input",
     "fields": [
       {"name": "sex", "type": "categorical", "categories": ["female", "male", "unknown"],
        "default": "unknown"},
       {"name": "age", "type": "numeric", "scale": 0.0111111, "offset": 0.0,
        "min": 0, "max": 120, "missing": {"fill": 51.9, "indicator": true}}]}

A categorical field adds the one-hot of its categories (a missing value takes `default`);
a numeric field adds value × scale + offset (a missing value is first replaced by `fill`),
then, when `indicator` is true, 1.0 if the value was missing else 0.0. A model may take
several such inputs: the schema is then a list, one object per input.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dermcam.errors import InvalidMetadata

FIELD_TYPES = ("categorical", "numeric")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = ("image", "target")  # the artifacts' own input names


class SchemaError(ValueError):
    """The schema itself is malformed (an exporter-side error, not a request's)."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    categories: tuple[str, ...] = ()
    default: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    minimum: float | None = None
    maximum: float | None = None
    fill: float | None = None
    indicator: bool = False

    @property
    def width(self) -> int:
        if self.type == "categorical":
            return len(self.categories)
        return 2 if self.indicator else 1

    @property
    def required(self) -> bool:
        return (self.default if self.type == "categorical" else self.fill) is None

    def encode(self, raw: Any) -> tuple[list[float], Any, bool]:
        """(encoded values, the value used, whether it was defaulted). Raises InvalidMetadata."""
        missing = raw is None or (isinstance(raw, str) and raw.strip() == "")
        if missing and self.required:
            raise InvalidMetadata(f"'{self.name}' is required: {self._accepts()}.")
        if self.type == "categorical":
            value = self.default if missing else str(raw).strip()
            if value not in self.categories:
                raise InvalidMetadata(f"'{self.name}' must be {self._accepts()} (got {value!r}).")
            return [1.0 if c == value else 0.0 for c in self.categories], value, missing
        value = self.fill if missing else _number(self, raw)
        if not missing and (
            (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
        ):
            raise InvalidMetadata(f"'{self.name}' must be {self._accepts()} (got {value:g}).")
        encoded = [value * self.scale + self.offset]
        if self.indicator:
            encoded.append(1.0 if missing else 0.0)
        return encoded, value, missing

    def _accepts(self) -> str:
        if self.type == "categorical":
            return "one of: " + ", ".join(self.categories)
        return f"a number between {_fmt(self.minimum)} and {_fmt(self.maximum)}"


def _fmt(value: float | None) -> str:
    if value is None:
        return "any"
    return f"{value:g}"


def _number(field: Field, raw: Any) -> float:
    if isinstance(raw, bool):
        raise InvalidMetadata(f"'{field.name}' must be a number.")
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidMetadata(f"'{field.name}' must be a number (got {str(raw)[:40]!r}).") from exc
    if not math.isfinite(value):
        raise InvalidMetadata(f"'{field.name}' must be a finite number.")
    return value


@dataclass(frozen=True)
class InputSchema:
    """One non-image model input and the fields that make it."""

    input: str | None
    fields: tuple[Field, ...]

    @property
    def width(self) -> int:
        return sum(f.width for f in self.fields)


@dataclass(frozen=True)
class Encoded:
    """A request's metadata: the model's extra inputs, and what was used (for the answer)."""

    inputs: dict[str, np.ndarray]  # input name → float32 [1, width]
    used: dict[str, dict[str, Any]]  # field → {"value": as given, "used", "defaulted"}

    @property
    def digest(self) -> str:
        """12 hex digits naming the encoded values: the same photo with other metadata is
        another heatmap."""
        digest = hashlib.sha256()
        for name in sorted(self.inputs):
            digest.update(name.encode() + b"\0" + self.inputs[name].astype("<f4").tobytes())
        return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Schema:
    inputs: tuple[InputSchema, ...]

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(f for schema in self.inputs for f in schema.fields)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def encode(self, values: Mapping[str, Any]) -> Encoded:
        """Encode request fields (missing ones as the schema says). InvalidMetadata names
        the field and what it accepts; unknown names are refused, not ignored."""
        unknown = sorted(set(values) - set(self.field_names))
        if unknown:
            raise InvalidMetadata(
                f"Unknown field {', '.join(repr(u) for u in unknown)}; this model takes: "
                f"{', '.join(self.field_names)}."
            )
        inputs, used = {}, {}
        for schema in self.inputs:
            vector: list[float] = []
            for f in schema.fields:
                raw = values.get(f.name)
                encoded, value, defaulted = f.encode(raw)
                vector.extend(encoded)
                given = None if defaulted else (value if f.type == "numeric" else str(raw))
                used[f.name] = {"value": given, "used": value, "defaulted": defaulted}
            inputs[schema.input or ""] = np.asarray([vector], dtype=np.float32)
        return Encoded(inputs, used)

    def example_values(self) -> dict[str, Any]:
        """A valid value for every required field (the others take their defaults)."""
        values: dict[str, Any] = {}
        for f in self.fields:
            if not f.required:
                continue
            if f.type == "categorical":
                values[f.name] = f.categories[0]
            else:
                bounds = [b for b in (f.minimum, f.maximum) if b is not None]
                values[f.name] = sum(bounds) / len(bounds) if bounds else 0.0
        return values

    def example(self) -> Encoded:
        """Valid values for every field (defaults where there are), for warmups."""
        return self.encode(self.example_values())

    def as_json(self) -> Any:
        """The schema as the manifest keeps it (one object, or a list for several inputs)."""
        items = [_input_json(s) for s in self.inputs]
        return items[0] if len(items) == 1 else items


def _input_json(schema: InputSchema) -> dict[str, Any]:
    fields = []
    for f in schema.fields:
        if f.type == "categorical":
            fields.append(
                {
                    "name": f.name,
                    "type": f.type,
                    "categories": list(f.categories),
                    "default": f.default,
                }
            )
            continue
        entry: dict[str, Any] = {
            "name": f.name,
            "type": f.type,
            "scale": f.scale,
            "offset": f.offset,
            "min": f.minimum,
            "max": f.maximum,
        }
        entry["missing"] = {"fill": f.fill, "indicator": f.indicator}
        fields.append(entry)
    return {"input": schema.input, "fields": fields}


def parse_schema(raw: Any) -> Schema:
    """A schema object (or a list of them, one per extra input). Raises SchemaError."""
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(item, dict) for item in items):
        raise SchemaError("A metadata schema is an object with 'fields' (or a list of them).")
    inputs = tuple(_parse_input(item) for item in items)
    names = [f.name for schema in inputs for f in schema.fields]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SchemaError(f"Field names must be unique: {', '.join(duplicated)}")
    if len(inputs) > 1 and any(s.input is None for s in inputs):
        raise SchemaError("With several schemas, each must name its 'input'.")
    return Schema(inputs)


def _parse_input(item: dict[str, Any]) -> InputSchema:
    name = item.get("input")
    if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
        raise SchemaError(f"'input' must be a model input's name (letters, digits, _): {name!r}")
    if name in RESERVED:
        raise SchemaError(f"'input' may not be {name!r}: the artifacts use that name.")
    fields = item.get("fields")
    if not isinstance(fields, list) or not fields:
        raise SchemaError("A metadata schema needs a non-empty list 'fields'.")
    return InputSchema(name, tuple(_parse_field(f) for f in fields))


def _parse_field(item: Any) -> Field:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise SchemaError(f"Each field needs a 'name': {item!r}")
    name, kind = item["name"], item.get("type")
    if not _NAME.match(name) or name in ("class", "method", "composite", "image"):
        raise SchemaError(f"Field name {name!r} must be letters, digits or _, and not reserved.")
    if kind == "categorical":
        categories = item.get("categories")
        if not isinstance(categories, list) or not categories:
            raise SchemaError(f"Field {name!r}: 'categories' must be a non-empty list.")
        categories = tuple(str(c) for c in categories)
        default = item.get("default")
        if default is not None and str(default) not in categories:
            raise SchemaError(f"Field {name!r}: default {default!r} is not one of its categories.")
        return Field(name, kind, categories, None if default is None else str(default))
    if kind == "numeric":
        missing = item.get("missing") or {}
        try:
            numbers = {k: item.get(k) for k in ("scale", "offset", "min", "max")}
            field = Field(
                name,
                kind,
                scale=float(1.0 if numbers["scale"] is None else numbers["scale"]),
                offset=float(numbers["offset"] or 0.0),
                minimum=None if numbers["min"] is None else float(numbers["min"]),
                maximum=None if numbers["max"] is None else float(numbers["max"]),
                fill=None if missing.get("fill") is None else float(missing["fill"]),
                indicator=bool(missing.get("indicator", False)),
            )
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"Field {name!r}: numbers expected ({exc}).") from exc
        return field
    raise SchemaError(f"Field {name!r}: 'type' must be one of {', '.join(FIELD_TYPES)}.")
