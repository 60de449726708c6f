"""Raw features → integer ids and arrays, shared by training, the index build and serving.

Pure NumPy: the serving process uses it without importing TensorFlow. Index 0 of every
vocabulary is the out-of-vocabulary / missing bucket, so a value never seen in training maps
to a defined embedding instead of failing.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from features.user import UserFeatures
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

    @property
    def index(self) -> Mapping[str, int]:
        """Value → index, without the unknown bucket (``index.get(v, 0)`` is ``lookup``)."""
        return self._index

    def lookup(self, value: str) -> int:
        return self._index.get(value, 0)

    def lookup_many(self, values: Sequence[str]) -> np.ndarray:
        """Returns ``[len(values)] int32``."""
        return np.fromiter((self._index.get(v, 0) for v in values), np.int32, len(values))


def age_bucket(age: int) -> int:
    """Maps an age in years to 1..7; 0 for unknown (age <= 0)."""
    if age <= 0:
        return 0
    return 1 + bisect.bisect_right(AGE_BOUNDARIES, age)


AGE_BUCKETS = len(AGE_BOUNDARIES) + 2


def year_bucket(year: int) -> int:
    """Maps a release year to a decade bucket 1..DECADES; 0 for unknown."""
    if year <= 0:
        return 0
    return 1 + min(DECADES - 1, max(0, (year - FIRST_DECADE) // 10))


YEAR_BUCKETS = DECADES + 1


ZIP_PREFIX = 2
"""Leading zip-code characters kept: the US region and state group (``"55"``)."""
TITLE_TOKENS = 6
"""Title tokens kept per item."""
_TOKEN = re.compile(r"[a-z0-9]+")


def zip_prefix(zip_code: str) -> str:
    return zip_code[:ZIP_PREFIX].upper()


def title_tokens(title: str) -> list[str]:
    """Lower-case ASCII words of a title: ``"Star Wars (1977)"`` → ``["star", "wars", "1977"]``."""
    return _TOKEN.findall(title.lower())


def hour_of_day(time_ms: int) -> int:
    """0..23 (UTC); the request time's hour."""
    return int(time_ms // 3_600_000 % 24)


def day_of_week(time_ms: int) -> int:
    """0..6, Monday = 0 (UTC); 1970-01-01 was a Thursday."""
    return int((time_ms // 86_400_000 + 3) % 7)


USER_SCALARS = ("user", "gender", "age", "occupation", "zip", "hour", "weekday")
"""The user tower's one-id-per-user inputs, in ``FeatureSpace.encode_user``'s order."""


@dataclass(frozen=True)
class UserInputs:
    """Encoded user-tower inputs for a batch, all ``int32``.

    Attributes:
        user, gender, age, occupation, zip, hour, weekday: ``[batch]``.
        history: ``[batch, history_length]`` recent item indexes, most recent first, 0-padded.
    """

    user: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    occupation: np.ndarray
    zip: np.ndarray
    hour: np.ndarray
    weekday: np.ndarray
    history: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ItemInputs:
    """Encoded item-tower inputs.

    Attributes:
        item, year: ``[batch] int32``.
        genres: ``[batch, n_genres] float32`` multi-hot.
        title: ``[batch, TITLE_TOKENS] int32`` title-token indexes, 0-padded.
    """

    item: np.ndarray
    year: np.ndarray
    genres: np.ndarray
    title: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class FeatureSpace:
    """Every vocabulary the towers were trained with; saved beside the model."""

    users: Vocab
    items: Vocab
    genders: Vocab
    occupations: Vocab
    zips: Vocab
    genres: tuple[str, ...]
    title_tokens: Vocab
    history_length: int

    def encode_user(self, user: UserFeatures, time_ms: int) -> tuple[tuple[int, ...], list[int]]:
        """One user's features at a request time → the user tower's inputs as ids: the one
        encoder. ``encode_users`` stacks its rows for a batch (training, evaluation, the
        SavedModel runtime); the NumPy runtime gathers its folded rows by them (serving).

        Returns:
            One id per ``USER_SCALARS`` input, in that order, and the recent items' ids,
            most recent first, at most ``history_length``, 0 where the vocabulary lacks one.
        """
        items = self.items.index
        scalars = (
            self.users.index.get(user.user_id, 0),
            self.genders.index.get(user.gender, 0),
            age_bucket(int(user.age)),
            self.occupations.index.get(user.occupation, 0),
            self.zips.index.get(zip_prefix(user.zip_code), 0),
            hour_of_day(time_ms),
            day_of_week(time_ms),
        )
        history = [items.get(i, 0) for i in user.activity.recent_items[: self.history_length]]
        return scalars, history

    def encode_users(self, users: Sequence[UserFeatures], times_ms: Sequence[int]) -> UserInputs:
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
        scalars = np.zeros((n, len(USER_SCALARS)), np.int32)
        history = np.zeros((n, self.history_length), np.int32)
        for row, (user, time_ms) in enumerate(zip(users, times_ms, strict=True)):
            ids, recent = self.encode_user(user, time_ms)
            scalars[row] = ids
            history[row, : len(recent)] = recent
        columns = {name: scalars[:, i].copy() for i, name in enumerate(USER_SCALARS)}
        return UserInputs(**columns, history=history)

    def encode_items(
        self,
        item_ids: Sequence[str],
        years: Sequence[int],
        genres: Sequence[Iterable[str]],
        titles: Sequence[str],
    ) -> ItemInputs:
        column = {g: i for i, g in enumerate(self.genres)}
        multi_hot = np.zeros((len(item_ids), len(self.genres)), np.float32)
        for row, names in enumerate(genres):
            for name in names:
                if name in column:
                    multi_hot[row, column[name]] = 1.0
        tokens = np.zeros((len(item_ids), TITLE_TOKENS), np.int32)
        for row, title in enumerate(titles):
            idx = self.title_tokens.lookup_many(title_tokens(title))
            idx = idx[idx > 0][:TITLE_TOKENS]
            tokens[row, : len(idx)] = idx
        return ItemInputs(
            item=self.items.lookup_many(item_ids),
            year=np.fromiter((year_bucket(int(y)) for y in years), np.int32, len(years)),
            genres=multi_hot,
            title=tokens,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "users": list(self.users.values),
            "items": list(self.items.values),
            "genders": list(self.genders.values),
            "occupations": list(self.occupations.values),
            "zips": list(self.zips.values),
            "genres": list(self.genres),
            "title_tokens": list(self.title_tokens.values),
            "history_length": self.history_length,
        }

    # Any: parsed JSON; a value of the wrong type raises TypeError, reported below.
    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpace:
        try:
            return cls(
                users=Vocab(tuple(data["users"])),
                items=Vocab(tuple(data["items"])),
                genders=Vocab(tuple(data["genders"])),
                occupations=Vocab(tuple(data["occupations"])),
                zips=Vocab(tuple(data["zips"])),
                genres=tuple(data["genres"]),
                title_tokens=Vocab(tuple(data["title_tokens"])),
                history_length=int(data["history_length"]),
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
