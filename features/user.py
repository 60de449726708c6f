"""What is known of one user at a moment: the one record from the feature store (or the
point-in-time fold, offline) to the user tower."""

from __future__ import annotations

from typing import Any, NamedTuple

from features.activity import EMPTY, Activity


class UserFeatures(NamedTuple):
    """One user's profile (materialized) and activity (folded from the stream), with
    defaults where nothing is known (a named tuple: one is built per user on every Recommend
    request).

    Serving reads it from the online store; training and evaluation build the same record
    point-in-time (``towers.examples.Profiles``); the user tower encodes it with the request's
    time. One type on both sides, so what training saw is what the tower gets served.

    Attributes:
        profile: The declared user features' values, in the data schema's order (``None``
            for a missing one); empty when the user has no profile.
        activity: Recent items, watermark and seen set (``features.activity``).
        has_profile: Whether the store holds a profile for the user.
    """

    user_id: str
    profile: tuple[Any, ...] = ()  # Any: a value of each feature's kind
    activity: Activity = EMPTY
    has_profile: bool = False
