"""Schema validation specialised per event type: the same verdicts as :func:`aibridge.events.validate_event`, faster.

The v1 schema dispatches on ``type`` with ``allOf: [{if: {properties: {type: {const: T}}}, then: S_T}, …]``.
fastjsonschema evaluates every ``if`` (a failing ``if`` costs a raised exception), so the full
validator spends most of its time rejecting the four branches that do not apply. For an event whose
``type`` is ``T``, exactly the branches with ``const: T`` apply; this module compiles one validator
per type with the other branches removed. Any ``allOf`` entry of another form is kept unchanged, so
the verdict stays the schema's. Events without a known string ``type`` go to the full validator,
which also words their error.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import fastjsonschema
import orjson

from aibridge.events import SCHEMA_PATH, Event, InvalidEvent, validate_event

Validator = Any


def _branch_type(entry: Any) -> str | None:
    """``T`` when ``entry`` is exactly ``{if: {properties: {type: {const: T}}}, then: …}``, else None."""
    if not isinstance(entry, dict) or set(entry) != {"if", "then"}:
        return None
    condition = entry["if"]
    if not isinstance(condition, dict) or set(condition) != {"properties"}:
        return None
    properties = condition["properties"]
    if not isinstance(properties, dict) or set(properties) != {"type"}:
        return None
    rule = properties["type"]
    if isinstance(rule, dict) and set(rule) == {"const"} and isinstance(rule["const"], str):
        return rule["const"]
    return None


def specialise(schema: dict[str, Any], event_type: str) -> dict[str, Any]:
    """The schema as it applies to events whose ``type`` is ``event_type``."""
    result = copy.deepcopy(schema)
    kept = []
    for entry in schema.get("allOf", []):
        branch = _branch_type(entry)
        if branch is None:
            kept.append(entry)
        elif branch == event_type:
            kept.append(entry["then"])
    result["allOf"] = kept
    return result


@cache
def _validators() -> dict[str, Validator]:
    schema = orjson.loads(SCHEMA_PATH.read_bytes())
    types = [_branch_type(entry) for entry in schema.get("allOf", [])]
    return {kind: fastjsonschema.compile(specialise(schema, kind)) for kind in types if kind is not None}


def validate(event: Any) -> Event:
    """Return the event if it satisfies the schema, else raise :class:`InvalidEvent`."""
    kind = event.get("type") if isinstance(event, dict) else None
    validator = _validators().get(kind) if isinstance(kind, str) else None
    if validator is None:
        return validate_event(event)
    try:
        validator(event)
    except fastjsonschema.JsonSchemaException as exc:
        raise InvalidEvent(f"schema violation: {exc}") from exc
    result: Event = event
    return result
