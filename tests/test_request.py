"""Request validation: every limit refused with a message that says what is allowed, and a
valid request's genre names turned into masks (fast tier: no server)."""

from __future__ import annotations

import numpy as np
import pytest

from index.items import ItemMeta, tag_bits
from recsys.config import ServingConfig
from recsys.errors import InvalidRequestError
from serving.request import Request, validate

NAMES = ("Action", "Drama", "Horror")
META = ItemMeta(
    "genres", NAMES, tag_bits([("Action",), ("Drama",)], NAMES), np.arange(2), np.ones(2)
)
CONFIG = ServingConfig(max_k=50, max_exclude=3, max_id_length=8, max_genres=2)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (Request(""), "user_id is empty"),
        (Request("u" * 9), "longer than 8"),
        (Request("u1", k=0), "between 1 and 50, got 0"),
        (Request("u1", k=51), "between 1 and 50, got 51"),
        (Request("u1", exclude=("a", "b", "c", "d")), "at most 3 exclude_item_ids"),
        (Request("u1", exclude=("a", "")), "non-empty and at most 8"),
        (Request("u1", exclude=("x" * 9,)), "non-empty and at most 8"),
        (Request("u1", request_time_ms=-1), "request_time_ms must be"),
        (
            Request("u1", include_genres=("Action", "Drama"), exclude_genres=("Horror",)),
            "at most 2",
        ),
        (Request("u1", include_genres=("Jazz",)), "unknown genres value 'Jazz'"),
        (Request("u1", exclude_genres=("jazz",)), "the catalog's: Action, Drama, Horror"),
    ],
)
def test_each_limit_is_refused_with_what_is_allowed(request_, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        validate(request_, CONFIG, META)


def test_a_valid_request_gets_its_genre_masks() -> None:
    assert validate(Request("u1", k=50, exclude=("a", "b", "c")), CONFIG, META) == (0, 0)
    include, exclude = validate(
        Request("u1", include_genres=("Drama",), exclude_genres=("Horror",)), CONFIG, META
    )
    assert (include, exclude) == (0b010, 0b100)
