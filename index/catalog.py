"""Item catalogs for the index build: MovieLens-100K's items, a synthetic catalog of any
size, or a Parquet catalog a user brings, produced in chunks so memory stays bounded however
many items there are.

A Parquet catalog has one row per item with the columns of ``COLUMNS``; other columns are
ignored. ``item_id`` may be an integer (it becomes its decimal string); a missing title,
year or genre list is an empty one (year 0: unknown). Every catalog can be written as
Parquet, which is what the Spark engine reads.

A synthetic catalog starts with the real items (so events and trained ids stay valid) and
continues with generated ones whose features follow the real catalog: genre sets drawn
from the real items' genre combinations, release years from the real year distribution
(spread over the decade), and titles of 2–6 words drawn from the real title vocabulary with
a power-law skew. Popularity follows a power law over a random permutation of the items.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from recsys.data import MovieLens
from recsys.errors import DataError
from towers.encoding import title_tokens

CHUNK = 100_000
TITLE_WORD_SKEW = 0.7
"""Power-law exponent of title-word draws: common words are common, most words still appear."""
COLUMNS = {
    "item_id": "string",
    "title": "string",
    "release_year": "integer",
    "genres": "list<string>",
}
"""The columns a catalog needs, with their kinds (integer ids are taken as strings too)."""
_WANTED = ", ".join(f"{name} ({kind})" for name, kind in COLUMNS.items())


def column_kind(dtype: pa.DataType) -> str:
    """The ``COLUMNS`` kind an Arrow type is, or its own name."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_integer(dtype):
        return "integer"
    if (pa.types.is_list(dtype) or pa.types.is_large_list(dtype)) and column_kind(
        dtype.value_type
    ) == "string":
        return "list<string>"
    return str(dtype)


def check_columns(kinds: Mapping[str, str], source: str) -> None:
    """Raises ``DataError`` naming the first missing or wrongly typed catalog column.

    Args:
        kinds: Column name → kind (``column_kind`` of its type), as the engine reads it.
    """
    for name, kind in COLUMNS.items():
        if name not in kinds:
            raise DataError(
                f"the catalog {source} has no column {name!r}; a catalog needs {_WANTED}"
            )
        got = kinds[name]
        if got != kind and not (name == "item_id" and got == "integer"):
            raise DataError(
                f"the catalog {source}'s column {name!r} is {got}, not {kind}; a catalog "
                f"needs {_WANTED}"
            )


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """A Parquet chunk in the form of ``MovieLens.items``: string ids, ``""`` for a missing
    title, 0 for a missing year, an empty list for missing genres."""
    return pd.DataFrame(
        {
            "item_id": [None if i is None else str(i) for i in frame["item_id"]],
            "title": frame["title"].fillna("").astype(str),
            "release_year": frame["release_year"].fillna(0).astype(np.int64),
            "genres": [() if g is None else tuple(g) for g in frame["genres"]],
        }
    )


@dataclass(frozen=True)
class Catalog:
    """A catalog as a sequence of item-table chunks (columns of ``MovieLens.items``)."""

    name: str
    size: int
    ml: MovieLens | None
    seed: int = 0
    chunk: int = CHUNK
    path: Path | None = None
    """The Parquet file or folder of a catalog a user brought."""

    @classmethod
    def movielens(cls, ml: MovieLens, chunk: int = CHUNK) -> Catalog:
        return cls("movielens", len(ml.items), ml, chunk=chunk)

    @classmethod
    def synthetic(cls, ml: MovieLens, size: int, seed: int = 0, chunk: int = CHUNK) -> Catalog:
        if size < len(ml.items):
            raise DataError(
                f"a synthetic catalog holds the {len(ml.items):,} real items and more; "
                f"asked for {size:,}"
            )
        return cls(f"synthetic-{size}", size, ml, seed, chunk)

    @classmethod
    def parquet(cls, path: Path, chunk: int = CHUNK) -> Catalog:
        """A catalog read from a Parquet file (or a folder of them).

        Raises:
            DataError: the path cannot be read as Parquet, or a column is missing or of the
                wrong type.
        """
        dataset = _dataset(path)
        check_columns({f.name: column_kind(f.type) for f in dataset.schema}, str(path))
        return cls(f"parquet:{path}", dataset.count_rows(), None, chunk=chunk, path=path)

    def chunks(self) -> Iterator[pd.DataFrame]:
        """Item tables of at most ``chunk`` rows, the real items first."""
        if self.path is not None:
            batches = _dataset(self.path).to_batches(columns=list(COLUMNS), batch_size=self.chunk)
            for batch in batches:
                if batch.num_rows:
                    yield tidy(batch.to_pandas())
            return
        assert self.ml is not None, "a generated catalog is drawn from the data set"
        real = self.ml.items[["item_id", "title", "release_year", "genres"]]
        for start in range(0, len(real), self.chunk):
            yield real.iloc[start : start + self.chunk].reset_index(drop=True)
        generated = self.size - len(real)
        if generated <= 0:
            return
        rng = np.random.default_rng(self.seed)
        genre_sets = list(real["genres"])
        years = real["release_year"].to_numpy()
        years = years[years > 0]
        words = pd.Series([w for t in real["title"] for w in title_tokens(t)]).value_counts()
        vocab = words.index.to_numpy(dtype=object)
        weights = np.arange(1, len(vocab) + 1, dtype=np.float64) ** -TITLE_WORD_SKEW
        weights /= weights.sum()
        for start in range(0, generated, self.chunk):
            n = min(self.chunk, generated - start)
            lengths = rng.integers(2, 7, size=n)
            drawn = vocab[rng.choice(len(vocab), size=int(lengths.sum()), p=weights)]
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            titles = [" ".join(drawn[bounds[i] : bounds[i + 1]]) for i in range(n)]
            yield pd.DataFrame(
                {
                    "item_id": [f"s{start + i}" for i in range(n)],
                    "title": titles,
                    "release_year": years[rng.integers(0, len(years), size=n)]
                    + rng.integers(-4, 5, size=n),
                    "genres": [genre_sets[g] for g in rng.integers(0, len(genre_sets), size=n)],
                }
            )

    def write_parquet(self, path: Path) -> Path:
        """Writes the catalog as one Parquet file of ``COLUMNS``, chunk by chunk."""
        schema = pa.schema(
            [
                ("item_id", pa.string()),
                ("title", pa.string()),
                ("release_year", pa.int32()),
                ("genres", pa.list_(pa.string())),
            ]
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(path, schema) as writer:
            for chunk in self.chunks():
                frame = chunk.assign(genres=[list(g) for g in chunk["genres"]])
                writer.write_table(pa.Table.from_pandas(frame, schema, preserve_index=False))
        return path


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
