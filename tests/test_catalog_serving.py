"""Item changes through a real broker into a real server, over gRPC: a deleted item is never
answered again, a new item is answered where its score puts it, and a server started after
the changes serves them from its first SERVING answer (it catches up from its version's
offsets before it serves)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from catalog.events import catalog_frame, check, encode_delete, encode_upsert
from catalog.produce import send
from features.online.read import FeatureReader
from index.plan import embed_chunk
from localservices.procs import child, free_port, write_config
from recsys.config import Config
from recsys.data.dataset import Dataset
from recsys.data.schema import configured_schema
from serving.bundle import Bundle
from serving.client import RecommendClient
from serving.recommender import Recommender
from tests.conftest import running_server, wait_until
from towers.runtime import NumpyItemTower

T = 893_000_000_000  # a fixed request time: the user's vector does not move between calls
USER = "1"


def _answer(client: RecommendClient, k: int, genre: str | None = None) -> list[str]:
    reply = client.recommend(
        USER,
        k=k,
        include_seen=True,
        request_time_ms=T,
        timeout=10,
        include_genres=[genre] if genre else [],
    )
    return [i.item_id for i in reply.items]


def _new_item(config: Config, ml: Dataset, deleted: str) -> tuple[str, dict, str, int]:
    """A new item, its features (a known film's), a genre of it and the place its score
    gives it for ``USER`` among that genre's films less ``deleted``: computed here, in this
    process, for the film and genre that place it best (a new item's id is the unknown
    one, whose embedding a short training leaves far from any user)."""
    bundle = Bundle.load_current(config.models_dir, config.indexes_dir)
    rec = Recommender(bundle, FeatureReader(config), config.serving)
    (features,) = FeatureReader(config).read_many([USER]) or []
    query = rec.user_vector(features, T)[0]
    tower = NumpyItemTower.load(config.models_dir / bundle.model_version)
    scores = bundle.index.reconstruct_n(0, bundle.index.ntotal) @ query
    scores[bundle.item_ids.index(deleted)] = -np.inf
    genres = ml.items.set_index("item_id")["genres"].reindex(bundle.item_ids).tolist()
    schema = configured_schema(config)
    films = []
    for row in ml.items.itertuples(index=False):
        film = {"genres": list(row.genres), "title": row.title}
        if not np.isnan(row.release_year):
            film["release_year"] = float(row.release_year)
        films.append(film)
    # Every film's features under a new id (new ids share the unknown id's embedding).
    changes = [check(f"new-{i}", film, schema) for i, film in enumerate(films)]
    _, vectors, _ = embed_chunk(bundle.space, tower, catalog_frame(changes), set())
    new_scores = vectors @ query
    best = (10**9, 0, "")
    for i, film in enumerate(films):
        for genre in film["genres"]:
            rival = np.array([genre in g for g in genres])
            place = int((scores[rival] > new_scores[i]).sum())
            best = min(best, (place, i, genre))
    place, i, genre = best
    if place >= 100:
        raise AssertionError(f"the best new item would be answered at place {place}, past 100")
    return "catalog-new-film", films[i], genre, place


def test_a_new_item_is_answered_and_a_deleted_one_never_again(
    scratch: Config, kafka: str, ml: Dataset
) -> None:
    config = scratch.with_overrides(
        {"kafka": {"bootstrap_servers": kafka, "catalog_topic": "catalog-serving-test"}}
    )
    with running_server(config) as server:
        client = RecommendClient(server.target)
        before = _answer(client, 10)
        gone = before[0]
        new_id, film, genre, place = _new_item(config, ml, gone)
        send(config, [encode_delete(gone, 1)])
        wait_until(lambda: gone not in _answer(client, 100), 10, "the delete was not applied")
        # An event no server can use is skipped; the feed goes on to the next.
        send(config, [(b"junk", b"\xff\xff\xff"), encode_upsert(new_id, film, 2)])
        wait_until(
            lambda: new_id in _answer(client, 100, genre), 10, "the new item was not answered"
        )
        answer = _answer(client, 100, genre)
        assert answer.index(new_id) == place and gone not in _answer(client, 100)
        feed = server.live.recommender.catalog_feed  # type: ignore[union-attr]
        assert feed is not None and feed.overlay.positions == {0: 3} and feed.skipped == 1
        value = server.metrics.value
        assert value("recsys_catalog_changes_total", result="applied") == 2
        assert value("recsys_catalog_changes_total", result="skipped") == 1
        assert value("recsys_catalog_overlay_rows", kind="added") == 1
        assert value("recsys_catalog_overlay_rows", kind="hidden") == 1
        assert feed.lag() == 0 and value("recsys_catalog_feed_lag") == 0  # read to the end
        client.close()
    # A server started now catches up before it serves: its first answer is the peers'.
    with running_server(config) as server:
        client = RecommendClient(server.target)
        assert _answer(client, 100, genre) == answer
        client.close()


def test_a_server_killed_mid_stream_serves_its_peers_catalog_after_restart(
    scratch: Config, kafka: str, ml: Dataset, tmp_path: Path
) -> None:
    """Item changes stream at ~100/s while a ``recsys serve`` process is SIGKILLed; restarted,
    it answers exactly as a peer that saw the whole stream (items and scores)."""
    ports = {"port": free_port("127.0.0.1"), "admin_port": free_port("127.0.0.1")}
    config = scratch.with_overrides(
        {"kafka": {"bootstrap_servers": kafka, "catalog_topic": "catalog-kill-test"}}
    )
    config_file = write_config(config.with_overrides({"serving": ports}), tmp_path / "serve.yaml")
    films = [
        {"genres": list(r.genres), "title": r.title}
        for r in ml.items.head(60).itertuples(index=False)
    ]
    changes = []
    for i in range(200):  # new items, deletes and replacements of known ones, in turn
        if i % 3 == 0:
            changes.append(encode_upsert(f"kill-new-{i}", films[i % 60], i + 1))
        elif i % 3 == 1:
            changes.append(encode_delete(str(1 + i // 3), i + 1))
        else:
            changes.append(encode_upsert(str(100 + i), films[(i * 7) % 60], i + 1))

    def stream() -> None:
        for start in range(0, len(changes), 10):
            send(config, changes[start : start + 10])
            time.sleep(0.1)

    users = ["1", "196", "42", "500", "cold-user"]
    with running_server(config) as peer, RecommendClient(peer.target) as peers:
        with (
            child("serve", config_file, ["serve"], tmp_path, quiet=True) as proc,
            RecommendClient(f"127.0.0.1:{ports['port']}") as victim,
        ):
            victim.wait_until_serving(process=proc)
            sender = threading.Thread(target=stream)
            sender.start()
            time.sleep(0.8)
            assert sender.is_alive()  # mid-stream: the stream takes at least 2 s
            proc.kill()
            proc.wait(timeout=30)
            sender.join(timeout=60)
        feed = peer.live.recommender.catalog_feed  # type: ignore[union-attr]
        wait_until(
            lambda: feed is not None and feed.overlay.positions.get(0) == len(changes),
            30,
            "the peer did not apply the whole stream",
        )
        with (
            child("serve", config_file, ["serve"], tmp_path, quiet=True) as proc,
            RecommendClient(f"127.0.0.1:{ports['port']}") as restarted,
        ):
            restarted.wait_until_serving(process=proc)
            for user in users:
                for genres in ([], ["Comedy"]):
                    want = peers.recommend(user, k=100, include_seen=True, include_genres=genres)
                    got = restarted.recommend(user, k=100, include_seen=True, include_genres=genres)
                    assert [(i.item_id, i.score) for i in got.items] == [
                        (i.item_id, i.score) for i in want.items
                    ], (user, genres)
            deleted = {str(1 + i // 3) for i in range(1, 200, 3)}
            answered = {i.item_id for i in restarted.recommend("1", k=100, include_seen=True).items}
            assert not answered & deleted
