"""Users as the tower tests write them: one flat row each, turned into what the tower takes
(each user's ``UserFeatures`` and request time)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from features.activity import Activity
from features.user import UserFeatures


class UserRow(NamedTuple):
    user_id: str
    gender: str = ""
    age: int = 0
    occupation: str = ""
    zip_code: str = ""
    recent_items: tuple[str, ...] = ()
    request_time_ms: int = 0


def tower_inputs(rows: Sequence[UserRow]) -> tuple[list[UserFeatures], list[int]]:
    """``(users, times_ms)`` for ``encode_users`` and ``embed``: the profile in the order
    MovieLens-100K's schema declares it (gender, age, occupation, zip code)."""
    users = [
        UserFeatures(
            r.user_id,
            (r.gender, float(r.age) if r.age else None, r.occupation, r.zip_code),
            Activity(r.recent_items),
            True,
        )
        for r in rows
    ]
    return users, [r.request_time_ms for r in rows]
