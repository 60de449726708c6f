"""The serving read path: the features of a batch of users, through Feast's online-store
interface, bounded in time, with an explicit, bounded profile cache.

``FeatureStore.get_online_features`` costs ~0.4 ms a call here, most of it generic
request assembly (entity-row dicts, registry lookups, Arrow and proto conversions) that
answers the same question every time. The hot path instead reads through the online store
(Feast's ``OnlineStore`` interface) with the feature views resolved once from the registry,
for a whole batch of users at once. On Feast's SQLite and Redis stores it reads through
leaner subclasses of them (``features.online.sqlite``, ``features.online.redis``: the same
tables and hashes, the key serialized and the field names hashed once); on Redis both views
of a batch come back in one pipelined round trip. Any other store is read with its own
``online_read``, once per view. The registry is never read per request, so a registry
refresh cannot stall one.

Profiles are batch-materialized and change rarely; the activity view is what the stream
writes. So activity is read on every request (freshness is the product), and profiles may be
cached for ``serving.profile_cache_seconds`` (0 turns the cache off): that is the bound on
how stale a served profile can be.

Reads are bounded by ``serving.store_timeout_ms`` (the Redis socket timeout, the SQLite busy
timeout). A read that fails or times out makes ``read_many`` return ``None`` (the caller
answers the whole batch from default features, flagged degraded), and for
``serving.store_retry_seconds`` requests do not touch the store at all, so an outage costs
one timeout, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from features.activity import EMPTY, Activity
from features.online.redis import Row, ServingRedisOnlineStore
from features.online.sqlite import ServingSqliteOnlineStore
from features.repo.definitions import ACTIVITY_VIEW, PROFILE_VIEW
from features.store import open_store, profile_names
from features.user import UserFeatures
from recsys.config import Config

if TYPE_CHECKING:
    from feast.infra.online_stores.online_store import OnlineStore

log = logging.getLogger(__name__)
ACTIVITY_READ = ("recent_items", "last_event_ms", "last_event_id")
"""What a request reads of each view, a subset of its features. Passed as fresh lists:
Feast's Redis ``online_read`` appends to the list it is given."""
EVENT_COUNT = "event_count"
"""Optional: orders the state's writes, and the ranker reads it (the user's activity)."""
SEEN = "seen_items"
"""Optional: a state written before seen sets existed has none, and exclude-seen falls back
to its recent items."""
_JOIN_KEYS = ["user_id"]
Profile = tuple[Any, ...] | None  # Any: a value of each feature's kind
"""The profile features' values in the data schema's order, or None when the store has no
profile."""
_VALUE_FIELDS = {"String": "string_val", "Float64": "double_val", "Array(String)": None}


def _value(value: Value | None, list_field: bool, field: str | None) -> Any:  # Any: see Profile
    """A Feast ``Value`` as the canonical value of its feature (``None`` when unset)."""
    if value is None or not value.WhichOneof("val"):
        return None
    if list_field:
        return tuple(value.string_list_val.val)
    return getattr(value, field or "string_val")


def _present(values: dict[str, Value] | None, names: Iterable[str]) -> TypeGuard[dict[str, Value]]:
    # SQLite returns no dict for an absent entity; Redis returns empty values.
    if not values:
        return False
    return any(values[n].WhichOneof("val") for n in names if n in values)


class FeatureReader:
    """Reads one user's profile and activity for a Recommend request."""

    def __init__(self, config: Config):
        from feast.infra.provider import get_provider

        sc = config.serving
        store = open_store(config, timeout_ms=sc.store_timeout_ms)
        self._config = store.config
        # Resolved once: the registry is never consulted on the hot path.
        names = profile_names(store)
        self._profile_view = store.get_feature_view(PROFILE_VIEW) if names else None
        view = self._profile_view
        fields = {f.name: str(f.dtype) for f in view.features} if view is not None else {}
        self.profile = tuple(names)
        """The profile features read, in the data schema's order (the registered view's)."""
        self._decode = [
            (name, fields[name] == "Array(String)", _VALUE_FIELDS.get(fields[name]))
            for name in names
        ]
        self._activity_view = store.get_feature_view(ACTIVITY_VIEW)
        self._store = self._online_store(get_provider(self._config).online_store)
        self._bound_waits(sc.store_timeout_ms)
        self._cache_seconds = sc.profile_cache_seconds
        self._cache_size = sc.profile_cache_users
        self._profiles: dict[str, tuple[float, Profile]] = {}
        self._retry_seconds = sc.store_retry_seconds
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.last_error = ""

    @staticmethod
    def _online_store(configured: OnlineStore) -> OnlineStore:
        """The ``OnlineStore`` to read through: Feast's SQLite and Redis stores with the
        leaner reads (``features.online.sqlite``, ``features.online.redis``) in place of
        Feast's own; any other store as configured."""
        from feast.infra.online_stores.redis import RedisOnlineStore
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        if type(configured) is SqliteOnlineStore:
            return ServingSqliteOnlineStore()
        if type(configured) is RedisOnlineStore:
            return ServingRedisOnlineStore()
        return configured

    def _bound_waits(self, timeout_ms: int) -> None:
        """One read waits at most about ``timeout_ms``. Feast exposes no such setting for
        these parts, so they are set on the clients Feast's online stores create."""
        from feast.infra.online_stores.redis import RedisOnlineStore
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        online = self._store
        if isinstance(online, SqliteOnlineStore):
            # SQLite waits up to 5 s for a writer's lock by default.
            online._get_conn(self._config).execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")
        elif isinstance(online, RedisOnlineStore):
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # redis-py retries a timed-out call 3 times with backoff (~5 s in all); the
            # socket timeout is in the connection string (``open_store``).
            online._get_client(self._config.online_store).set_retry(Retry(NoBackoff(), 0))

    @property
    def available(self) -> bool:
        """False while the store is being left alone after a failed read."""
        return time.monotonic() >= self._down_until

    def read(self, user_id: str) -> UserFeatures | None:
        """One user's features (defaults where the store has none), or ``None`` when the
        store failed, timed out, or is being left alone after a failure."""
        features = self.read_many([user_id])
        return None if features is None else features[0]

    def read_many(self, user_ids: Sequence[str]) -> list[UserFeatures] | None:
        """Each user's features, in order: the activity view for all of them and the
        profile view for those whose profile is not cached, in one round trip on the
        serving stores (``read_views``: one pipeline on Redis, one query per view on
        SQLite), one ``online_read`` per view on any other store. ``None`` when the store
        failed, timed out, or is being left alone after a failure: the whole batch is
        degraded."""
        if not self.available:
            return None
        now = time.monotonic()
        try:
            keys = [
                EntityKey(join_keys=_JOIN_KEYS, entity_values=[Value(string_val=u)])
                for u in user_ids
            ]
            profiles, missing = self._cached(user_ids, now)
            activity_rows, profile_rows = self._read(keys, missing)
        except Exception as exc:  # any store failure degrades the answer, never the server
            with self._lock:
                self._down_until = time.monotonic() + self._retry_seconds
                self.last_error = f"{type(exc).__name__}: {exc}"
            # At most one line per retry pause: only one read is tried per pause.
            log.warning(
                "online store read failed; answering from default features (degraded)",
                extra={"error": self.last_error, "retry_seconds": self._retry_seconds},
            )
            return None
        if missing:
            self._remember(user_ids, profiles, missing, profile_rows, now)
        out = []
        for user_id, profile, values in zip(user_ids, profiles, activity_rows, strict=True):
            activity = EMPTY
            if _present(values, ACTIVITY_READ):
                activity = Activity(
                    tuple(values["recent_items"].string_list_val.val),
                    values["last_event_ms"].int64_val,
                    values["last_event_id"].string_val,
                    values[SEEN].bytes_val if SEEN in values else b"",
                    values[EVENT_COUNT].int64_val if EVENT_COUNT in values else 0,
                )
            if profile is None:
                out.append(UserFeatures(user_id, activity=activity))
            else:
                out.append(UserFeatures(user_id, profile, activity, True))
        return out

    def _read(self, keys: list[EntityKey], missing: list[int]) -> tuple[list[Row], list[Row]]:
        """The activity rows of every key, and the profile rows of the ``missing`` ones."""
        activity = (self._activity_view, [*ACTIVITY_READ, SEEN, EVENT_COUNT])
        store = self._store
        if isinstance(store, ServingSqliteOnlineStore | ServingRedisOnlineStore):
            if not missing or self._profile_view is None:
                return store.read_views(self._config, [activity], keys)[0], []
            views = [activity, (self._profile_view, [*self.profile])]
            rows, profiles = store.read_views(self._config, views, keys)
            return rows, [profiles[i] for i in missing]
        profile_rows: list[Row] = []
        if missing and self._profile_view is not None:
            profile_rows = [
                row
                for _, row in store.online_read(
                    self._config, self._profile_view, [keys[i] for i in missing], [*self.profile]
                )
            ]
        read = store.online_read(self._config, activity[0], keys, [*activity[1]])
        return [row for _, row in read], profile_rows

    def _cached(self, user_ids: Sequence[str], now: float) -> tuple[list[Profile], list[int]]:
        """Each user's profile from the cache while fresh, and the positions of those to
        read (none without a profile view)."""
        profiles: list[Profile] = [None] * len(user_ids)
        if self._profile_view is None:
            return profiles, []
        if not self._cache_seconds:
            return profiles, list(range(len(user_ids)))
        cache, missing = self._profiles, []
        for i, user_id in enumerate(user_ids):
            hit = cache.get(user_id)
            if hit is not None and now - hit[0] < self._cache_seconds:
                profiles[i] = hit[1]
            else:
                missing.append(i)
        return profiles, missing

    def _remember(
        self,
        user_ids: Sequence[str],
        profiles: list[Profile],
        missing: list[int],
        rows: list[Row],
        now: float,
    ) -> None:
        """Decodes the profiles read into ``profiles`` and, with the cache on, keeps them."""
        decode = self._decode
        for i, values in zip(missing, rows, strict=True):
            if _present(values, self.profile):
                profiles[i] = tuple(_value(values.get(n), lst, f) for n, lst, f in decode)
        if not self._cache_seconds:
            return
        with self._lock:
            for i in missing:
                if len(self._profiles) >= self._cache_size:
                    # Oldest insertion first: with a TTL, that is the entry closest to expiry.
                    self._profiles.pop(next(iter(self._profiles)))
                self._profiles.pop(user_ids[i], None)  # a refreshed entry goes last
                self._profiles[user_ids[i]] = (now, profiles[i])
