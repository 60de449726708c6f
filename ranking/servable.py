"""The ranker as it travels with its model: written into the model version beside the towers
(``ranker/``, covered by the model's manifest checksums), loaded against the index that
model's item tower built, and scored the way the offline walk scored it.

What a version holds (:func:`save`): the LightGBM model, the settings the sources and
features were trained with, the neighbour table and each item's training count keyed by
item id (so any index of the model's catalog maps them onto its own rows), the item state
the stream had reached when the ranker was trained (the events still inside the longest
popularity window, each item's first event), and a probe: feature rows with the scores
LightGBM gave them offline. Loading (:meth:`ServedRanker.load`) compiles the model (lleaves)
and refuses it unless the compiled scores match the probe's within :data:`PARITY`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from candidates.neighbours import NeighbourTable
from candidates.sources import (
    Candidates,
    NeighbourSource,
    Query,
    Source,
    Trending,
    TrendingSource,
    TwoTowerSource,
)
from features.activity import SeenIndex
from ranking.features import (
    DAY_MS,
    WINDOWS_DAYS,
    Catalog,
    Cut,
    ItemState,
    Union,
    blend_score,
    features,
)
from recsys.errors import ArtifactError

RANKER_DIR = "ranker"
MODEL_FILE = "model.txt"
SETTINGS_FILE = "ranker.json"
ITEMS_FILE = "items.npz"
PROBE_FILE = "probe.npz"
PARITY = 1e-5
"""The most a served score may differ from the offline one for the same features."""
PROBE_ROWS = 512
SOURCES = ("two_tower", "neighbours", "trending")
"""The candidate sources, in the order of their feature columns."""


@dataclass(frozen=True)
class Settings:
    """How the ranker's candidates and features were made; the server makes them the same way.

    Attributes:
        names: The feature columns, in order.
        sources: The candidate sources, in the order their columns appear.
        depth: Candidates each source proposes.
        knn_last_items: How many of the newest recent items the neighbour source reads.
        trending_window_days: The trending source's window.
        base_share: The ranker adds to the validated blend's score with this item-KNN share
            (``None``: it scores from its features alone).
        rounds: Boosting rounds kept (picked on validation).
        valid_ndcg: Validation NDCG@10 of the pipeline, for the record.
        cut_depth: Candidates a request keeps after the first cut (:class:`Cut`; 0: no
            cut, every candidate of the union is ranked).
        cut_share: The item-KNN share of the blend the first cut orders by.
    """

    names: list[str]
    sources: list[str]
    depth: int
    knn_last_items: int
    trending_window_days: int
    base_share: float | None
    rounds: int
    valid_ndcg: float
    cut_depth: int = 0
    cut_share: float = 0.0

    @property
    def cut(self) -> Cut | None:
        return Cut(self.cut_depth, self.cut_share) if self.cut_depth else None


@dataclass(frozen=True)
class ItemFacts:
    """What the ranker knows of the items it was trained on, keyed by item id.

    Attributes:
        item_ids: ``[n]`` the items, in the table's row order.
        prior: ``[n]`` training counts (the ``prior`` feature).
        table: The neighbour table over these rows.
        event_rows: ``[e] int64`` rows of the events inside the longest popularity window
            before the ranker's data ends, oldest first.
        event_times: ``[e] int64`` their times (ms).
        first_seen: ``[n] int64`` each item's first event (int64 max: none).
    """

    item_ids: Sequence[str]
    prior: np.ndarray
    table: NeighbourTable
    event_rows: np.ndarray
    event_times: np.ndarray
    first_seen: np.ndarray


def candidate_sources(
    two_tower: TwoTowerSource, neighbours: NeighbourSource, trending: Trending
) -> dict[str, Source]:
    """The ranker's sources by name, in the order of their feature columns (:data:`SOURCES`):
    one place for the offline walk and the server."""
    return {"two_tower": two_tower, "neighbours": neighbours, "trending": TrendingSource(trending)}


def base_score(features_: np.ndarray, names: Sequence[str], share: float | None) -> np.ndarray:
    """The score the ranker adds to: the blend of the towers' and item-KNN's z-scores at
    ``share`` (0 everywhere when ``share`` is ``None``)."""
    if share is None:
        return np.zeros(len(features_))
    return blend_score(
        features_[:, names.index("tower_z")], features_[:, names.index("knn_z")], share
    )


def save(
    directory: Path,
    booster: Any,  # Any: a lightgbm.Booster
    settings: Settings,
    facts: ItemFacts,
    probe: np.ndarray,
) -> None:
    """Writes the ranker into ``directory/ranker`` (before the model's manifest is written,
    which then covers its files). ``probe``: feature rows whose offline scores are kept."""
    out = directory / RANKER_DIR
    out.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out / MODEL_FILE), num_iteration=settings.rounds)
    (out / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2))
    np.savez(
        out / ITEMS_FILE,
        item_ids=np.asarray(list(facts.item_ids), dtype=str),
        prior=np.asarray(facts.prior, np.float64),
        neighbours=facts.table.neighbours,
        weights=facts.table.weights,
        event_rows=np.asarray(facts.event_rows, np.int64),
        event_times=np.asarray(facts.event_times, np.int64),
        first_seen=np.asarray(facts.first_seen, np.int64),
    )
    pick = np.linspace(0, len(probe) - 1, min(PROBE_ROWS, len(probe))).astype(np.int64)
    rows = np.ascontiguousarray(probe[pick], np.float64)
    scores = booster.predict(rows, num_iteration=settings.rounds, num_threads=1)
    np.savez(out / PROBE_FILE, features=rows, scores=np.asarray(scores, np.float64))


def has_ranker(model_dir: Path) -> bool:
    return (model_dir / RANKER_DIR / SETTINGS_FILE).is_file()


class Compiled:
    """The LightGBM model compiled to native code (lleaves), scored on the calling thread."""

    def __init__(self, path: Path):
        import lleaves

        self._model = lleaves.Model(model_file=str(path))
        self._model.compile()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """``[m] float64`` raw scores; ``n_jobs=1``: no thread pool, nothing beside the
        serving thread."""
        out: np.ndarray = self._model.predict(np.ascontiguousarray(rows, np.float64), n_jobs=1)
        return out


class ServedRanker:
    """The sources, item state and compiled ranker of one model, on one index's rows.

    ``observe``/``advance`` keep the item state current (thread-safe); ``rank`` scores a
    batch."""

    def __init__(
        self,
        settings: Settings,
        predictor: Compiled,
        catalog: Catalog,
        sources: Mapping[str, Source],
        knn: NeighbourSource,
        state: ItemState,
        trending: Trending,
    ):
        self.settings = settings
        self._predictor = predictor
        self.catalog = catalog
        self.sources = dict(sources)
        self.knn = knn
        self.state = state
        self._trending = trending

    @classmethod
    def load(
        cls,
        model_dir: Path,
        item_ids: Sequence[str],
        catalog_vectors: np.ndarray,
        tags: np.ndarray,
        two_tower: TwoTowerSource,
    ) -> ServedRanker:
        """The model's ranker on an index's rows (``item_ids``, with the item vectors and
        tags in that order, and the index searched as the two-tower source).

        Raises:
            ArtifactError: a file is missing or unreadable, or the compiled model's scores
                differ from the offline ones by more than :data:`PARITY`.
        """
        folder = model_dir / RANKER_DIR
        try:
            settings = Settings(**json.loads((folder / SETTINGS_FILE).read_text()))
            with np.load(folder / ITEMS_FILE) as f:
                items = {k: f[k] for k in f.files}
            with np.load(folder / PROBE_FILE) as f:
                probe, expected = f["features"], f["scores"]
            predictor = Compiled(folder / MODEL_FILE)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"cannot load the ranker in {folder}: {exc}") from exc
        if tuple(settings.sources) != SOURCES:
            raise ArtifactError(f"{folder}: unknown candidate sources {settings.sources}")
        scored = predictor.predict(probe)
        worst = float(np.abs(scored - expected).max(initial=0.0))
        if not worst <= PARITY:
            raise ArtifactError(
                f"the compiled ranker in {folder} scores its probe up to {worst:.2e} away from "
                f"LightGBM's offline scores (at most {PARITY:g}); retrain or reinstall lleaves"
            )
        n = len(item_ids)
        to_row = SeenIndex(item_ids).lookup([str(i) for i in items["item_ids"]])
        # The index's row r ← the ranker's row of the same item (-1: the ranker never saw it).
        from_row = np.full(n, -1, np.int64)
        known = to_row >= 0
        from_row[to_row[known]] = np.flatnonzero(known)
        has = from_row >= 0
        src = np.where(has, from_row, 0)
        neighbours = to_row[items["neighbours"][src]]
        neighbours = np.where(has[:, None] & (items["neighbours"][src] >= 0), neighbours, -1)
        weights = np.where(neighbours >= 0, items["weights"][src], 0.0).astype(np.float32)
        table = NeighbourTable(neighbours.astype(np.int32), weights)
        prior = np.where(has, items["prior"][src], 0.0)
        catalog = Catalog(np.asarray(catalog_vectors, np.float32), tags, prior)
        state = ItemState(n)
        trending = Trending(n, settings.trending_window_days * DAY_MS, prior, refresh_ms=1000)
        rows = to_row[items["event_rows"]]
        kept = rows >= 0
        knn = NeighbourSource(table, settings.knn_last_items, prior)
        sources = candidate_sources(two_tower, knn, trending)
        served = cls(settings, predictor, catalog, sources, knn, state, trending)
        served.observe(rows[kept], items["event_times"][kept])
        state.first_seen = np.where(has, items["first_seen"][src], state.first_seen)
        return served

    def observe(self, rows: np.ndarray, times_ms: np.ndarray) -> None:
        """Events from the stream (index rows and times) into the item state, whose clock
        moves to the newest of them. The clock follows the stream, not the requests, so an
        answer does not depend on the times of the requests batched with it."""
        times = np.asarray(times_ms, np.int64)
        if not len(times):
            return
        for observer in (self.state, self._trending):
            observer.observe(rows, times)
            observer.advance(int(times.max()))

    def rank(
        self,
        query: Query,
        admit: Callable[[Union], np.ndarray] | None = None,
        wanted: np.ndarray | None = None,
    ) -> tuple[Union, np.ndarray]:
        """The batch's candidates and ``[m] float64`` ranker scores (higher first), as of
        the item state's clock (the stream's newest event).

        Args:
            admit: ``[m] bool`` which of the union's candidates each request may have (its
                filters), applied before the first cut.
            wanted: ``[B]`` answers each request asks for: the cut keeps at least as many.
        """
        depth = self.settings.depth
        lists: dict[str, Candidates] = {n: s(query, depth) for n, s in self.sources.items()}
        cut = self.settings.cut
        if cut is not None and wanted is not None:
            cut = cut.at_least(wanted)
        found, matrix = features(query, lists, self.catalog, self.state, self.knn, cut, admit)
        scores = self._predictor.predict(matrix)
        scores = scores + base_score(matrix, self.settings.names, self.settings.base_share)
        return found, scores


def window_events(
    rows: np.ndarray,
    times_ms: np.ndarray,
    until_ms: int,
    windows_days: Sequence[int] = WINDOWS_DAYS,
) -> tuple[np.ndarray, np.ndarray]:
    """The events before ``until_ms`` still inside the longest window, oldest first."""
    rows, times = np.asarray(rows, np.int64), np.asarray(times_ms, np.int64)
    keep = (times < until_ms) & (times >= until_ms - max(windows_days) * DAY_MS)
    order = np.argsort(times[keep], kind="stable")
    return rows[keep][order], times[keep][order]
