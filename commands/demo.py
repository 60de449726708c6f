"""``recsys demo``: the whole real-time loop, end to end, then everything stopped.

train → index → feature store → Kafka broker + gRPC server + ingester (child processes) →
recommendations before → events replayed → the same users' recommendations after → a film
withdrawn and a new one released on the catalog topic, both served at once.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

from commands.command import Command
from localservices.procs import child, serving_ports, write_config
from recsys.config import Config
from recsys.errors import RecsysError
from recsys.v1 import recommender_pb2 as pb

if TYPE_CHECKING:
    import pandas as pd

    from features.store import OnlineFeatures
    from recsys.data.dataset import Dataset
    from serving.client import RecommendClient

NEW_USER = "demo-new-user"


def _step(n: int, total: int, text: str) -> None:
    print(f"\n==> [{n}/{total}] {text}", flush=True)


def _show(
    label: str, items: list[tuple[str, float]], titles: dict[str, str], mark: set[str]
) -> None:
    print(f"      {label}:")
    for rank, (item, score) in enumerate(items, 1):
        flag = "  <- just consumed" if item in mark else ""
        print(f"        {rank}. {titles.get(item, item)[:48]:<48} {score:6.2f}{flag}")


def run_demo(config: Config, *, users: int = 3, events: int = 5) -> None:
    """Runs the loop for ``users`` users (one of them brand new), ``events`` events each."""
    from commands.dataset import load_dataset
    from features.backfill import initialise
    from features.store import OnlineFeatures, open_store
    from features.stream.replay import replay
    from index.build import build_index
    from localservices.kafka import LocalBroker, ensure_jars
    from recsys.data import temporal_split
    from serving.client import RecommendClient
    from training.train import train

    started = time.monotonic()
    total = 7
    _step(1, total, "data: the configured data set (MovieLens-100K by default)")
    ml = load_dataset(config)
    print(f"      {ml.name}: {len(ml.interactions):,} interactions, {len(ml.items):,} items")
    past, future = temporal_split(ml.interactions, config.model.test_fraction)
    titles = ml.item_labels()
    _step(2, total, "train the two towers and the ranker on the past")
    # The ranker too, so the demo reports the towers, the validated blend and the ranked
    # pipeline side by side; it is served only with serving.ranker: gbdt (BENCHMARKS.md).
    train(config.with_overrides({"model": {"ranker": True}}), ml)
    _step(3, total, "build the FAISS index with the item tower")
    build_index(config, ml)
    _step(4, total, "feature store: apply, materialize profiles, backfill activity")
    initialise(config, ml, past)
    print(f"    Feast store in {config.feast_dir}")

    _step(5, total, "start Kafka, the gRPC server and the ingester")
    jars = ensure_jars(config.paths.kafka_pom, config.paths.kafka_jars)
    demo_dir = config.paths.state / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    (demo_dir / "logs").mkdir(parents=True)
    with LocalBroker(jars, demo_dir / "kafka", host="127.0.0.1") as broker:
        print(f"    kafka: {broker.bootstrap_servers}")
        run_config = config.with_overrides(
            {
                "kafka": {"bootstrap_servers": broker.bootstrap_servers},
                "serving": serving_ports(config),
            }
        )
        config_file = write_config(run_config, demo_dir / "config.yaml")
        logs = demo_dir / "logs"
        with (
            child("server", config_file, ["serve"], logs) as server,
            child("ingester", config_file, ["ingest"], logs) as ingester,
            RecommendClient(f"{run_config.serving.host}:{run_config.serving.port}") as client,
        ):
            client.wait_until_serving(process=server)
            print(f"    server SERVING on {client.target}")

            _step(6, total, f"the loop: {users} users, {events} new events each")
            counts = future["user_id"].value_counts()
            known = sorted(counts[counts >= events].index, key=lambda u: (len(u), u))
            known = known[: max(users - 1, 0)]
            batches = {u: future[future["user_id"] == u].head(events) for u in known}
            donor = future[~future["user_id"].isin(known)].head(events)
            batches[NEW_USER] = donor.assign(user_id=NEW_USER)
            before = {u: client.recommend(u, k=5) for u in batches}
            profiled = set(ml.users["user_id"])
            sent_at = time.monotonic()
            for rows in batches.values():
                replay(run_config, rows, progress=False)
            features = OnlineFeatures(open_store(run_config))
            fresh_ms = _wait_ingested(features, batches, ingester, timeout=60.0) - sent_at
            print(
                f"    {sum(len(r) for r in batches.values())} events visible in the online store "
                f"{fresh_ms * 1000:.0f} ms after produce"
            )
            for user, rows in batches.items():
                consumed = set(rows["item_id"])
                after = client.recommend(user, k=5)
                kind = (
                    "new user, no profile"
                    if user == NEW_USER
                    else "has a profile"
                    if user in profiled
                    else "known, no profile"
                )
                paths = f"answered {_path(before[user])}, then {_path(after)}"
                print(
                    f"\n    user {user} ({kind}; {paths}); consumed: "
                    + ", ".join(titles[i][:30] for i in rows["item_id"])
                )
                _show(
                    "before", [(i.item_id, i.score) for i in before[user].items], titles, consumed
                )
                _show("after ", [(i.item_id, i.score) for i in after.items], titles, consumed)
            print(f"\n    served by model {after.model_version}, index {after.index_version}")
            _step(7, total, "the catalog in real time: a film withdrawn, a new one released")
            _catalog(run_config, ml, client, known[0] if known else NEW_USER, titles)
    print(
        f"\ndemo finished in {time.monotonic() - started:.0f}s; broker, server and ingester stopped"
    )


def _catalog(
    config: Config, ml: Dataset, client: RecommendClient, user: str, titles: dict[str, str]
) -> None:
    """Withdraws ``user``'s first recommendation and releases a new item with its features
    under a new id, on the catalog topic; shows both served without a rebuild."""
    from catalog.events import encode_delete, encode_upsert
    from catalog.produce import send
    from catalog.synthetic import event_features

    before = client.recommend(user, k=5)
    gone = before.items[0].item_id
    row = ml.items[ml.items["item_id"] == gone].iloc[0].to_dict()
    new_id = f"new-release-{int(time.time())}"
    features = event_features(row, ml.schema)  # the same features, under a new id
    titles[new_id] = f"{titles.get(gone, gone)} (as a new item)"
    now = int(time.time() * 1000)
    sent = time.monotonic()
    # The release first: on one partition (the default) the withdrawal is applied after it.
    send(config, [encode_upsert(new_id, features, now), encode_delete(gone, now)])
    deadline = sent + 30.0
    while gone in (wide := [i.item_id for i in client.recommend(user, k=100).items]):
        if time.monotonic() > deadline:
            raise RecsysError("the server did not apply the catalog changes within 30 s")
        time.sleep(0.05)
    seen_ms = (time.monotonic() - sent) * 1000
    settle = time.monotonic() + 1.0  # more partitions: the release may come a batch later
    while new_id not in wide and time.monotonic() < settle:
        time.sleep(0.05)
        wide = [i.item_id for i in client.recommend(user, k=100).items]
    print(
        f"    withdrew {titles.get(gone, gone)[:40]!r} and released its features under a new "
        f"id: both served {seen_ms:.0f} ms after the send, no rebuild"
    )
    place = f"at place {wide.index(new_id) + 1} of 100" if new_id in wide else "past the top 100"
    field = ml.schema.filter
    values = list(row[field]) if field else []
    if values:
        among = [i.item_id for i in client.recommend(user, k=100, include_genres=values[:1]).items]
        where = among.index(new_id) + 1 if new_id in among else "past 100"
        place += f"; among {values[0]} items at place {where}"
    print(
        f"    user {user}: the new item is answered {place}, placed by its features alone "
        "(item-id dropout in training; a retrain that sees its interactions places it better)"
    )
    after = client.recommend(user, k=5)
    _show("before", [(i.item_id, i.score) for i in before.items], titles, set())
    _show("after ", [(i.item_id, i.score) for i in after.items], titles, set())


def _path(reply: pb.RecommendResponse) -> str:
    """``cold start`` from ``SERVING_PATH_COLD_START``."""
    name: str = pb.ServingPath.Name(reply.path)
    return name.removeprefix("SERVING_PATH_").lower().replace("_", " ")


def _wait_ingested(
    features: OnlineFeatures,
    batches: dict[str, pd.DataFrame],
    ingester: subprocess.Popen[bytes],
    timeout: float,
) -> float:
    """Waits until every user's newest event is in the online store; returns that time."""
    deadline = time.monotonic() + timeout
    last = {u: int(rows["timestamp"].max()) * 1000 for u, rows in batches.items()}
    while True:
        activity = features.read_activity(list(last))
        if all(activity[u].last_event_ms >= t for u, t in last.items()):
            return time.monotonic()
        if ingester.poll() is not None:
            raise RecsysError(f"the ingester exited with code {ingester.returncode}")
        if time.monotonic() > deadline:
            raise RecsysError(f"events not ingested after {timeout:.0f}s; see the ingester log")
        time.sleep(0.05)


def demo(config: Config, args: argparse.Namespace) -> None:
    run_demo(config, users=args.users, events=args.events)


def demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=3, help="users whose recommendations are shown")
    p.add_argument("--events", type=int, default=5, help="events streamed per shown user")


COMMANDS = (
    Command("demo", "the whole loop end to end, then stop everything", demo, demo_arguments),
)
