"""Raw features → integer ids and arrays, shared by training, the index build and serving.

Pure NumPy: the serving process uses it without importing TensorFlow. Index 0 of every
vocabulary is the out-of-vocabulary / missing bucket, so a value never seen in training maps
to a defined embedding instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.errors import ArtifactError

AGE_BOUNDARIES = (18, 25, 35, 45, 50, 56)
"""Age buckets as in MovieLens-1M: <18, 18-24, ..., 56+ (1..7); 0 is unknown."""
FIRST_DECADE = 1920
DECADES = 11
"""Release-year buckets: <1930, 1930s, ..., 2020s and later (1..11); 0 is unknown."""


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

    def lookup(self, value: str) -> int:
        return self._index.get(value, 0)

    def lookup_many(self, values: Sequence[str]) -> np.ndarray:
        """Returns ``[len(values)] int32``."""
        return np.fromiter((self._index.get(v, 0) for v in values), np.int32, len(values))


def age_bucket(age: int) -> int:
    """Maps an age in years to 1..7; 0 for unknown (age <= 0)."""
    if age <= 0:
        return 0
    return 1 + sum(age >= b for b in AGE_BOUNDARIES)


AGE_BUCKETS = len(AGE_BOUNDARIES) + 2


def year_bucket(year: int) -> int:
    """Maps a release year to a decade bucket 1..DECADES; 0 for unknown."""
    if year <= 0:
        return 0
    return 1 + min(DECADES - 1, max(0, (year - FIRST_DECADE) // 10))


YEAR_BUCKETS = DECADES + 1


@dataclass(frozen=True)
class UserInputs:
    """Encoded user-tower inputs for a batch.

    Attributes:
        user: ``[batch] int32`` user id index.
        gender: ``[batch] int32``.
        age: ``[batch] int32`` age bucket.
        occupation: ``[batch] int32``.
        history: ``[batch, history_length] int32`` recent item indexes, most recent first,
            0-padded.
    """

    user: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    occupation: np.ndarray
    history: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "user": self.user,
            "gender": self.gender,
            "age": self.age,
            "occupation": self.occupation,
            "history": self.history,
        }


@dataclass(frozen=True)
class ItemInputs:
    """Encoded item-tower inputs: ``item``, ``year`` ``[batch] int32``; ``genres``
    ``[batch, n_genres] float32`` multi-hot."""

    item: np.ndarray
    year: np.ndarray
    genres: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"item": self.item, "year": self.year, "genres": self.genres}


@dataclass(frozen=True)
class FeatureSpace:
    """Every vocabulary the towers were trained with; saved beside the model."""

    users: Vocab
    items: Vocab
    genders: Vocab
    occupations: Vocab
    genres: tuple[str, ...]
    history_length: int

    def encode_users(
        self,
        user_ids: Sequence[str],
        genders: Sequence[str],
        ages: Sequence[int],
        occupations: Sequence[str],
        histories: Sequence[Sequence[str]],
    ) -> UserInputs:
        history = np.zeros((len(user_ids), self.history_length), np.int32)
        for row, items in enumerate(histories):
            idx = self.items.lookup_many(list(items)[: self.history_length])
            history[row, : len(idx)] = idx
        return UserInputs(
            user=self.users.lookup_many(user_ids),
            gender=self.genders.lookup_many(genders),
            age=np.fromiter((age_bucket(int(a)) for a in ages), np.int32, len(ages)),
            occupation=self.occupations.lookup_many(occupations),
            history=history,
        )

    def encode_items(
        self,
        item_ids: Sequence[str],
        years: Sequence[int],
        genres: Sequence[Iterable[str]],
    ) -> ItemInputs:
        column = {g: i for i, g in enumerate(self.genres)}
        multi_hot = np.zeros((len(item_ids), len(self.genres)), np.float32)
        for row, names in enumerate(genres):
            for name in names:
                if name in column:
                    multi_hot[row, column[name]] = 1.0
        return ItemInputs(
            item=self.items.lookup_many(item_ids),
            year=np.fromiter((year_bucket(int(y)) for y in years), np.int32, len(years)),
            genres=multi_hot,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "users": list(self.users.values),
            "items": list(self.items.values),
            "genders": list(self.genders.values),
            "occupations": list(self.occupations.values),
            "genres": list(self.genres),
            "history_length": self.history_length,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> FeatureSpace:
        try:
            return cls(
                users=Vocab(tuple(data["users"])),  # type: ignore[arg-type]
                items=Vocab(tuple(data["items"])),  # type: ignore[arg-type]
                genders=Vocab(tuple(data["genders"])),  # type: ignore[arg-type]
                occupations=Vocab(tuple(data["occupations"])),  # type: ignore[arg-type]
                genres=tuple(data["genres"]),  # type: ignore[arg-type]
                history_length=int(data["history_length"]),  # type: ignore[call-overload]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"feature space is malformed ({exc!r}); retrain the model") from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> FeatureSpace:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"cannot read feature space {path}: {exc}") from exc
