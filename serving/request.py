"""One Recommend request as the hot path sees it, and the limits it is checked against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from index.items import ItemMeta
from recsys.config import ServingConfig
from recsys.errors import InvalidRequestError


class Request(NamedTuple):
    """One Recommend request, as the hot path sees it (a named tuple: one is built per call).

    Attributes:
        request_time_ms: The moment the answer is for (time features); 0: now.
        include_genres: Only items with one of these genres; empty: any.
        exclude_genres: No items with any of these genres.
    """

    user_id: str
    k: int = 10
    exclude: Sequence[str] = ()
    include_seen: bool = False
    request_time_ms: int = 0
    include_genres: Sequence[str] = ()
    exclude_genres: Sequence[str] = ()


def validate(request: Request, cfg: ServingConfig, meta: ItemMeta) -> tuple[int, int]:
    """Checks the request against the limits; returns the include and exclude genre masks.

    Raises:
        InvalidRequestError: with a message that says what is allowed.
    """
    user_id, k, exclude = request.user_id, request.k, request.exclude
    if not user_id:
        raise InvalidRequestError("user_id is empty; pass the id of the user to recommend for")
    if len(user_id) > cfg.max_id_length:
        raise InvalidRequestError(f"user_id is longer than {cfg.max_id_length} characters")
    if not 1 <= k <= cfg.max_k:
        raise InvalidRequestError(f"k must be between 1 and {cfg.max_k}, got {k}")
    if exclude:
        if len(exclude) > cfg.max_exclude:
            raise InvalidRequestError(
                f"at most {cfg.max_exclude} exclude_item_ids are allowed, got {len(exclude)}"
            )
        longest = cfg.max_id_length
        if any(not item or len(item) > longest for item in exclude):
            raise InvalidRequestError(
                f"exclude_item_ids must be non-empty and at most {longest} characters"
            )
    if request.request_time_ms < 0:
        raise InvalidRequestError(
            f"request_time_ms must be milliseconds since the epoch or 0 (now), "
            f"got {request.request_time_ms}"
        )
    include_genres, exclude_genres = request.include_genres, request.exclude_genres
    if not include_genres and not exclude_genres:
        return 0, 0
    if len(include_genres) + len(exclude_genres) > cfg.max_genres:
        raise InvalidRequestError(f"at most {cfg.max_genres} genre filters are allowed")
    return meta.filter_mask(include_genres), meta.filter_mask(exclude_genres)
