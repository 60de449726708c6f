"""A tiny synthetic serving bundle for fast-tier tests of the hot path: a few hundred items
in an ``IndexFlatIP``, a real NumPy user tower with random weights, and features from a dict
(a fake ``Features``). No training, no store, no server."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import faiss
import numpy as np

from features.activity import Activity, SeenIndex, item_hash
from features.user import UserFeatures
from index.items import ItemMeta, popular_rows, tag_bits
from serving.bundle import Bundle
from towers.encoding import FeatureEncoder, FeatureSpace, Vocab
from towers.model_config import TowerConfig
from towers.runtime import NumpyUserTower

GENRES = ("Action", "Comedy", "Drama", "Horror", "Rare")
DIM = 16
SIDE = 8


USER_FEATURES = (
    FeatureEncoder("gender", "categorical", Vocab(("F", "M"))),
    FeatureEncoder("age", "numeric", boundaries=(18, 25, 35, 45, 50, 56)),
    FeatureEncoder("occupation", "categorical", Vocab(("doctor", "student", "writer"))),
    FeatureEncoder("zip_code", "categorical", Vocab(("10", "55", "94")), prefix=2),
)
"""MovieLens-100K's user features, kinds and all."""
INTERESTS = FeatureEncoder("interests", "tags", Vocab(("art", "food", "sport")), width=2)
BIO = FeatureEncoder("bio", "text", Vocab(("cat", "dog", "likes")), width=3)
"""Multi-id user features, for a space of every kind (``space(multi=True)``)."""


def space(
    items: int = 300, users: int = 50, history_length: int = 5, multi: bool = False
) -> FeatureSpace:
    features = USER_FEATURES + ((INTERESTS, BIO) if multi else ())
    return FeatureSpace(
        users=Vocab(tuple(f"u{i}" for i in range(users))),
        items=Vocab(tuple(f"i{i}" for i in range(items))),
        user_features=features,
        item_features=(FeatureEncoder("genres", "tags", Vocab(GENRES), width=3),),
        history_length=history_length,
        filter="genres",
    )


def weights(space: FeatureSpace, seed: int = 0) -> dict[str, np.ndarray]:
    """Random user-tower weights of the shapes an export writes."""
    rng = np.random.default_rng(seed)
    tables = {
        "user_emb": (space.users.size, DIM),
        **{f"user_{f.name}_emb": (f.size, SIDE) for f in space.user_features},
        "item_emb": (space.items.size, DIM),
        "hour_emb": (24, SIDE),
        "weekday_emb": (7, SIDE),
    }
    w = {n: rng.normal(size=s).astype(np.float32) for n, s in tables.items()}
    width = sum(s[1] for s in tables.values())
    w["user_hidden_w"] = rng.normal(scale=0.2, size=(width, 2 * DIM)).astype(np.float32)
    w["user_hidden_b"] = rng.normal(scale=0.1, size=2 * DIM).astype(np.float32)
    w["user_out_w"] = rng.normal(scale=0.2, size=(2 * DIM, DIM)).astype(np.float32)
    w["user_out_b"] = rng.normal(scale=0.1, size=DIM).astype(np.float32)
    return w


def config(space: FeatureSpace | None = None) -> TowerConfig:
    """Every user part, mean pooling, and the concatenation order an export records."""
    features = (space or globals()["space"]()).user_features
    plain = TowerConfig(dim=DIM, user_features=tuple((f.name, f.pooling) for f in features))
    return dataclasses.replace(plain, user_concat=plain.user_tables())


def tower(space: FeatureSpace, seed: int = 0) -> NumpyUserTower:
    return NumpyUserTower(weights(space, seed), config(space))


def item_genres(n: int) -> list[tuple[str, ...]]:
    """Item ``i``'s genres: a spread of the common ones; every 50th item is ``Rare``."""
    common = GENRES[:4]
    return [
        (*[g for j, g in enumerate(common) if (i >> j) & 1 or j == i % 4],)
        + (("Rare",) if i % 50 == 0 else ())
        for i in range(n)
    ]


def bundle(items: int = 300, users: int = 50, seed: int = 0) -> Bundle:
    """A bundle of ``items`` unit item vectors in a flat inner-product index."""
    s = space(items, users)
    rng = np.random.default_rng(seed + 1)
    vectors = rng.normal(size=(items, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    ids = list(s.items.values)
    counts = {f"i{i}": int(c) for i, c in enumerate(rng.zipf(1.5, size=items) % 1000)}
    rows, shares = popular_rows(ids, counts)
    meta = ItemMeta("genres", GENRES, tag_bits(item_genres(items), GENRES), rows, shares)
    return Bundle(
        model_version="m-test",
        index_version="i-test",
        space=s,
        tower=tower(s, seed),
        index=index,
        item_ids=ids,
        meta=meta,
        seen=SeenIndex(ids),
    )


def seen_bytes(item_ids: Sequence[str]) -> bytes:
    """A seen set as the store holds it (newest first)."""
    return b"".join(map(item_hash, item_ids))


class DictFeatures:
    """``Features`` from a dict: unknown users read as defaults; ``down`` makes every read
    fail (``None``: a degraded answer). Counts the reads."""

    def __init__(self, users: Mapping[str, UserFeatures] | None = None):
        self.users = dict(users or {})
        self.down = False
        self.reads = 0

    def read_many(self, user_ids: Sequence[str]) -> Sequence[UserFeatures] | None:
        self.reads += 1
        if self.down:
            return None
        return [self.users.get(u, UserFeatures(u)) for u in user_ids]


def user(
    user_id: str,
    recent: Sequence[str] = (),
    seen: Sequence[str] | None = None,
    profile: bool = True,
) -> UserFeatures:
    """A user with a profile (unless ``profile`` is false), recent items and a seen set
    (``recent`` when not given)."""
    activity = Activity(tuple(recent), seen=seen_bytes(recent if seen is None else seen))
    if not profile:
        return UserFeatures(user_id, activity=activity)
    return UserFeatures(user_id, ("F", 30.0, "writer", "55123"), activity, has_profile=True)
