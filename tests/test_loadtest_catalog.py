"""``recsys loadtest --catalog``'s pure parts (fast tier): the schedule of changes, and the
latencies and faults the probes' answers give."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.catalog import (
    LIFETIME_S,
    Probe,
    base_deletes,
    broken,
    outcome,
    probe_k,
    schedule,
)
from recsys.errors import RecsysError
from tests.test_schema import read, write


def test_the_schedule_alternates_new_items_and_deletes_each_new_one_after_its_lifetime(
    tmp_path: Path,
) -> None:
    write(tmp_path)
    ml = read(tmp_path)
    rate = 2 * len(ml.items) / LIFETIME_S - 2  # as many catalog deletes as the catalog allows
    early = base_deletes(rate)
    assert early < len(ml.items)
    changes = schedule(ml, 4 * early + 6, rate, seed=3)
    upserts = [c for c in changes[0::2]]
    deletes = [c for c in changes[1::2]]
    assert all(c.features is not None for c in upserts) and all(c.features is None for c in deletes)
    assert len({c.item_id for c in upserts}) == len(upserts)  # new ids, never reused
    catalog = {str(i) for i in ml.items["item_id"]}
    assert not {c.item_id for c in upserts} & catalog
    first = [c.item_id for c in deletes[:early]]
    assert len(set(first)) == early and set(first) <= catalog  # distinct catalog items
    # Then the new items, in the order they came, each `early` deletes (LIFETIME_S) later.
    assert [c.item_id for c in deletes[early:]] == [c.item_id for c in upserts][
        : len(deletes) - early
    ]
    assert probe_k(ml, rate) > len(ml.items) + early
    with pytest.raises(RecsysError, match="a lower rate"):
        schedule(ml, 10, 2 * len(ml.items) / LIFETIME_S + 2)


def _probe(t: float, *items: str) -> Probe:
    return Probe(t, t + 0.01, frozenset(items))


def test_latencies_count_from_the_send_to_the_first_answer_that_shows_the_change() -> None:
    probes = [
        _probe(0.0, "a", "b"),
        _probe(0.1, "a", "b"),
        _probe(0.2, "a", "b", "new"),  # the upsert (sent at 0.05) shows
        _probe(0.3, "b", "new"),  # a's delete (sent at 0.15) shows
        _probe(0.4, "b", "new"),
    ]
    got = outcome(probes, {"new": 0.05}, {"a": 0.15})
    assert got.upserts == pytest.approx({"new": 0.16}) and got.deletes == pytest.approx({"a": 0.16})
    assert got.unseen == got.undeleted == got.relapsed == []


def test_a_deleted_item_answered_again_counts_from_its_last_answer_and_as_a_relapse() -> None:
    probes = [
        _probe(0.0, "a", "b"),
        _probe(0.1, "b"),  # a gone...
        _probe(0.2, "a", "b"),  # ...and back: a relapse
        _probe(0.3, "b"),
        _probe(0.4, "b"),
    ]
    got = outcome(probes, {"never": 0.0}, {"a": 0.05, "b": 0.05})
    assert got.deletes == pytest.approx({"a": 0.26}) and got.relapsed == ["a"]
    assert got.undeleted == ["b"] and got.unseen == ["never"]
    facts = {"unseen": 1, "undeleted": 1, "relapsed": 1, "settled": False}
    assert broken(facts) == [
        "1 new items never answered",
        "1 deleted items still answered at the end",
        "1 deleted items answered again",
        "no answer after the stream was the final catalog",
    ]
    assert broken({"unseen": 0, "undeleted": 0, "relapsed": 0, "settled": True}) == []
