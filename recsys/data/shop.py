"""A synthetic shop of any size, with the shape real shops have and MovieLens lacks: visitors
without profiles, a catalog with a category tree, brands, prices and launch dates, browsing
sessions with repeat visits, popularity that drifts, and new items arriving all along.
Written as Parquet with its data schema (``shop.yaml``), so every command runs on it by
``data.schema`` alone (``recsys generate-shop``).

How it is drawn (every draw from one seeded generator, vectorised: 10 M events in about a
minute):

* **Catalog**: 12 departments × 8 categories × 6 leaves. An item has one leaf; its ``category``
  tags are its department and its category (the filter field), ``leaf`` is categorical, a
  brand from its department's (power-law sizes), a log-normal price by department, and a
  name of brand, leaf word and adjective. A share ``BACK_CATALOG`` launched before the
  events start; the rest launch uniformly over the span, and none is seen before its launch.
* **Popularity**: a power law over a random order of the items, times a lifecycle: half the
  items are fads whose appeal decays with a time constant of a few weeks after launch, the
  rest stay evergreen. So what is popular drifts week by week.
* **Visitors and sessions**: log-normal activity; each visitor prefers one or two departments.
  A session picks a leaf of them (by the leaves' appeal), starts at a time of the visitor's,
  and holds a geometric number of events seconds to minutes apart: mostly views of the
  leaf's items drawn by the week's popularity, some re-views within the session, some
  returns to the visitor's favourites from earlier sessions, and carts and purchases.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

DEPARTMENTS = (
    "home", "garden", "toys", "books", "fashion", "beauty",
    "sports", "electronics", "grocery", "pets", "auto", "office",
)  # fmt: skip
CATEGORIES = 8
LEAVES = 6
WORDS = (
    "lamp", "chair", "kettle", "blanket", "hose", "shovel", "puzzle", "robot", "novel", "atlas",
    "jacket", "scarf", "serum", "brush", "racket", "ball", "cable", "speaker", "coffee", "tea",
    "leash", "bowl", "wiper", "tyre", "stapler", "folder", "mug", "pillow", "sneaker", "watch",
    "candle", "rug", "glove", "bottle", "tent", "helmet", "charger", "camera", "snack", "sauce",
)  # fmt: skip
ADJECTIVES = ("classic", "pro", "mini", "eco", "deluxe", "smart", "soft", "bold", "lite", "max")
BACK_CATALOG = 0.3
"""Share of the items launched before the events start."""
SPAN_DAYS = 182
START = pd.Timestamp("2025-01-06", tz="UTC")
WEEK_S = 7 * 86_400
EVENTS_PER_SESSION = 8.0
SESSIONS_PER_VISITOR = 3.0
RE_VIEW, FAVOURITE = 0.15, 0.08
"""Shares of session events that re-view the session's items / return to favourites."""
ACTIONS = ("view", "cart", "purchase")
ACTION_SHARES = (0.86, 0.09, 0.05)
ROWS_PER_FILE = 2_000_000

SCHEMA = {
    "name": "shop",
    "interactions": {
        "files": ["events-*.parquet"],
        "user": "visitor",
        "item": "sku",
        "time": "ts",
        "time_unit": "ms",
        "event_type": "action",
    },
    "items": {
        "file": "items.parquet",
        "id": "sku",
        "features": {
            "category": {"kind": "tags"},
            "leaf": {"kind": "categorical"},
            "brand": {"kind": "categorical", "min_count": 3},
            "price": {"kind": "numeric", "buckets": 16},
            "launched": {"kind": "date", "buckets": 16},
            "name": {"kind": "text", "max_tokens": 4, "min_count": 3},
        },
    },
    "users": None,
    "filter": "category",
}


def _power(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """``[n]`` power-law weights over a random order, summing to 1."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return rng.permutation(weights / weights.sum())


def catalog(rng: np.random.Generator, items: int) -> pd.DataFrame:
    """The items, with the generator's own columns (``_leaf``, ``_appeal``, ``_fad``,
    ``_launch_s``) beside the published ones."""
    leaves = len(DEPARTMENTS) * CATEGORIES * LEAVES
    leaf_weights = _power(rng, leaves, 0.8)
    leaf = rng.choice(leaves, size=items, p=leaf_weights)
    dept, category = leaf // (CATEGORIES * LEAVES), leaf // LEAVES
    words = np.array(WORDS, dtype=object)
    leaf_word = words[rng.integers(0, len(WORDS), size=leaves)]
    brands_per_dept = max(10, items // 50 // len(DEPARTMENTS))
    brand_rank = np.minimum(rng.zipf(1.6, size=items) - 1, brands_per_dept - 1)
    brand = np.char.add(
        np.char.add("b", dept.astype(str)), np.char.add("-", brand_rank.astype(str))
    ).astype(object)
    price = np.round(np.exp(rng.normal(2.5 + 0.25 * (dept % 6), 0.8, size=items)), 2)
    back = rng.random(items) < BACK_CATALOG
    span_s = SPAN_DAYS * 86_400
    launch_s = np.where(
        back,
        -rng.integers(86_400, 3 * 365 * 86_400, size=items),
        rng.integers(0, span_s, size=items),
    )
    dept_names = np.array(DEPARTMENTS, dtype=object)[dept]
    cat_names = (
        dept_names + "/" + np.char.add("c", (category % CATEGORIES).astype(str)).astype(object)
    )
    adjective = np.array(ADJECTIVES, dtype=object)[rng.integers(0, len(ADJECTIVES), size=items)]
    return pd.DataFrame(
        {
            "sku": np.char.add("p", np.arange(items).astype(str)).astype(object),
            "category": [[d, c] for d, c in zip(dept_names, cat_names, strict=True)],
            "leaf": cat_names + "/" + leaf_word[leaf],
            "brand": brand,
            "price": price,
            "launched": START + pd.to_timedelta(launch_s, unit="s"),
            "name": brand + " " + leaf_word[leaf] + " " + adjective,
            "_leaf": leaf,
            "_appeal": _power(rng, items, 1.05),
            "_fad": rng.random(items) < 0.5,
            "_launch_s": launch_s,
        }
    )


def _weekly_tables(
    items: pd.DataFrame, weeks: int
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Per leaf, its items and, per week, the cumulative popularity of those launched by the
    week's start (a fad's appeal decays with a 3-6 week time constant after launch)."""
    leaf = items["_leaf"].to_numpy()
    order = np.argsort(leaf, kind="stable")
    bounds = np.searchsorted(leaf[order], np.arange(len(DEPARTMENTS) * CATEGORIES * LEAVES + 1))
    launch = items["_launch_s"].to_numpy()
    appeal = items["_appeal"].to_numpy()
    fad = items["_fad"].to_numpy()
    tau = 3 * WEEK_S + (np.arange(len(items)) % 4) * WEEK_S
    members: list[np.ndarray] = []
    cdfs: list[np.ndarray] = []
    for lf in range(len(bounds) - 1):
        rows = order[bounds[lf] : bounds[lf + 1]]
        members.append(rows)
        table = np.zeros((weeks, len(rows)), np.float64)
        for w in range(weeks):
            age = w * WEEK_S - launch[rows]
            weight = np.where(age >= 0, appeal[rows], 0.0)
            weight = np.where(fad[rows], weight * np.exp(-np.maximum(age, 0) / tau[rows]), weight)
            table[w] = np.cumsum(weight)
        cdfs.append(table)
    leaf_appeal = np.bincount(leaf, weights=appeal, minlength=len(bounds) - 1)
    return leaf_appeal, members, cdfs


def events(rng: np.random.Generator, items: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` events (visitor, sku, ts in ms, action), in time order."""
    weeks = SPAN_DAYS // 7 + 1
    leaf_appeal, members, cdfs = _weekly_tables(items, weeks)
    sessions = int(n / EVENTS_PER_SESSION) + 1
    visitors = max(1, int(sessions / SESSIONS_PER_VISITOR))
    # Visitors: log-normal activity (a heavy tail, no bots), one or two preferred departments.
    activity = rng.lognormal(0.0, 1.0, size=visitors)
    session_visitor = rng.choice(visitors, size=sessions, p=activity / activity.sum())
    leaves_per_dept = CATEGORIES * LEAVES
    first_dept = rng.integers(0, len(DEPARTMENTS), size=visitors)
    second_dept = np.where(
        rng.random(visitors) < 0.5, rng.integers(0, len(DEPARTMENTS), size=visitors), first_dept
    )
    dept = np.where(
        rng.random(sessions) < 0.7, first_dept[session_visitor], second_dept[session_visitor]
    )
    in_dept = leaf_appeal.reshape(len(DEPARTMENTS), leaves_per_dept)
    in_dept = in_dept / in_dept.sum(axis=1, keepdims=True)
    cumulative = np.cumsum(in_dept, axis=1)
    pick = (cumulative[dept] < rng.random(sessions)[:, None]).sum(axis=1)
    session_leaf = dept * leaves_per_dept + np.minimum(pick, leaves_per_dept - 1)
    # A visitor's sessions cluster around a time of theirs.
    home = rng.integers(0, SPAN_DAYS * 86_400, size=visitors)
    spread = rng.integers(2, 60, size=visitors) * 86_400
    start = home[session_visitor] + rng.normal(0, 1, sessions) * spread[session_visitor]
    start = np.clip(start, 0, SPAN_DAYS * 86_400 - 3_600).astype(np.int64)
    lengths = np.maximum(1, rng.geometric(1 / EVENTS_PER_SESSION, size=sessions))
    total = int(lengths.sum())
    session = np.repeat(np.arange(sessions), lengths)
    position = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    gaps = rng.exponential(45_000, size=total).astype(np.int64) + 2_000
    gaps[position == 0] = 0
    offset = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(lengths) - lengths], lengths)
    ts_ms = start[session] * 1000 + offset
    week = np.minimum(start[session] // WEEK_S, weeks - 1)
    leaf = session_leaf[session]
    item = _draw(rng, leaf, week, members, cdfs)
    # Re-views within a session: an earlier event's item of the same session.
    again = (rng.random(total) < RE_VIEW) & (position > 0)
    back = np.maximum(0, (rng.random(total) * position).astype(np.int64))
    item[again] = item[(np.arange(total) - position + back)[again]]
    # Returns: a visitor's first session's first item (launched by then: it was seen then).
    visitor = session_visitor[session]
    first_event = np.full(visitors, -1, np.int64)
    order = np.lexsort((ts_ms, visitor))
    starts = np.searchsorted(visitor[order], np.arange(visitors))
    has = starts < total
    first_event[has] = order[starts[has]]
    returns = (rng.random(total) < FAVOURITE) & (first_event[visitor] >= 0)
    returns &= ts_ms > ts_ms[np.maximum(first_event[visitor], 0)]
    item[returns] = item[first_event[visitor[returns]]]
    action = rng.choice(len(ACTIONS), size=total, p=ACTION_SHARES)
    keep = np.sort(rng.choice(total, size=min(n, total), replace=False))
    frame = pd.DataFrame(
        {
            "visitor": visitor[keep],
            "sku": item[keep],
            "ts": START.value // 1_000_000 + ts_ms[keep],
            "action": action[keep],
        }
    )
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def _draw(
    rng: np.random.Generator,
    leaf: np.ndarray,
    week: np.ndarray,
    members: list[np.ndarray],
    cdfs: list[np.ndarray],
) -> np.ndarray:
    """One item per event from its leaf's popularity in its week (launched items only)."""
    out = np.full(len(leaf), -1, np.int64)
    key = leaf * 1000 + week
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    cuts = np.flatnonzero(np.diff(sorted_key)) + 1
    for group in np.split(order, cuts):
        lf, w = int(leaf[group[0]]), int(week[group[0]])
        cdf = cdfs[lf][w]
        if not len(cdf) or cdf[-1] <= 0:
            continue  # nothing launched in this leaf yet: those events are dropped
        picks = np.searchsorted(cdf, rng.random(len(group)) * cdf[-1], side="right")
        out[group] = members[lf][np.minimum(picks, len(cdf) - 1)]
    return out


def generate(
    folder: Path,
    *,
    items: int = 1_000_000,
    interactions: int = 10_000_000,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """Writes the shop (``items.parquet``, ``events-NN.parquet``) and ``shop.yaml`` into
    ``folder``; returns the schema file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    log(f"catalog: {items:,} items")
    catalog_frame = catalog(rng, items)
    log(f"events: {interactions:,} in sessions over {SPAN_DAYS} days")
    frame = events(rng, catalog_frame, int(interactions * 1.02))
    frame = frame[frame["sku"] >= 0].iloc[:interactions]
    skus = catalog_frame["sku"].to_numpy()
    published = catalog_frame[[c for c in catalog_frame.columns if not c.startswith("_")]]
    pq.write_table(pa.Table.from_pandas(published, preserve_index=False), folder / "items.parquet")
    for old in folder.glob("events-*.parquet"):
        old.unlink()
    for part, first in enumerate(range(0, len(frame), ROWS_PER_FILE)):
        chunk = frame.iloc[first : first + ROWS_PER_FILE]
        table = pa.table(
            {
                "visitor": pa.array(np.char.add("v", chunk["visitor"].to_numpy().astype(str))),
                "sku": pa.array(skus[chunk["sku"].to_numpy()].astype(str)),
                "ts": pa.array(chunk["ts"].to_numpy(), pa.int64()),
                "action": pa.array(np.array(ACTIONS)[chunk["action"].to_numpy()]),
            }
        )
        pq.write_table(table, folder / f"events-{part:02d}.parquet")
    schema = folder / "shop.yaml"
    schema.write_text(
        "# A synthetic shop (recsys generate-shop); recsys/data/shop.py says how it is drawn.\n"
        + yaml.safe_dump(SCHEMA, sort_keys=False)
    )
    log(f"wrote {len(frame):,} events, {items:,} items and {schema}")
    return schema
