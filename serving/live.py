"""The serving pair, replaced whole: load beside, verify, warm, swap one reference.

The servicer reads ``Live.recommender`` once per request, so a request that started on the
old pair finishes on it while new requests take the new one; nothing serving is ever
mutated (FAISS indexes are not safe to modify while searched). A pair that fails to load or
verify is refused and the old one keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from index.versions import rollback
from recsys import artifacts
from recsys.config import Config
from recsys.errors import ArtifactError
from serving.bundle import Bundle
from serving.catalog_feed import CatalogFeed
from serving.item_feed import ItemFeed
from serving.metrics import ServingMetrics
from serving.recommender import Features, Recommender
from serving.request import Request

log = logging.getLogger(__name__)
PROBE_USERS = 8


@dataclass(frozen=True)
class Status:
    model_version: str
    index_version: str
    items: int
    swaps: int
    last_error: str


def verify(recommender: Recommender) -> None:
    """Answers probe requests on a new pair before it may serve.

    Raises:
        ArtifactError: an answer is short, repeats items or has non-finite scores.
    """
    bundle = recommender.bundle
    k = min(10, len(bundle.item_ids))
    users = [*bundle.space.users.values[:PROBE_USERS], "__probe_unknown_user__"]
    for user in users:
        answer = recommender.recommend(Request(user, k=k, include_seen=True))
        ids = [i.item_id for i in answer.items]
        scores = np.array([i.score for i in answer.items], np.float64)
        if len(ids) != k or len(set(ids)) != k or not np.isfinite(scores).all():
            raise ArtifactError(
                f"index {bundle.index_version} failed its probe for user {user!r}: "
                f"{len(ids)} items, {len(set(ids))} distinct, scores {scores[:3]}"
            )


def check_profile(bundle: Bundle, features: Features) -> None:
    """Refuses a model whose user features are not the store's profile features, in order:
    its tower would read one feature's value as another's.

    Raises:
        ArtifactError: they differ (the model and the store come from different schemas).
    """
    stored = getattr(features, "profile", None)
    if stored is None:  # a features source without a profile view to compare (tests)
        return
    trained = tuple(f.name for f in bundle.space.user_features)
    if tuple(stored) != trained:
        raise ArtifactError(
            f"model {bundle.model_version} reads the user features {list(trained)}, but the "
            f"feature store's profile view holds {list(stored)}: the two come from different "
            "data schemas; run `recsys init-features` with the model's schema, or retrain"
        )


def warm_up(recommender: Recommender, requests: int) -> None:
    """Runs the hot path (personalized, cold-start, filtered) until first-call costs are paid."""
    bundle = recommender.bundle
    users = list(bundle.space.users.values[:50]) or ["__warmup__"]
    genres = bundle.meta.filter_values[:1]
    for i in range(requests):
        user = users[i % len(users)] if i % 4 else f"__warmup_{i}__"
        recommender.recommend(Request(user, k=10, include_genres=genres if i % 8 == 1 else ()))


class Live:
    """Holds the serving ``Recommender`` and replaces it on reload or rollback."""

    def __init__(
        self,
        config: Config,
        features: Features,
        metrics: ServingMetrics | None = None,
    ):
        self._config = config
        self._features = features
        self._metrics = metrics
        self._reload_lock = threading.Lock()
        self._refused: str | None = None
        self.swaps = 0
        self.last_error = ""
        self.recommender = self._load(artifacts.current(config.indexes_dir).name)
        if metrics is not None:
            metrics.serving(self.recommender)

    def _load(self, index_version: str) -> Recommender:
        cfg = self._config
        bundle = Bundle.load(
            cfg.models_dir,
            cfg.indexes_dir / index_version,
            runtime=cfg.serving.tower_runtime,
            ranker=cfg.serving.ranker,
        )
        check_profile(bundle, self._features)
        recommender = Recommender(bundle, self._features, cfg.serving)
        verify(recommender)
        warm_up(recommender, cfg.serving.warmup_requests)
        if cfg.serving.catalog_feed:
            _follow_catalog(cfg, recommender, self._metrics)
        if bundle.ranker is not None and cfg.serving.ranker_feed:
            feed = recommender.feed = ItemFeed(cfg.kafka, bundle.ranker, bundle.seen).start()
            if not feed.caught_up.wait(cfg.serving.ranker_feed_wait_seconds):
                log.warning(
                    "the ranker's item feed has not caught up with the topic; serving anyway",
                    extra={"index_version": index_version, "events": feed.events},
                )
        return recommender

    def stop_feeds(self) -> None:
        """Stops the serving pair's topic feeds (at shutdown; a swap stops the old pair's)."""
        for feed in (self.recommender.feed, self.recommender.catalog_feed):
            if feed is not None:
                feed.stop()

    def status(self) -> Status:
        b = self.recommender.bundle
        return Status(
            b.model_version, b.index_version, len(b.item_ids), self.swaps, self.last_error
        )

    def reload(self) -> Status:
        """Serves the pair ``CURRENT`` names, if it is not the one serving.

        Raises:
            ArtifactError: the new pair failed to load or verify; the old one still serves.
        """
        with self._reload_lock:
            target = artifacts.current(self._config.indexes_dir).name
            serving = self.recommender.bundle.index_version
            if target == serving:
                return self.status()
            started = time.perf_counter()
            try:
                fresh = self._load(target)
            except ArtifactError as exc:
                self.last_error = str(exc)
                self._refused = target
                if self._metrics is not None:
                    self._metrics.refused.inc()
                log.error(
                    "refused index version; the old pair keeps serving",
                    extra={"index_version": target, "serving": serving, "error": str(exc)},
                )
                raise
            old, self.recommender = self.recommender, fresh  # the swap: one assignment
            for feed in (old.feed, old.catalog_feed):
                if feed is not None:
                    feed.stop()
            self.swaps += 1
            self.last_error = ""
            self._refused = None
            if self._metrics is not None:
                self._metrics.swaps.inc()
                self._metrics.serving(fresh)
            log.info(
                "swapped model+index pair",
                extra={
                    "index_version": target,
                    "model_version": fresh.bundle.model_version,
                    "previous": serving,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
            return self.status()

    def rollback(self, to: str | None = None) -> Status:
        """Points ``CURRENT`` back (verified first), then reloads."""
        rollback(self._config.indexes_dir, to)
        return self.reload()

    def watch(self, stop: threading.Event) -> threading.Thread:
        """Polls ``CURRENT`` every ``serving.reload_poll_seconds`` and reloads on change; a
        refused version is not retried until ``CURRENT`` moves again."""
        interval = self._config.serving.reload_poll_seconds

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    target = artifacts.current(self._config.indexes_dir).name
                    if target not in (self.recommender.bundle.index_version, self._refused):
                        self.reload()
                except ArtifactError:
                    pass  # logged by reload, or CURRENT is mid-publish: the next poll sees it
                except Exception:
                    log.exception("index watcher failed; the current pair keeps serving")

        thread = threading.Thread(target=loop, name="index-watcher", daemon=True)
        thread.start()
        return thread


def _follow_catalog(
    config: Config, recommender: Recommender, metrics: ServingMetrics | None
) -> None:
    """Starts the recommender's catalog feed from its version's offsets and waits (up to
    ``serving.catalog_feed_wait_seconds``) until it has applied the topic up to its end: a
    server that reports SERVING serves the catalog its peers serve. With no broker's port
    answering it does not wait; the feed keeps trying."""
    from features.events import broker_answers
    from recsys.data.schema import configured_schema
    from towers.runtime import NumpyItemTower

    bundle = recommender.bundle
    topic = config.kafka.catalog_topic
    if bundle.catalog_topic not in (None, topic):
        log.warning(
            "the index version was built from catalog topic %r, not %r: its overlay starts "
            "at the beginning of %r",
            bundle.catalog_topic,
            topic,
            topic,
            extra={"index_version": bundle.index_version},
        )
    feed = recommender.catalog_feed = CatalogFeed(
        config.kafka,
        configured_schema(config),
        bundle,
        NumpyItemTower.load(config.models_dir / bundle.model_version),
        bundle.catalog_start(topic),
        recommender.set_overlay,
        None if metrics is None else metrics.catalog,
    ).start()
    if not broker_answers(config.kafka.bootstrap_servers):
        return
    if not feed.caught_up.wait(config.serving.catalog_feed_wait_seconds):
        log.warning(
            "the catalog feed has not caught up with the topic; serving anyway",
            extra={"index_version": bundle.index_version},
        )
