"""The load test's request mix, apart from Locust so tests can draw the same requests (the
Locust user imports this; importing locust would gevent-patch the importer)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from recsys.v1 import recommender_pb2 as pb


class Traffic:
    """The request mix, from the file ``recsys loadtest`` writes (``run.write_traffic``).

    Known users are drawn in proportion to how active they were (a popularity skew); a
    share of calls comes from never-seen users (cold start); k varies; some calls exclude
    popular items or filter by genre.
    """

    def __init__(self, spec: dict[str, Any], seed: int):  # Any: the traffic JSON
        self.rng = random.Random(seed)
        self.users: list[str] = spec["users"]
        self.cumulative = list(np.cumsum(spec["user_weights"]))
        self.items: list[str] = spec["popular_items"]
        self.genres: list[str] = spec["genres"]
        self.new_user_share: float = spec["new_user_share"]
        self.ks: list[int] = spec["ks"]

    def request(self) -> pb.RecommendRequest:
        rng = self.rng
        if rng.random() < self.new_user_share:
            user = f"loadtest-new-{rng.randrange(10**9)}"
        else:
            user = rng.choices(self.users, cum_weights=self.cumulative)[0]
        request = pb.RecommendRequest(user_id=user, k=rng.choice(self.ks))
        draw = rng.random()
        if draw < 0.2:
            request.exclude_item_ids.extend(rng.sample(self.items, rng.randint(1, 5)))
        elif draw < 0.35:
            request.include_genres.append(rng.choice(self.genres))
        elif draw < 0.45:
            request.exclude_genres.append(rng.choice(self.genres))
        return request
