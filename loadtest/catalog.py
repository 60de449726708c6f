"""``recsys loadtest --catalog RATE`` (``recsys bench-catalog --rate RATE``): the catalog in
real time under load.

While Locust loads Recommend, item changes stream at ``RATE`` a second onto the catalog topic
of a scratch broker that the server follows: every other change an upsert of a new item (a
catalog item's features under a new id), the others deletes: first of the catalog's own
items, then of the new items, each :data:`LIFETIME_S` after its upsert. A prober asks the
server :data:`PROBES_PER_S` times a second for one known user's answer with ``k`` above the
catalog's size and seen items included, which is every item the server would recommend
(the server's ``serving.max_k`` is raised to allow it). From those answers:

- **upsert → recommendable**: from the moment the upsert was handed to the producer to the
  arrival of the first answer that holds the new item;
- **delete → never served again**: from the moment the delete was handed to the producer to
  the arrival of the first answer after the last one that holds the item. An item answered
  again after an answer without it counts as a relapse;
- after the stream, the prober goes on until an answer is exactly the final catalog (or
  :data:`GIVE_UP_S`), and a little longer, so a late relapse is seen too.

The clocks start before Kafka (producer linger, the broker's acknowledgement, the server's
poll, embedding and swap are all in the figure) and stop when the answer is back (the
probe's own queueing behind the load is in it too): an upper bound, at the probe period's
resolution.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import percentiles, pin
from catalog.events import encode_delete, encode_upsert
from catalog.synthetic import event_features
from features.stream.replay import ensure_topic
from localservices.kafka import LocalBroker, ensure_jars
from recsys.config import Config
from recsys.data.dataset import Dataset
from recsys.errors import RecsysError

LIFETIME_S = 3.0
"""A new item is deleted this long after its upsert (so it is recommendable first)."""
PROBES_PER_S = 20.0
GIVE_UP_S = 15.0
"""After the stream, how long the prober waits for an answer that is the final catalog."""
SETTLED_PROBES = 20
"""Answers still read once one was the final catalog: a late relapse shows in them."""
TOPIC = "recsys.catalog.loadtest"


@dataclass(frozen=True)
class Change:
    """One scheduled change: ``features`` for an upsert, ``None`` for a delete."""

    item_id: str
    features: dict[str, Any] | None


def schedule(ml: Dataset, events: int, rate: float, seed: int = 0) -> list[Change]:
    """``events`` changes at ``rate`` a second: upserts of new items in the even slots (a
    random catalog item's features each), deletes in the odd ones: the first
    ``base_deletes(rate)`` of distinct catalog items, drawn at random, then of the new items
    in the order they were added, each :data:`LIFETIME_S` after its upsert."""
    rng = np.random.default_rng(seed)
    rows = ml.items.to_dict("records")
    early = base_deletes(rate)
    if early >= len(rows):
        raise RecsysError(
            f"--catalog {rate:g}/s deletes {early} catalog items before its first new item "
            f"is {LIFETIME_S:g} s old, but the catalog has {len(rows)}: a lower rate"
        )
    doomed = [str(rows[i]["item_id"]) for i in rng.choice(len(rows), early, replace=False)]
    added: list[str] = []
    out: list[Change] = []
    for n in range(events):
        if n % 2 == 0:
            item = f"new-{seed}-{n // 2}"
            donor = rows[int(rng.integers(len(rows)))]
            added.append(item)
            out.append(Change(item, event_features(donor, ml.schema)))
        else:
            j = n // 2
            out.append(Change(doomed[j] if j < early else added[j - early], None))
    return out


def base_deletes(rate: float) -> int:
    """Deletes of catalog items before the first new item has lived :data:`LIFETIME_S`."""
    return int(np.ceil(LIFETIME_S * rate / 2))


def probe_k(ml: Dataset, rate: float) -> int:
    """A ``k`` above anything the catalog can hold during the run: its items, and the new
    items alive at once (one upsert in two changes for :data:`LIFETIME_S`, and slack)."""
    return len(ml.items) + base_deletes(rate) + 64


@contextlib.contextmanager
def catalog_stack(config: Config, ml: Dataset, rate: float) -> Iterator[Config]:
    """A scratch broker with an empty catalog topic of its own; yields the config that points
    a server at them, with ``serving.max_k`` raised to the probe's ``k``. The version's
    recorded offsets are of another topic, so the server's feed reads this one from its
    start (``serving.bundle.Bundle.catalog_start``)."""
    jars = ensure_jars(config.paths.kafka_pom, config.paths.kafka_jars)
    print("==> starting a scratch broker for the catalog topic", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="recsys-catalog-") as tmp,
        LocalBroker(jars, Path(tmp) / "kafka") as broker,
    ):
        k = probe_k(ml, rate)
        cfg = config.with_overrides(
            {
                "kafka": {"bootstrap_servers": broker.bootstrap_servers, "catalog_topic": TOPIC},
                "serving": {"max_k": max(config.serving.max_k, k)},
            }
        )
        kc = cfg.kafka
        ensure_topic(cfg, topic=kc.catalog_topic, partitions=kc.catalog_partitions)
        yield cfg


@dataclass(frozen=True)
class Probe:
    """One answer: when it was asked, when it came back, the items it held."""

    asked: float
    answered: float
    items: frozenset[str]


@dataclass(frozen=True)
class Outcome:
    """What the answers say about each change (seconds from its send to the answer)."""

    upserts: dict[str, float]
    deletes: dict[str, float]
    unseen: list[str]
    """New items no answer ever held."""
    undeleted: list[str]
    """Deleted items the last answer still held."""
    relapsed: list[str]
    """Deleted items answered again after an answer (asked after the delete) without them."""


def outcome(
    probes: Sequence[Probe], upserts: dict[str, float], deletes: dict[str, float]
) -> Outcome:
    """Each change's latency from the answers, in the order they were asked (one at a time).

    Args:
        probes: The answers.
        upserts: New item → when its upsert was sent.
        deletes: Deleted item → when its delete was sent.
    """
    order = sorted(probes, key=lambda p: p.asked)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, probe in enumerate(order):
        for item in probe.items:
            first.setdefault(item, i)
            last[item] = i
    up: dict[str, float] = {}
    unseen = []
    for item, sent in upserts.items():
        # The first answer holding it at or after the send (ids are never reused).
        at = first.get(item)
        if at is None:
            unseen.append(item)
        else:
            up[item] = max(order[at].answered - sent, 0.0)
    down: dict[str, float] = {}
    undeleted, relapsed = [], []
    for item, sent in deletes.items():
        final = last.get(item)
        if final is None:
            continue  # never answered (a new item deleted unseen: counted there)
        if final == len(order) - 1:
            undeleted.append(item)
            continue
        gone = final + 1
        # Relapse: an answer asked after the delete without it, then one with it again.
        without = next(
            (i for i in range(len(order)) if order[i].asked >= sent and item not in order[i].items),
            None,
        )
        if without is not None and without < final:
            relapsed.append(item)
        down[item] = max(order[gone].answered - sent, 0.0)
    return Outcome(up, down, unseen, undeleted, relapsed)


@dataclass
class CatalogStream:
    """Sends :func:`schedule`'s changes at ``rate`` for ``seconds`` (run beside Locust) and
    probes the server at ``address`` as the user ``user``; the producer and the prober run on
    ``cpus`` (the load generator's)."""

    config: Config
    ml: Dataset
    address: str
    user: str
    rate: float
    seconds: float
    cpus: set[int] | None
    upserts: dict[str, float] = field(default_factory=dict)
    deletes: dict[str, float] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)
    probe_errors: int = 0
    sending_s: float = 0.0
    settled: bool = False
    """An answer after the stream was exactly the final catalog."""
    error: Exception | None = None

    def __call__(self) -> None:
        from kafka import KafkaProducer

        pin(self.cpus)  # this thread, and the prober it starts
        changes = schedule(self.ml, int(self.rate * self.seconds), self.rate)
        final = {str(i) for i in self.ml.items["item_id"]}
        for change in changes:
            if change.features is None:
                final.discard(change.item_id)
            else:
                final.add(change.item_id)
        done = threading.Event()
        prober = threading.Thread(
            target=self._probe, args=(done, frozenset(final)), name="catalog-prober", daemon=True
        )
        kc = self.config.kafka
        producer = KafkaProducer(bootstrap_servers=kc.bootstrap_servers, acks="all", linger_ms=5)
        prober.start()
        try:
            started = time.perf_counter()
            for n, change in enumerate(changes):
                now_ms = int(time.time() * 1000)
                event = f"load-{n}"
                if change.features is None:
                    key, value = encode_delete(change.item_id, now_ms, event)
                    self.deletes[change.item_id] = time.perf_counter()
                else:
                    key, value = encode_upsert(change.item_id, change.features, now_ms, event)
                    self.upserts[change.item_id] = time.perf_counter()
                producer.send(kc.catalog_topic, key=key, value=value)
                ahead = (n + 1) / self.rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush()
            self.sending_s = time.perf_counter() - started
        finally:
            producer.close()
            done.set()
            prober.join()
        if self.error is not None:
            raise RecsysError(f"the catalog prober failed: {self.error}")

    def _probe(self, done: threading.Event, final: frozenset[str]) -> None:
        try:
            self._poll(done, final)
        except Exception as exc:  # reported by __call__, not lost with the thread
            self.error = exc

    def _poll(self, done: threading.Event, final: frozenset[str]) -> None:
        import grpc

        from serving.client import RecommendClient

        pin(self.cpus)
        k = self.config.serving.max_k
        period = 1 / PROBES_PER_S
        give_up: float | None = None
        after = 0  # answers read since one was the final catalog
        with RecommendClient(self.address) as client:
            while after < SETTLED_PROBES:
                asked = time.perf_counter()
                if done.is_set():
                    give_up = give_up or asked + GIVE_UP_S
                    if asked > give_up:
                        return
                try:
                    reply = client.recommend(self.user, k=k, include_seen=True, timeout=5.0)
                except grpc.RpcError:
                    self.probe_errors += 1
                else:
                    items = frozenset(i.item_id for i in reply.items)
                    self.probes.append(Probe(asked, time.perf_counter(), items))
                    if done.is_set() and (self.settled or items == final):
                        self.settled = True
                        after += 1
                time.sleep(max(period - (time.perf_counter() - asked), 0.0))

    def report(self) -> tuple[str, dict[str, object]]:
        """(summary lines, facts for ``result.json``)."""
        if not self.sending_s:
            raise RecsysError("the catalog stream did not finish")
        got = outcome(self.probes, self.upserts, self.deletes)
        sent = len(self.upserts) + len(self.deletes)
        up = percentiles(np.array(list(got.upserts.values())) * 1000, (50, 99))
        down = percentiles(np.array(list(got.deletes.values())) * 1000, (50, 99))
        text = (
            f"catalog: {sent:,} changes at {sent / self.sending_s:,.0f}/s (asked "
            f"{self.rate:g}/s) through Kafka into the server's overlay; {len(self.probes):,} "
            f"probes ({PROBES_PER_S:g}/s, every item the server would recommend)\n"
            f"  upsert → recommendable p50 {up['p50']:.0f} ms, p99 {up['p99']:.0f} ms, max "
            f"{up['max']:.0f} ms ({len(got.upserts)}/{len(self.upserts)} answered)\n"
            f"  delete → never served again p50 {down['p50']:.0f} ms, p99 {down['p99']:.0f} ms,"
            f" max {down['max']:.0f} ms ({len(got.deletes)}/{len(self.deletes)} gone, "
            f"{len(got.relapsed)} answered again after)\n"
            f"  an answer after the stream was exactly the final catalog: "
            f"{'yes' if self.settled else 'NO'}; probe errors {self.probe_errors}"
        )
        facts: dict[str, object] = {
            "rate": self.rate,
            "achieved_rate": sent / self.sending_s,
            "upserts": len(self.upserts),
            "deletes": len(self.deletes),
            "probes": len(self.probes),
            "probe_errors": self.probe_errors,
            "upsert_p50_ms": up["p50"],
            "upsert_p99_ms": up["p99"],
            "upsert_max_ms": up["max"],
            "delete_p50_ms": down["p50"],
            "delete_p99_ms": down["p99"],
            "delete_max_ms": down["max"],
            "unseen": len(got.unseen),
            "undeleted": len(got.undeleted),
            "relapsed": len(got.relapsed),
            "settled": self.settled,
        }
        return text, facts


def broken(facts: dict[str, object]) -> list[str]:
    """What failed the run: changes never applied, or a deleted item served again."""
    out = []
    if facts["unseen"]:
        out.append(f"{facts['unseen']} new items never answered")
    if facts["undeleted"]:
        out.append(f"{facts['undeleted']} deleted items still answered at the end")
    if facts["relapsed"]:
        out.append(f"{facts['relapsed']} deleted items answered again")
    if not facts["settled"]:
        out.append("no answer after the stream was the final catalog")
    return out
