"""Synthetic item changes for load and benchmarks: new items with the features of the data
set's items (a donor each), and deletes, some of items added earlier in the stream and some
of the catalog's own items (what a benchmark of "deleted → never served again" needs)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from catalog.events import encode_delete, encode_upsert
from recsys.data.dataset import SECONDS_PER_YEAR
from recsys.data.schema import DataSchema


def event_features(row: Mapping[str, Any], schema: DataSchema) -> dict[str, Any]:
    """A catalog row's canonical features as an upsert carries them (a missing value left
    out; a date as Unix seconds): what ``catalog.events.decode`` turns back into the row."""
    out: dict[str, Any] = {}
    for name, spec in schema.item_features.items():
        value = row[name]
        if spec.kind == "tags":
            if len(value):
                out[name] = list(value)
        elif spec.kind in ("categorical", "text"):
            if value:
                out[name] = str(value)
        elif not (isinstance(value, float) and math.isnan(value)):
            number = float(value)
            out[name] = (number - 1970.0) * SECONDS_PER_YEAR if spec.kind == "date" else number
    return out


def synthetic_changes(
    items: pd.DataFrame,
    schema: DataSchema,
    events: int,
    *,
    delete_share: float = 0.2,
    seed: int = 0,
    start_ms: int = 0,
) -> list[tuple[str, bytes, bytes]]:
    """``events`` changes, in order: ``(kind, key, value)``, kind ``upsert`` (a new item
    ``syn-<seed>-<i>`` with a random catalog item's features) or ``delete`` (every other one
    of an item this stream added, the rest of one of ``items``). Event times count up by 1 ms
    from ``start_ms``."""
    rng = np.random.default_rng(seed)
    rows = items.to_dict("records")
    added: list[str] = []
    out: list[tuple[str, bytes, bytes]] = []
    for i in range(events):
        at = start_ms + i
        if rng.random() < delete_share and (added or rows):
            if added and (i % 2 == 0 or not rows):
                item = added.pop(int(rng.integers(len(added))))
            else:
                item = str(rows[int(rng.integers(len(rows)))]["item_id"])
            out.append(("delete", *encode_delete(item, at, f"syn-{seed}-{i}")))
            continue
        item = f"syn-{seed}-{i}"
        donor = rows[int(rng.integers(len(rows)))]
        added.append(item)
        out.append(("upsert", *encode_upsert(item, event_features(donor, schema), at, item)))
    return out
