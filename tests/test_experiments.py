"""The protocol evaluator's plumbing: queries, exclusions and targets line up per user."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.experiments import Evaluator
from evaluation.protocols import recbole_split, temporal_split_protocol, tfrs_split
from towers.examples import fit_feature_space


@pytest.fixture(scope="module", params=["temporal", "recbole", "tfrs"])
def split(request, ml):
    return {
        "temporal": lambda: temporal_split_protocol(ml.interactions, 0.2, 0.1),
        "recbole": lambda: recbole_split(ml.interactions),
        "tfrs": lambda: tfrs_split(ml.interactions),
    }[request.param]()


def test_a_model_scoring_by_popularity_equals_the_popularity_baseline(ml, split) -> None:
    space = fit_feature_space(ml, split.train, 5)
    evaluator = Evaluator(ml, space, split)
    known = pd.concat([p for p in (split.train, split.valid) if p is not None])
    counts = known["item_id"].value_counts().reindex(ml.items["item_id"], fill_value=0)
    item_vecs = counts.to_numpy(np.float32)[:, np.newaxis]
    model = evaluator(lambda inputs: np.ones((len(inputs["user"]), 1), np.float32), item_vecs)
    assert model == evaluator.popularity()


def test_an_oracle_that_knows_the_targets_scores_perfect_hits(ml, split) -> None:
    if split.name == "tfrs":
        pytest.skip("per-pair protocol: covered by the popularity test")
    space = fit_feature_space(ml, split.train, 5)
    evaluator = Evaluator(ml, space, split)
    targets = split.test.groupby("user_id")["item_id"].agg(set)
    users = sorted(targets.index, key=lambda u: (len(u), u))
    column = {item: c for c, item in enumerate(ml.items["item_id"])}
    oracle = np.zeros((len(users), len(column)), np.float32)
    for row, user in enumerate(users):
        oracle[row, [column[i] for i in targets[user]]] = 1.0
    lookup = {space.users.lookup(u): row for row, u in enumerate(users)}
    # The user id index identifies the query row (test users unknown to training share 0, so
    # the oracle is only exact for known users: compare hit@10 on those rows only).
    metrics = evaluator(
        lambda inputs: oracle[[lookup.get(int(u), 0) for u in inputs["user"]]],
        np.eye(len(column), dtype=np.float32),
    )
    assert metrics["hit@10"] >= sum(1 for u in users if space.users.lookup(u)) / len(users) - 1e-9
