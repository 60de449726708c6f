"""The catalog event on Kafka: protobuf ``recsys.v1.CatalogEvent``, keyed by item id, an
upsert (the item's features by their schema names) or a delete.

:func:`decode` checks an event against the data schema and returns its change in the
catalog's canonical form (``recsys.data.dataset``: what a row of the catalog file becomes),
so an upserted item is embedded exactly as the same row in the file would be. Anything it
cannot use raises :class:`recsys.errors.DataError` with the reason: the dead-letter topic's.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from google.protobuf.message import DecodeError

from recsys.data.dataset import SECONDS_PER_YEAR
from recsys.data.schema import DataSchema, Feature
from recsys.errors import DataError
from recsys.v1 import catalog_pb2

Value = str | float | tuple[str, ...]
"""A feature's canonical value: str (categorical, text), float (numeric, year, date as a
fractional year; NaN when missing), tuple of str (tags)."""


@dataclass(frozen=True)
class ItemChange:
    """One decoded catalog event.

    Attributes:
        event_id: Unique per change.
        item_id: The item.
        time_ms: When the change was made.
        features: Every declared item feature's canonical value (missing ones as the catalog
            file's empty cells); ``None`` for a delete.
    """

    event_id: str
    item_id: str
    time_ms: int
    features: Mapping[str, Value] | None

    @property
    def deleted(self) -> bool:
        return self.features is None


def encode_upsert(
    item_id: str,
    features: Mapping[str, Any],  # Any: str, a number, or a list of str (tags)
    time_ms: int,
    event_id: str | None = None,
) -> tuple[bytes, bytes]:
    """``(key, value)`` for Kafka: the item as it now is. ``features`` by schema name: a
    string, a number or a list of strings (a tags feature). Nothing is checked here (the
    producer's :func:`check` and every consumer's :func:`decode` do)."""
    message = _event(item_id, time_ms, event_id)
    message.upsert.SetInParent()
    for name, value in features.items():
        slot = message.upsert.features[name]
        if isinstance(value, str):
            slot.text = value
        elif isinstance(value, bool) or not isinstance(value, int | float | list | tuple):
            raise DataError(
                f"feature {name!r}: {value!r} is not a string, a number or a list of strings"
            )
        elif isinstance(value, int | float):
            slot.number = float(value)
        else:
            slot.tags.values.extend(str(v) for v in value)
    return item_id.encode(), message.SerializeToString()


def encode_delete(item_id: str, time_ms: int, event_id: str | None = None) -> tuple[bytes, bytes]:
    """``(key, value)`` for Kafka: the item is withdrawn."""
    message = _event(item_id, time_ms, event_id)
    message.delete.SetInParent()
    return item_id.encode(), message.SerializeToString()


def _event(item_id: str, time_ms: int, event_id: str | None) -> catalog_pb2.CatalogEvent:
    return catalog_pb2.CatalogEvent(
        event_id=event_id or uuid.uuid4().hex, item_id=item_id, event_time_ms=time_ms
    )


def decode(raw: bytes, schema: DataSchema) -> ItemChange:
    """Parses one event and checks it against ``schema``'s item features.

    Raises:
        DataError: undecodable bytes, no item id, event id or time, neither an upsert nor a
            delete, an undeclared feature, or a value of the wrong type for its feature's
            kind; the message says which.
    """
    message = catalog_pb2.CatalogEvent()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise DataError(f"undecodable catalog event ({len(raw)} bytes): {exc}") from exc
    for name in ("item_id", "event_id"):
        if not getattr(message, name):
            raise DataError(f"catalog event has no {name}")
    about = f"catalog event {message.event_id} (item {message.item_id!r})"
    if message.event_time_ms <= 0:
        raise DataError(f"{about} has no event_time_ms")
    change = message.WhichOneof("change")
    if change is None:
        raise DataError(f"{about} is neither an upsert nor a delete")
    if change == "delete":
        return ItemChange(message.event_id, message.item_id, message.event_time_ms, None)
    declared = schema.item_features
    unknown = sorted(set(message.upsert.features) - set(declared))
    if unknown:
        raise DataError(
            f"{about}: unknown feature {', '.join(map(repr, unknown))} "
            f"(the schema declares {', '.join(declared) or 'none'})"
        )
    features = {
        name: (
            _canonical(name, spec, message.upsert.features[name], about)
            if name in message.upsert.features
            else _missing(spec)
        )
        for name, spec in declared.items()
    }
    return ItemChange(message.event_id, message.item_id, message.event_time_ms, features)


def check(item_id: str, features: Mapping[str, Any], schema: DataSchema) -> ItemChange:
    """What :func:`decode` makes of an upsert before it is sent: the producer's check, so a
    bad change is refused at the command line rather than dead-lettered. Any: as
    :func:`encode_upsert`'s."""
    _, raw = encode_upsert(item_id, features, 1, "check")
    return decode(raw, schema)


_WANTED = {
    "categorical": ("text",),
    "text": ("text",),
    "tags": ("tags",),
    "numeric": ("number",),
    "year": ("number",),
    "date": ("text", "number"),
}
_SAYS = {"text": "a string", "number": "a number", "tags": "a list of strings"}


def _canonical(name: str, spec: Feature, value: catalog_pb2.FeatureValue, about: str) -> Value:
    given = value.WhichOneof("value")
    wanted = _WANTED[spec.kind]
    if given not in wanted:
        says = " or ".join(_SAYS[w] for w in wanted)
        got = "nothing" if given is None else _SAYS[given]
        raise DataError(f"{about}: feature {name!r} (kind {spec.kind}) needs {says}, got {got}")
    if given == "tags":
        return tuple(dict.fromkeys(t.strip() for t in value.tags.values if t.strip()))
    if given == "text" and spec.kind != "date":
        return value.text
    if given == "number":
        if not math.isfinite(value.number):
            raise DataError(f"{about}: feature {name!r} is {value.number}, not a finite number")
        if spec.kind != "date":
            return float(value.number)
        seconds = value.number
    else:  # a date as ISO-8601
        parsed = pd.to_datetime(value.text, utc=True, errors="coerce", format="ISO8601")
        if pd.isna(parsed):
            raise DataError(f"{about}: feature {name!r}: {value.text!r} is not an ISO-8601 date")
        seconds = (parsed - pd.Timestamp(0, tz="UTC")).total_seconds()
    return 1970.0 + float(seconds) / SECONDS_PER_YEAR


def _missing(spec: Feature) -> Value:
    if spec.kind in ("categorical", "text"):
        return ""
    if spec.kind == "tags":
        return ()
    return math.nan


def catalog_row(change: ItemChange) -> dict[str, Any]:  # Any: canonical values
    """An upsert as a row of the catalog frame (``item_id`` and each feature's column): what
    ``towers.encoding.FeatureSpace.encode_items`` reads."""
    if change.features is None:
        raise ValueError(f"item {change.item_id} was deleted: it has no row")
    return {"item_id": change.item_id, **change.features}


def catalog_frame(changes: Sequence[ItemChange]) -> pd.DataFrame:
    """Upserts as catalog rows, in order."""
    return pd.DataFrame([catalog_row(c) for c in changes])
