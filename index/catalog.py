"""Item catalogs for the index build: the data set's items, a synthetic catalog of any size
drawn from them, or a Parquet catalog a user brings, produced in chunks of canonical columns
(``recsys.data.dataset``: ``item_id`` and one column per declared item feature) so memory
stays bounded however many items there are.

A Parquet catalog has the columns the data schema's ``items`` table declares (its id column
and each feature's column); other columns are ignored, and each chunk is checked and
converted by the feature's kind exactly as the data set's own item file is. Every catalog can
be written as such a Parquet file (``write_parquet``), which is what the Spark engine reads.

A synthetic catalog starts with the real items (so events and trained ids stay valid) and
continues with generated ones whose features follow the real catalog, feature by feature:
categorical values and tag sets drawn from the real items', numbers from the real values
(years moved by up to four), and texts of 2–6 words drawn from the real words with a
power-law skew. Popularity follows a power law over a random permutation of the items.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from catalog.events import catalog_frame
from catalog.fold import CatalogChanges
from recsys.data.dataset import SECONDS_PER_YEAR, Dataset, convert, ids_of
from recsys.data.schema import BUCKETED, Table
from recsys.errors import DataError
from towers.encoding import words

CHUNK = 100_000
TITLE_WORD_SKEW = 0.7
"""Power-law exponent of text-word draws: common words are common, most words still appear."""
_ARROW = {
    "categorical": pa.string(),
    "text": pa.string(),
    "tags": pa.list_(pa.string()),
    "date": pa.timestamp("ms", tz="UTC"),
}


def to_canonical(batch: pa.Table | pa.RecordBatch, table: Table, source: str) -> pd.DataFrame:
    """A batch of a catalog file's columns (``table`` names them) as canonical columns.

    Raises:
        DataError: an id is empty, or a feature's values are not of its kind.
    """
    where = Path(source)
    frame = pd.DataFrame({"item_id": ids_of(batch.column(table.id), where, table.id)})
    for name, feature in table.features.items():
        frame[name] = convert(batch.column(feature.source(name)), feature, where, name).to_numpy()
    return frame


@dataclass(frozen=True)
class Catalog:
    """A catalog as a sequence of canonical item-table chunks.

    Attributes:
        items: The data schema's items table: the features every chunk has.
        data: The data set (for its own and synthetic catalogs).
        path: The Parquet file or folder of a catalog a user brought, with ``table``'s
            columns.
    """

    name: str
    size: int
    items: Table
    data: Dataset | None
    seed: int = 0
    chunk: int = CHUNK
    path: Path | None = None
    table: Table | None = None
    changes: CatalogChanges | None = None
    """The catalog topic folded in: changed items' rows replaced or dropped, new ones last."""
    base_size: int | None = None
    """Items before ``changes`` (``size`` counts them folded in)."""

    def with_changes(self, changes: CatalogChanges) -> Catalog:
        """This catalog with the topic's changes applied (its size counted exactly)."""
        removed = sum(1 for item in self._base_ids() if item in changes.latest)
        size = self.size - removed + len(changes.upserts)
        return dataclasses.replace(self, size=size, changes=changes, base_size=self._base_size)

    @property
    def _base_size(self) -> int:
        return self.size if self.base_size is None else self.base_size

    @classmethod
    def dataset(cls, data: Dataset, chunk: int = CHUNK) -> Catalog:
        return cls(data.name, len(data.items), data.schema.items, data, chunk=chunk)

    @classmethod
    def synthetic(cls, data: Dataset, size: int, seed: int = 0, chunk: int = CHUNK) -> Catalog:
        if size < len(data.items):
            raise DataError(
                f"a synthetic catalog holds the {len(data.items):,} real items and more; "
                f"asked for {size:,}"
            )
        return cls(f"synthetic-{size}", size, data.schema.items, data, seed, chunk)

    @classmethod
    def parquet(
        cls, path: Path, items: Table, chunk: int = CHUNK, table: Table | None = None
    ) -> Catalog:
        """A catalog read from a Parquet file (or a folder of them) whose columns are
        ``table``'s (default: the data schema's ``items``).

        Raises:
            DataError: the path cannot be read as Parquet, or a declared column is missing.
        """
        table = table or items
        dataset = _dataset(path)
        found = dataset.schema.names
        for column in [table.id, *(f.source(n) for n, f in table.features.items())]:
            if column not in found:
                raise DataError(
                    f"the catalog {path} has no column {column!r}, which the data schema "
                    f"declares; its columns: {found}"
                )
        return cls(
            f"parquet:{path}",
            dataset.count_rows(),
            items,
            None,
            chunk=chunk,
            path=path,
            table=table,
        )

    @property
    def columns(self) -> list[str]:
        """The Parquet columns ``chunks`` reads (a brought catalog's)."""
        assert self.table is not None
        return [self.table.id, *(f.source(n) for n, f in self.table.features.items())]

    def chunks(self) -> Iterator[pd.DataFrame]:
        """Canonical item tables of at most ``chunk`` rows, the real items first (then,
        with ``changes``, the upserted items by id; changed items' old rows dropped)."""
        if self.changes is None:
            yield from self._base_chunks()
            return
        latest = self.changes.latest
        for frame in self._base_chunks():
            kept = frame[~frame["item_id"].isin(latest)].reset_index(drop=True)
            if len(kept):
                yield kept
        upserts = self.changes.upserts
        for start in range(0, len(upserts), self.chunk):
            yield catalog_frame(upserts[start : start + self.chunk])

    def _base_ids(self) -> Iterator[str]:
        if self.path is not None:
            assert self.table is not None
            for batch in _dataset(self.path).to_batches(columns=[self.table.id]):
                yield from ids_of(batch.column(0), self.path, self.table.id)
            return
        assert self.data is not None
        yield from self.data.items["item_id"]
        yield from (f"s{i}" for i in range(max(self._base_size - len(self.data.items), 0)))

    def _base_chunks(self) -> Iterator[pd.DataFrame]:
        if self.path is not None:
            assert self.table is not None
            batches = _dataset(self.path).to_batches(columns=self.columns, batch_size=self.chunk)
            for batch in batches:
                if batch.num_rows:
                    yield to_canonical(batch, self.table, str(self.path))
            return
        assert self.data is not None, "a generated catalog is drawn from the data set"
        real = self.data.items
        for start in range(0, len(real), self.chunk):
            yield real.iloc[start : start + self.chunk].reset_index(drop=True)
        generated = self._base_size - len(real)
        if generated <= 0:
            return
        rng = np.random.default_rng(self.seed)
        draw = {name: _drawer(real[name], f.kind) for name, f in self.items.features.items()}
        for start in range(0, generated, self.chunk):
            n = min(self.chunk, generated - start)
            frame = pd.DataFrame({"item_id": [f"s{start + i}" for i in range(n)]})
            for name, drawer in draw.items():
                frame[name] = drawer(rng, n)
            yield frame

    def write_parquet(self, path: Path) -> Path:
        """Writes the catalog as one Parquet file with the data schema's item columns (so it
        reads back as ``index.catalog``), chunk by chunk."""
        table = self.items
        schema = pa.schema(
            [(table.id, pa.string())]
            + [(f.source(n), _ARROW.get(f.kind, pa.float64())) for n, f in table.features.items()]
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(path, schema) as writer:
            for chunk in self.chunks():
                columns = {table.id: chunk["item_id"]}
                for name, f in table.features.items():
                    values = chunk[name]
                    if f.kind == "tags":
                        values = [list(t) for t in values]
                    elif f.kind == "date":
                        seconds = (values.to_numpy(np.float64) - 1970.0) * SECONDS_PER_YEAR
                        values = pd.to_datetime(np.round(seconds * 1000), unit="ms", utc=True)
                    columns[f.source(name)] = values
                frame = pd.DataFrame(columns)
                writer.write_table(pa.Table.from_pandas(frame, schema, preserve_index=False))
        return path


def _drawer(real: pd.Series, kind: str):  # type: ignore[no-untyped-def]  # a small closure
    """A function ``(rng, n) -> values`` drawing ``n`` values like ``real``'s."""
    if kind in BUCKETED:
        known = real.to_numpy(np.float64)
        known = known[~np.isnan(known)]
        if not len(known):
            return lambda rng, n: np.full(n, np.nan)
        jitter = 4 if kind == "year" else 0
        return lambda rng, n: (
            known[rng.integers(0, len(known), size=n)] + rng.integers(-jitter, jitter + 1, size=n)
        )
    if kind == "text":
        counts = pd.Series([w for t in real for w in words(t)], dtype=object).value_counts()
        vocab = counts.index.to_numpy(dtype=object)
        if not len(vocab):
            return lambda rng, n: [""] * n
        weights = np.arange(1, len(vocab) + 1, dtype=np.float64) ** -TITLE_WORD_SKEW
        weights /= weights.sum()

        def texts(rng: np.random.Generator, n: int) -> list[str]:
            lengths = rng.integers(2, 7, size=n)
            drawn = vocab[rng.choice(len(vocab), size=int(lengths.sum()), p=weights)]
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            return [" ".join(drawn[bounds[i] : bounds[i + 1]]) for i in range(n)]

        return texts
    values = real.tolist()
    return lambda rng, n: [values[i] for i in rng.integers(0, len(values), size=n)]


def _dataset(path: Path) -> pads.Dataset:
    try:
        return pads.dataset(path, format="parquet")
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"cannot read the catalog {path} as Parquet: {exc}") from exc


def popularity(size: int, seed: int = 0, exponent: float = 1.0) -> np.ndarray:
    """Power-law popularity weights for ``size`` items (a random item order), summing to 1."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    return rng.permutation(weights / weights.sum())
