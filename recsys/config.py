"""One typed configuration, loaded once and passed down.

Sources, later wins: the defaults below, a YAML file (``--config`` or ``RECSYS_CONFIG``), then
environment overrides ``RECSYS_<SECTION>__<KEY>`` (values parsed as YAML scalars), e.g.
``RECSYS_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9093``. Relative paths resolve against the
directory the process runs in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recsys.errors import ConfigError

ENV_PREFIX = "RECSYS_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class PathsConfig(_Section):
    data_dir: Path = Path(".cache/data")
    """Where the ML-100K files are downloaded and extracted."""
    dataset: Path | None = None
    """An official GroupLens ``ml-100k/`` folder to use instead of the download."""
    artifacts: Path = Path("artifacts")
    """Root of ``models/<version>`` and ``indexes/<version>`` plus their ``CURRENT`` pointers."""
    state: Path = Path(".state")
    """Run-time state: the Feast registry and online store, the local broker's log dirs."""
    kafka_jars: Path = Path(".cache/kafka/libs")
    kafka_pom: Path = Path("features/kafka/pom.xml")

    @field_validator("*")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Resolved once, at load, so child processes and Feast (which resolves relative paths
        # against its repo folder) all see the same files.
        return None if value is None else value.absolute()


class DataConfig(_Section):
    # Named schema_file in code: ``schema`` is a BaseModel attribute. The key is ``schema``.
    model_config = ConfigDict(populate_by_name=True)
    schema_file: Path | None = Field(None, alias="schema")
    """The data schema (``recsys/data/schema.py``): which files hold the events, the catalog
    and the user profiles, and what their columns are. Unset: MovieLens-100K's
    (``recsys/data/ml-100k.yaml``), fetched by ``recsys fetch-data``."""

    @field_validator("schema_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.absolute()


class ModelConfig(_Section):
    embedding_dim: int = Field(64, ge=4, le=1024)
    history_length: int = Field(20, ge=1, le=500)
    """How many of a user's most recent items feed the user tower (and exclude-seen)."""
    user_parts: tuple[Literal["profile", "history", "time"], ...] = ("profile", "history", "time")
    """User-tower inputs beside the user id (ablations drop some)."""
    history_pooling: Literal["mean", "position"] = "position"
    """Recent items pooled with a learned weight per recency rank (``position``) or by
    their plain mean; chosen on the stream protocol's validation part (BENCHMARKS.md)."""
    item_parts: tuple[str, ...] | None = None
    """Item-tower inputs beside the item id: names of the data schema's item features
    (unset: every declared one)."""
    epochs: int = Field(15, ge=1)
    """The most epochs; with a validation part the best epoch by NDCG@10 is kept."""
    batch_size: int = Field(1024, ge=8)
    optimizer: Literal["adam", "lazy_adam", "adagrad"] = "lazy_adam"
    """``lazy_adam`` updates only the embedding rows a batch touched (``adam`` rewrites every
    row of every table each step: its step time grows with the catalog and the users)."""
    learning_rate: float = Field(0.003, gt=0)
    temperature: float | None = Field(0.2, gt=0)
    """Softmax temperature; ``None`` for none (1.0)."""
    normalize: bool = True
    """L2-normalize both towers' outputs (scores are cosines / temperature)."""
    logq: bool = True
    """Correct in-batch negatives for popularity (``candidate_sampling_probability``)."""
    remove_accidental_hits: bool = True
    oov_rate: float = Field(0.1, ge=0, lt=1)
    """Share of training examples whose user id is replaced by the unknown bucket, so the
    tower learns to serve new users from their profile and streamed history."""
    item_oov_rate: float = Field(0.1, ge=0, lt=1)
    """Share of training examples whose item id (in the item tower) is replaced by the
    unknown bucket each epoch, so the tower learns to place an item it knows only by its
    features: a new item from the catalog topic. 0.1 won on the stream protocol's validation
    part (0, 0.05, 0.1, 0.2 and 0.3 tried: the best new-item NDCG@10 of those within 1 % of
    no dropout's NDCG@10; BENCHMARKS.md)."""
    history_dropout: float = Field(0.0, ge=0, lt=1)
    """Share of training examples whose history is blanked each epoch, so the tower keeps
    learning from the user id and profile instead of leaning on the sequence alone. 0 won on
    the stream protocol's validation part (0.5, 0.25, 0.1 and 0 tried; BENCHMARKS.md); every
    user's first event still trains the empty-history case."""
    recency_half_life_days: float | None = Field(None, gt=0)
    """Weight each training example by ``0.5 ** (age / half-life)``, its age counted back from
    the newest training interaction (weights rescaled to mean 1); ``None`` weighs all alike."""
    ranker: bool = False
    """Train the second stage too: the towers on the oldest 90 % of the past, a LightGBM
    ranker over the candidate sources on the next 10 % (``evaluation.pipeline``), written
    into the model version; ``serving.ranker: gbdt`` serves it."""
    seed: int = 42
    test_fraction: float = Field(0.2, gt=0, lt=1)
    valid_fraction: float = Field(0.1, ge=0, lt=1)
    """Last share of the training period held out to pick the best epoch (0: none)."""
    stream_eval_events: int = Field(50_000, ge=100)
    """The most events of a part the stream protocol scores against the whole catalog: a
    seeded uniform sample of a longer part (every event still updates the states).
    ML-100K's parts are smaller: all scored."""
    stream_eval_scores: int = Field(2_500_000_000, ge=1_000_000)
    """The most scores one ranking of a part computes (events × catalog items): a larger
    catalog scores fewer events (``stream_events``), so evaluation time stays bounded: 1 M
    items score 2,500 events, each against every item (about 15 s a model or baseline)."""

    def stream_events(self, items: int) -> int:
        """Events the stream protocol scores per part for a catalog of ``items``."""
        return max(100, min(self.stream_eval_events, self.stream_eval_scores // max(items, 1)))


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "recsys.interactions.v1"
    dead_letter_topic: str = "recsys.interactions.v1.dlq"
    """Where events the ingester cannot use go, with the reason in a ``reason`` header."""
    partitions: int = Field(4, ge=1)
    catalog_topic: str = "recsys.catalog.v1"
    """Item changes (``recsys.v1.CatalogEvent``, keyed by item id): upserts and deletes."""
    catalog_dead_letter_topic: str = "recsys.catalog.v1.dlq"
    """Where catalog events no server can use go, with the reason in a ``reason`` header."""
    catalog_partitions: int = Field(1, ge=1)
    catalog_group_id: str = "recsys-catalog-check"
    """The group of the one consumer that dead-letters unusable catalog events
    (``recsys ingest`` runs it)."""
    group_id: str = "recsys-ingester"
    poll_max_records: int = Field(2000, ge=1)
    poll_timeout_ms: int = Field(100, ge=1)
    state_cache_users: int = Field(100_000, ge=0)
    """Users whose activity state the ingester keeps between batches (0: read every batch)."""
    store_timeout_ms: int = Field(2000, ge=1)
    """The longest one online-store read or write of the ingester may wait (Redis)."""
    store_retry_max_ms: int = Field(1000, ge=1)
    """The ingester retries a failed store write after 100 ms, doubling up to this."""
    bootstrap_timeout_ms: int = Field(30_000, ge=1)
    """How long a command waits for a first broker before it says none answers
    (kafka-python's default)."""
    feed_fetch_wait_ms: int = Field(100, ge=0)
    """A server's topic feeds (the catalog's, the ranker's items') ask the broker to gather
    what arrives within this long into one fetch: fewer, larger batches (each costs the
    server a round trip and an overlay swap) for at most this much more delay. 0: a fetch
    returns as soon as one record is there."""


class FeastConfig(_Section):
    project: str = "recsys"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    """``sqlite``: a file under ``paths.state`` (embedded default); ``redis``: a server."""
    redis: str = "127.0.0.1:6379"
    """``host:port[,options]`` of the Redis server when ``online_store`` is ``redis``."""


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    """0 picks a free port (tests)."""
    processes: int = Field(1, ge=1)
    """Server processes sharing the port (``SO_REUSEPORT``); ``recsys serve --workers N``. Worker
    i's admin and metrics ports are ``admin_port + i`` and ``metrics_port + i``."""
    workers: int = Field(8, ge=1)
    """gRPC worker threads per process: the most calls in it at once, so the largest batch."""
    max_batch: int = Field(64, ge=1)
    """The most waiting requests served together in one batch."""
    max_k: int = Field(100, ge=1)
    max_exclude: int = Field(1000, ge=0)
    max_id_length: int = Field(128, ge=1)
    max_genres: int = Field(32, ge=0)
    """Most genre names a request may list in include_genres plus exclude_genres."""
    max_fetch: int = Field(4096, ge=1)
    """Most candidates one search may fetch while over-fetching to survive filters."""
    ranker: Literal["gbdt", "none"] = "none"
    """``gbdt``: the model's ranker orders the candidate sources' union (a model without
    one is refused); ``none``: the two-tower search's order."""
    catalog_feed: bool = True
    """Each server follows ``kafka.catalog_topic`` and serves its items' changes between
    rebuilds (an overlay beside the index; ``serving/catalog_feed.py``)."""
    catalog_feed_wait_seconds: float = Field(10.0, ge=0)
    """How long a load waits for the catalog feed to apply the topic past the version's
    offsets before it serves anyway (no wait when no broker's port answers)."""
    ranker_feed: bool = True
    """With ``ranker: gbdt``, keep the ranker's item state (popularity windows, trending)
    current from the interactions topic (``kafka.*``); off: the state saved at training."""
    ranker_feed_wait_seconds: float = Field(5.0, ge=0)
    """How long a load waits for the item feed to catch up with the topic before serving."""
    tower_runtime: Literal["numpy", "savedmodel"] = "numpy"
    """``numpy``: the exported weights in NumPy (tens of µs); ``savedmodel``: the TF
    SavedModel (for comparison; imports TensorFlow into the server)."""
    store_timeout_ms: int = Field(25, ge=1)
    """Bound on one online-store read; slower reads answer from default features (degraded)."""
    store_retry_seconds: float = Field(1.0, gt=0)
    """After a failed read, requests skip the store (degraded) this long before trying again."""
    profile_cache_seconds: float = Field(30.0, ge=0)
    """How stale a served profile may be (0: read it every request). Activity is never cached."""
    profile_cache_users: int = Field(100_000, ge=1)
    admin_port: int = Field(50052, ge=0, le=65535)
    """Reload, rollback and status (RecommenderAdmin), on ``admin_host`` only. 0 picks a port."""
    admin_host: str = "127.0.0.1"
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Prometheus ``/metrics`` over HTTP on ``admin_host``; unset: not served."""
    reload_poll_seconds: float = Field(2.0, ge=0)
    """How often the index CURRENT pointer is checked for a new pair (0: only on Reload)."""
    warmup_requests: int = Field(200, ge=0)
    """Requests run on a freshly loaded pair before it serves (first-call costs)."""
    timing_trailer: bool = False
    """Send each request's stage times as trailing metadata ``recsys-timing-us`` (benchmarks)."""
    max_request_bytes: int = Field(262_144, ge=1024)
    """Largest request message the public port accepts; gRPC refuses a larger one with
    RESOURCE_EXHAUSTED before it is read. The default holds ``max_exclude`` ids of
    ``max_id_length`` characters with room to spare."""
    refused_log_seconds: float = Field(10.0, gt=0)
    """Undecodable requests are logged at most once per this many seconds, with a count."""
    drain_seconds: float = Field(5.0, ge=0)
    """On SIGTERM, how long in-flight calls get to finish after new ones are refused."""


IndexType = Literal["auto", "flat", "ivf", "ivf-sq8", "hnsw"]
"""An index kind, or ``auto`` (flat below ``index.exact_below`` items, IVF from there)."""


class IndexConfig(_Section):
    type: IndexType = "auto"
    """``auto``: exact ``flat`` below ``exact_below`` items, ``ivf`` (IVF-Flat) from there.
    ``ivf-sq8`` stores 8-bit codes (4× less memory); ``hnsw`` is a graph (no training)."""
    exact_below: int = Field(100_000, ge=1)
    nlist: int = Field(0, ge=0)
    """IVF lists; 0 picks 4·√items rounded to a power of two (4,096 at 1M items)."""
    hnsw_m: int = Field(32, ge=4)
    min_recall: float = Field(0.95, gt=0.0, le=1.0)
    """Recall@10 against exact search a new index must reach before it is published."""
    verify_queries: int = Field(500, ge=10)
    """User-tower queries (random users at random moments of ML-100K) used to verify."""
    keep_versions: int = Field(5, ge=2)
    """Index versions kept on disk (the current one and the newest others)."""
    synthetic_items: int = Field(0, ge=0)
    """0: index ML-100K's catalog; N: a synthetic catalog of N items (the real ones first)."""
    fold_catalog_topic: bool = True
    """``recsys build-index`` folds the catalog topic's changes (``kafka.catalog_topic``) into
    the data set's or ``index.catalog``'s items and records the offsets it read up to; with
    no broker answering it indexes without them (servers then apply the whole topic)."""
    chunk_items: int = Field(100_000, ge=1)
    """Items embedded and added per step: memory stays bounded for any catalog size."""
    catalog: Path | None = None
    """A Parquet catalog (file or folder: ``item_id``, ``title``, ``release_year``,
    ``genres``) to index instead of ML-100K's or the synthetic one."""
    engine: Literal["local", "spark"] = "local"
    """``local``: this process, in chunks. ``spark``: embed, add and verify in Spark
    executors, one shard per partition, merged on the driver (``index/spark.py``)."""
    spark_master: str = "local[*,4]"
    """The Spark master URL; ``local[N,F]`` runs N task slots here, each task tried F times."""
    spark_partitions: int = Field(0, ge=0)
    """Shards (partitions by item-id hash); 0: two per task slot, at most 250k items each."""
    spark_scratch: Path | None = None
    """Where executors write their shards (and a generated catalog as Parquet) for the
    driver to merge: a path the driver and every executor can reach (on a cluster, shared
    storage). Default: a staging folder beside the index versions."""

    @field_validator("catalog", "spark_scratch")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.absolute()


class LoadTestConfig(_Section):
    rate: float = Field(1000.0, gt=0)
    """Requests per second offered: Poisson arrivals at this mean rate, whatever the server does
    (open loop); latency counts from each arrival's due time."""
    seconds: float = Field(60.0, gt=0)
    users: int = Field(10, ge=1)
    """Simulated callers, each with its own channel; the rate is split between them. Locust's
    own latency grows with users on its one core (BENCHMARKS.md): 10 sustain 1,000/s."""
    connections: int = Field(0, ge=0)
    """TCP connections the users share; 0: one for a one-process server, eight per worker for
    several (``SO_REUSEPORT`` spreads connections, not calls)."""
    new_user_share: float = Field(0.1, ge=0, le=1)
    """Share of calls from users the model never saw (cold start)."""
    slo_p99_ms: float = Field(10.0, gt=0)
    slo_p999_ms: float | None = Field(None, gt=0)
    """The run fails when p99 (or p99.9, when set) is above these, or any request fails."""


class Config(_Section):
    # Factories, not instances: default paths resolve when a config is loaded, not at import.
    paths: PathsConfig = Field(default_factory=PathsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    feast: FeastConfig = Field(default_factory=FeastConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    loadtest: LoadTestConfig = Field(default_factory=LoadTestConfig)

    @property
    def models_dir(self) -> Path:
        return self.paths.artifacts / "models"

    @property
    def indexes_dir(self) -> Path:
        return self.paths.artifacts / "indexes"

    @property
    def feast_dir(self) -> Path:
        return self.paths.state / "feast"

    # Any: raw values; pydantic validates them.
    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> Config:
        """Returns a copy with ``{section: {key: value}}`` applied and validated."""
        data = self.model_dump(by_alias=True)
        for section, values in overrides.items():
            data.setdefault(section, {}).update(values)
        return _validate(data, source="overrides")


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Loads the configuration.

    Args:
        path: A YAML file; ``None`` uses ``RECSYS_CONFIG`` if set, else the defaults.
        environ: The environment to read overrides from (``os.environ`` by default).

    Raises:
        ConfigError: naming the file or variable and the key that is wrong.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}  # Any: raw YAML; pydantic validates it
    source = "defaults"
    if path is None and env.get("RECSYS_CONFIG"):
        path = Path(env["RECSYS_CONFIG"])
    if path is not None:
        source = str(path)
        loaded = read_yaml(path, "config file")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        data = loaded or {}
    overridden = False
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == "RECSYS_CONFIG":
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not sep or not key:
            raise ConfigError(f"environment variable {name} must look like RECSYS_<SECTION>__<KEY>")
        section_data = data.setdefault(section, {})
        if not isinstance(section_data, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        try:
            section_data[key] = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {name}={raw!r} is not a valid value") from exc
        overridden = True
    if overridden:
        source = f"{source} + environment"
    return _validate(data, source=source)


def read_yaml(path: Path, what: str) -> Any:  # Any: raw YAML, validated by the caller
    """A YAML file's content.

    Raises:
        ConfigError: the file cannot be read or is not YAML, naming ``what`` and the file.
    """
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc


def problems(exc: ValidationError) -> str:
    """A pydantic error as ``key.path: what is wrong`` clauses, one line."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'top level'}: {err['msg']}"
        for err in exc.errors()
    )


def _validate(data: dict[str, Any], *, source: str) -> Config:  # Any: raw YAML
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration from {source}: {problems(exc)}") from exc
