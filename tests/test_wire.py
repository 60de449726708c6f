"""Answers encoded straight into wire bytes are exactly what the generated message class
writes for the same answer, for every path, zero and negative-zero scores, long and non-ASCII
ids; and the request conversion keeps every field."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from recsys.v1 import recommender_pb2 as pb
from serving.answers import Recommendation, ServingPath
from serving.wire import PATHS, Encoders, ResponseEncoder, request_from

IDS = ["1", "42", "é-ünïcode-Ø", "x" * 200, "", "syn-99"]


def bundle(version: str = "idx-1"):
    return SimpleNamespace(item_ids=IDS, model_version="model-7", index_version=version)


def answer(rows, scores, path=ServingPath.PERSONALIZED, version="idx-1") -> Recommendation:
    return Recommendation(
        bundle(version),  # type: ignore[arg-type]
        np.asarray(rows, np.int64),
        np.asarray(scores, np.float32),
        path,
    )


def expected(a: Recommendation) -> bytes:
    return pb.RecommendResponse(
        items=[pb.ScoredItem(item_id=i.item_id, score=i.score) for i in a.items],
        model_version=a.model_version,
        index_version=a.index_version,
        path=PATHS[a.path],
    ).SerializeToString()


@pytest.mark.parametrize("path", list(ServingPath))
@pytest.mark.parametrize(
    ("rows", "scores"),
    [
        ([0, 1, 2, 3, 4, 5], [0.9, 0.5, -0.25, 1e-30, 3.5e8, -7.0]),
        ([1, 0], [0.0, -0.0]),  # proto3 writes no zero score, but does write -0.0
        ([], []),
        ([3, 3, 1], [np.float32(0.1), np.nan, np.inf]),
    ],
)
def test_encoded_bytes_are_the_serializers_bytes(path, rows, scores) -> None:
    a = answer(rows, scores, path)
    encoder = ResponseEncoder(a.bundle)
    assert encoder.encode(a) == expected(a)
    assert encoder.encode(a) == expected(a)  # again, from the per-row cache
    parsed = pb.RecommendResponse.FromString(encoder.encode(a))
    assert [i.item_id for i in parsed.items] == [IDS[r] for r in rows]
    assert parsed.model_version == "model-7" and parsed.path == PATHS[path]


def test_encoders_keep_one_encoder_per_index_version() -> None:
    encoders = Encoders(keep=2)
    for version in ("a", "b", "c", "a"):
        a = answer([1, 2], [0.5, 0.25], version=version)
        assert encoders.encode(a) == expected(a)
    assert len(encoders._by_version) == 2


def test_request_from_keeps_every_field() -> None:
    message = pb.RecommendRequest(
        user_id="u1",
        k=7,
        exclude_item_ids=["a", "b"],
        include_seen=True,
        request_time_ms=123,
        include_genres=["Drama"],
        exclude_genres=["Horror", "War"],
    )
    r = request_from(message)
    assert (r.user_id, r.k, list(r.exclude), r.include_seen, r.request_time_ms) == (
        "u1",
        7,
        ["a", "b"],
        True,
        123,
    )
    assert list(r.include_genres) == ["Drama"] and list(r.exclude_genres) == ["Horror", "War"]
