"""``recsys ingest`` put together once, for the command and the tests: the online store,
the topic and the catalog around the consumer loop of ``features.stream.ingest``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

from features.store import OnlineFeatures
from features.stream.fold import IngestStats
from features.stream.ingest import rebuild, run
from features.stream.metrics import IngestMetrics
from recsys.config import Config
from recsys.errors import StoreUnavailableError


class Ingester:
    """``recsys ingest`` put together from the config: its online store, its topic and the
    catalog events are checked against. The command and the tests start it the same way.

    Use :meth:`open` for the live loop (it checks the store answers and that the topic
    exists, so a setup mistake is told in one line at the start) and :meth:`run`; or
    ``open(..., check_store=False)`` and :meth:`rebuild` after a store loss.
    """

    def __init__(self, config: Config, features: OnlineFeatures, catalog: Collection[str] | None):
        self.config = config
        self.features = features
        self.catalog = catalog

    @classmethod
    def open(
        cls, config: Config, catalog: Collection[str] | None, *, check_store: bool = True
    ) -> Ingester:
        """Opens the online store, checks it answers (unless ``check_store`` is false) and
        creates the topic if it is missing.

        Raises:
            StoreUnavailableError: the store does not answer, with where it was looked for.
        """
        from features.store import open_store
        from features.stream.replay import ensure_topic

        features = OnlineFeatures(open_store(config, timeout_ms=config.kafka.store_timeout_ms))
        if check_store:
            # A store that is not there at the start is a setup mistake, told in one line;
            # one that goes away later is an outage the loop rides out.
            try:
                features.read_activity(["recsys-ingest-startup-check"])
            except StoreUnavailableError as exc:
                kind = config.feast.online_store
                where = config.feast.redis if kind == "redis" else config.feast_dir / "online.db"
                raise StoreUnavailableError(
                    f"the {kind} online store at {where} does not answer "
                    f"({exc.__cause__ or exc}): start it first (a running ingester rides out "
                    "later outages)"
                ) from exc
        ensure_topic(config)
        return cls(config, features, catalog)

    def run(
        self,
        stop: threading.Event,
        *,
        metrics: IngestMetrics | None = None,
        on_batch: Callable[[IngestStats], None] | None = None,
    ) -> IngestStats:
        """The live loop (:func:`run`) until ``stop`` is set."""
        return run(
            self.config,
            self.features,
            stop,
            catalog=self.catalog,
            metrics=metrics,
            on_batch=on_batch,
        )

    def rebuild(self, stop: threading.Event | None = None) -> IngestStats:
        """Puts the offline backfill back, then folds the whole retained topic into the store
        again (:func:`rebuild`): the recovery after a store loss."""
        from features.backfill import restore

        restore(self.config)
        return rebuild(self.config, self.features, catalog=self.catalog, stop=stop)
