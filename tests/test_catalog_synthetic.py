"""Synthetic item changes: every one decodes, an upsert carries its donor's row exactly, and
deletes hit both the stream's own items and the catalog's (fast tier)."""

from __future__ import annotations

import math
from pathlib import Path

from catalog.events import decode, encode_upsert
from catalog.synthetic import event_features, synthetic_changes
from recsys.data.schema import load_schema
from tests.test_schema import read, write


def test_every_synthetic_change_decodes_to_its_donors_row(tmp_path: Path) -> None:
    schema = load_schema(write(tmp_path), tmp_path)
    items = read(tmp_path).items
    for row in items.to_dict("records"):  # every kind, missing values included
        _, raw = encode_upsert("x", event_features(row, schema), 1)
        got = decode(raw, schema).features
        assert got is not None
        for name, value in got.items():
            want = row[name]
            if isinstance(want, float) and math.isnan(want):
                assert math.isnan(value)
            elif isinstance(want, float):
                assert abs(value - want) < 1e-9  # type: ignore[operator]
            else:
                assert value == want
    changes = synthetic_changes(items, schema, 300, delete_share=0.3, seed=1, start_ms=10)
    kinds = [k for k, _, _ in changes]
    decoded = [decode(v, schema) for _, _, v in changes]
    assert len(decoded) == 300 and 60 < kinds.count("delete") < 120
    assert [c.time_ms for c in decoded] == list(range(10, 310))
    deleted = {c.item_id for c in decoded if c.deleted}
    assert any(i.startswith("syn-1-") for i in deleted) and deleted & set(items["item_id"])
    assert all(k.decode() == c.item_id for (_, k, _), c in zip(changes, decoded, strict=True))
