"""Raw features → integer ids, by the kinds the data schema declares; shared by training, the
index build and serving.

Pure NumPy: the serving process uses it without importing TensorFlow. Id 0 of every feature
is the unknown / missing bucket (and the padding of multi-valued ones), so a value never seen
in training maps to a defined embedding instead of failing. One ``FeatureEncoder`` per
declared feature maps its kind to its ids: the one place a kind is interpreted.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.user import UserFeatures
from recsys.data.schema import BUCKETED, MULTI, Feature
from recsys.errors import ArtifactError

Inputs = dict[str, np.ndarray]
"""Encoded tower inputs by name (``user``, ``user_<feature>``, ``hour``, ``weekday``,
``history``; ``item``, ``item_<feature>``), ``int32``, one row per user or item."""


@dataclass(frozen=True)
class Vocab:
    """String → index, with 0 reserved for unknown values."""

    values: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {v: i + 1 for i, v in enumerate(self.values)})

    @classmethod
    def fit(cls, values: Iterable[str]) -> Vocab:
        return cls(tuple(sorted(set(values))))

    @property
    def size(self) -> int:
        """Rows an embedding table needs, the unknown bucket included."""
        return len(self.values) + 1

    @property
    def index(self) -> Mapping[str, int]:
        """Value → index, without the unknown bucket (``index.get(v, 0)`` is ``lookup``)."""
        return self._index

    def lookup(self, value: str) -> int:
        return self._index.get(value, 0)

    def lookup_many(self, values: Sequence[str]) -> np.ndarray:
        """Returns ``[len(values)] int32``."""
        return np.fromiter((self._index.get(v, 0) for v in values), np.int32, len(values))


_WORD = re.compile(r"[^\W_]+")
"""A word: letters and digits of any script (the SavedModel's ``[\\p{L}\\p{N}]+``)."""


def words(text: str) -> list[str]:
    """Lower-case words of a text: ``"Star Wars (1977)"`` → ``["star", "wars", "1977"]``."""
    return _WORD.findall(text.lower())


def hour_of_day(time_ms: int) -> int:
    """0..23 (UTC); the request time's hour."""
    return int(hours_of_day(time_ms))


def day_of_week(time_ms: int) -> int:
    """0..6, Monday = 0 (UTC); 1970-01-01 was a Thursday."""
    return int(days_of_week(time_ms))


def hours_of_day(times_ms: Any) -> Any:  # Any: an int or an int array, the same back
    """:func:`hour_of_day` of an int or of each element of an int array."""
    return times_ms // 3_600_000 % 24


def days_of_week(times_ms: Any) -> Any:  # Any: an int or an int array, the same back
    """:func:`day_of_week` of an int or of each element of an int array."""
    return (times_ms // 86_400_000 + 3) % 7


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class FeatureEncoder:
    """One declared feature's values → ids, fitted on the data.

    Attributes:
        name: The feature's name in the schema.
        kind: Its kind (``recsys.data.schema.KINDS``).
        vocab: ``categorical``, ``tags``, ``text``: the known values (words).
        boundaries: ``numeric``, ``year``, ``date``: bucket boundaries; a value ``v`` is
            bucket ``1 + bisect_right(boundaries, v)``, a missing one 0.
        width: Ids per value: 1, or the most tags / words the tower reads.
        prefix: ``categorical``: leading characters kept (0: all).
    """

    name: str
    kind: str
    vocab: Vocab = Vocab(())
    boundaries: tuple[float, ...] = ()
    width: int = 1
    prefix: int = 0

    @property
    def multi(self) -> bool:
        """Several ids per value (``tags``, ``text``), 0-padded to ``width``."""
        return self.kind in MULTI

    @property
    def size(self) -> int:
        """Rows of the feature's embedding table, the unknown bucket included."""
        return len(self.boundaries) + 2 if self.kind in BUCKETED else self.vocab.size

    @property
    def pooling(self) -> str:
        """How the tower pools the rows of a value: ``one`` row, the ``sum`` of a tag set's
        (what a multi-hot layer computes), or the ``mean`` of a text's words."""
        return {"tags": "sum", "text": "mean"}.get(self.kind, "one")

    def id(self, value: Any) -> int:  # Any: a raw value of the feature's kind
        """A single-id kind's value → its id."""
        if self.kind in BUCKETED:
            if _missing(value):
                return 0
            return 1 + bisect.bisect_right(self.boundaries, float(value))
        if not value:
            return 0
        text = str(value)
        return self.vocab.index.get(text[: self.prefix] if self.prefix else text, 0)

    def ids(self, value: Any) -> list[int]:  # Any: a raw value of the feature's kind
        """A multi-id kind's value → its known ids, at most ``width``: a text's words in
        order, a tag set's ids smallest first (the most common tags when the vocabulary is
        ordered by count; here it is sorted, so the cut is arbitrary but stable)."""
        index = self.vocab.index
        if not value:
            return []
        if self.kind == "text":
            return [i for i in (index.get(w, 0) for w in words(str(value))) if i][: self.width]
        return sorted({index.get(str(t), 0) for t in value} - {0})[: self.width]

    def column(self, values: Sequence[Any]) -> np.ndarray:
        """``[n] int32`` ids, or ``[n, width] int32`` 0-padded for a multi-id kind."""
        n = len(values)
        if not self.multi:
            return np.fromiter((self.id(v) for v in values), np.int32, n)
        out = np.zeros((n, self.width), np.int32)
        for row, value in enumerate(values):
            found = self.ids(value)
            out[row, : len(found)] = found
        return out

    @classmethod
    def fit(cls, name: str, spec: Feature, values: pd.Series) -> FeatureEncoder:
        """Fits the vocabulary (values in at least ``min_count`` rows) or the bucket
        boundaries (declared, or the data's quantiles) on the feature's canonical values."""
        if spec.kind in BUCKETED:
            if spec.boundaries is not None:
                return cls(name, spec.kind, boundaries=tuple(float(b) for b in spec.boundaries))
            known = values.to_numpy(np.float64)
            known = known[~np.isnan(known)]
            cuts = np.linspace(0, 1, spec.buckets + 1)[1:-1]
            bounds = np.unique(np.quantile(known, cuts)) if len(known) else np.zeros(0)
            return cls(name, spec.kind, boundaries=tuple(float(b) for b in bounds))
        if spec.kind == "categorical":
            keys = values.map(lambda v: v[: spec.prefix] if spec.prefix else v)
            counts = keys[keys != ""].value_counts()
            return cls(
                name,
                spec.kind,
                Vocab.fit(counts[counts >= spec.min_count].index),
                prefix=spec.prefix or 0,
            )
        per_row = (
            [set(words(v)) for v in values] if spec.kind == "text" else [set(v) for v in values]
        )
        counts = pd.Series([w for row in per_row for w in row], dtype=object).value_counts()
        vocab = Vocab.fit(counts[counts >= spec.min_count].index)
        if spec.kind == "text":
            width = spec.max_tokens
        else:
            width = max(1, min(spec.max_values, max((len(r) for r in per_row), default=1)))
        return cls(name, spec.kind, vocab, width=width)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "vocab": list(self.vocab.values),
            "boundaries": list(self.boundaries),
            "width": self.width,
            "prefix": self.prefix,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureEncoder:  # Any: parsed JSON
        return cls(
            str(data["name"]),
            str(data["kind"]),
            Vocab(tuple(data["vocab"])),
            tuple(float(b) for b in data["boundaries"]),
            int(data["width"]),
            int(data["prefix"]),
        )


TIME_INPUTS = (("hour", 24), ("weekday", 7))
"""The request-time context the user tower reads, and each input's number of values."""


@dataclass(frozen=True)
class FeatureSpace:
    """Every vocabulary and bucketing the towers were trained with; saved beside the model.

    Attributes:
        users, items: The id vocabularies.
        user_features, item_features: One encoder per declared feature, in schema order.
        history_length: Recent items the user tower reads.
        filter: The item ``tags`` feature the API's filters name (the schema's ``filter``).
    """

    users: Vocab
    items: Vocab
    user_features: tuple[FeatureEncoder, ...]
    item_features: tuple[FeatureEncoder, ...]
    history_length: int
    filter: str | None = None

    @property
    def filter_values(self) -> tuple[str, ...]:
        """The values filters can name: the filter feature's vocabulary (none without one)."""
        return () if self.filter is None else self.item_feature(self.filter).vocab.values

    @property
    def user_inputs(self) -> tuple[str, ...]:
        """The user tower's single-id inputs (``user``, its single-id features, the time
        context), in ``encode_user``'s order."""
        own = tuple(f"user_{f.name}" for f in self.user_features if not f.multi)
        return ("user", *own, *(name for name, _ in TIME_INPUTS))

    def item_feature(self, name: str) -> FeatureEncoder:
        for f in self.item_features:
            if f.name == name:
                return f
        raise KeyError(name)

    def encode_user(
        self, user: UserFeatures, time_ms: int
    ) -> tuple[tuple[int, ...], list[list[int]], list[int]]:
        """One user's features at a request time → the user tower's inputs as ids: the one
        encoder. ``encode_users`` stacks its rows for a batch (training, evaluation, the
        SavedModel runtime); the NumPy runtime gathers its folded rows by them (serving).

        Returns:
            One id per ``user_inputs`` name, in that order; each multi-id user feature's ids
            (in ``user_features`` order); and the recent items' ids, most recent first, at
            most ``history_length``, 0 where the vocabulary lacks one.
        """
        profile = user.profile
        singles: list[int] = [self.users.index.get(user.user_id, 0)]
        multis: list[list[int]] = []
        for i, f in enumerate(self.user_features):
            value = profile[i] if profile else None
            if f.multi:
                multis.append(f.ids(value))
            else:
                singles.append(f.id(value))
        singles += (hour_of_day(time_ms), day_of_week(time_ms))
        items = self.items.index
        history = [items.get(i, 0) for i in user.activity.recent_items[: self.history_length]]
        return tuple(singles), multis, history

    def encode_users(self, users: Sequence[UserFeatures], times_ms: Sequence[int]) -> Inputs:
        """Each user's features at the request time beside it → the tower's inputs
        (``encode_user`` for each).

        Args:
            users: What the store (or the point-in-time fold) knows of each user.
            times_ms: ``[len(users)]`` each request's time, for the time context.

        Raises:
            ValueError: ``times_ms`` is not one time per user.
        """
        n = len(users)
        if len(times_ms) != n:
            raise ValueError(f"encode_users got {n} users but {len(times_ms)} request times")
        names = self.user_inputs
        multi = [f for f in self.user_features if f.multi]
        singles = np.zeros((n, len(names)), np.int32)
        multis = [np.zeros((n, f.width), np.int32) for f in multi]
        history = np.zeros((n, self.history_length), np.int32)
        for row, (user, time_ms) in enumerate(zip(users, times_ms, strict=True)):
            ids, lists, recent = self.encode_user(user, time_ms)
            singles[row] = ids
            for out, found in zip(multis, lists, strict=True):
                out[row, : len(found)] = found
            history[row, : len(recent)] = recent
        inputs = {name: singles[:, i].copy() for i, name in enumerate(names)}
        inputs.update({f"user_{f.name}": out for f, out in zip(multi, multis, strict=True)})
        inputs["history"] = history
        return inputs

    def encode_items(self, items: pd.DataFrame) -> Inputs:
        """Catalog rows (``item_id`` and the declared features' canonical columns) → the
        item tower's inputs."""
        inputs = {"item": self.items.lookup_many(list(items["item_id"]))}
        for f in self.item_features:
            inputs[f"item_{f.name}"] = f.column(list(items[f.name]))
        return inputs

    def to_json(self) -> dict[str, object]:
        return {
            "users": list(self.users.values),
            "items": list(self.items.values),
            "user_features": [f.to_json() for f in self.user_features],
            "item_features": [f.to_json() for f in self.item_features],
            "history_length": self.history_length,
            "filter": self.filter,
        }

    # Any: parsed JSON; a value of the wrong type raises TypeError, reported below.
    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpace:
        try:
            return cls(
                users=Vocab(tuple(data["users"])),
                items=Vocab(tuple(data["items"])),
                user_features=tuple(FeatureEncoder.from_json(f) for f in data["user_features"]),
                item_features=tuple(FeatureEncoder.from_json(f) for f in data["item_features"]),
                history_length=int(data["history_length"]),
                filter=None if data["filter"] is None else str(data["filter"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"feature space is malformed or from an older release ({exc!r}); retrain the "
                "model with `recsys train`"
            ) from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> FeatureSpace:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"cannot read feature space {path}: {exc}") from exc
