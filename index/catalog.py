"""Item catalogs for the index build: MovieLens-100K's items, or a synthetic catalog of any
size, produced in chunks so memory stays bounded however many items there are.

A synthetic catalog starts with the real items (so events and trained ids stay valid) and
continues with generated ones whose features follow the real catalog: genre sets drawn
from the real items' genre combinations, release years from the real year distribution
(spread over the decade), and titles of 2–6 words drawn from the real title vocabulary with
a power-law skew. Popularity follows a power law over a random permutation of the items.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data import MovieLens
from recsys.errors import DataError
from towers.encoding import title_tokens

CHUNK = 100_000
TITLE_WORD_SKEW = 0.7
"""Power-law exponent of title-word draws: common words are common, most words still appear."""


@dataclass(frozen=True)
class Catalog:
    """A catalog as a sequence of item-table chunks (columns of ``MovieLens.items``)."""

    name: str
    size: int
    ml: MovieLens
    seed: int = 0
    chunk: int = CHUNK

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

    def chunks(self) -> Iterator[pd.DataFrame]:
        """Item tables of at most ``chunk`` rows, the real items first."""
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


def popularity(size: int, seed: int = 0, exponent: float = 1.0) -> np.ndarray:
    """Power-law popularity weights for ``size`` items (a random item order), summing to 1."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    return rng.permutation(weights / weights.sum())
