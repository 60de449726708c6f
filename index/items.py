"""What serving needs to know about each indexed item beside its vector: its genres (for
filters) and its popularity (for the cold-start answer). Written into the index version,
row-aligned with the vectors, and covered by the manifest's checksums.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import ArtifactError, DataError, InvalidRequestError

GENRES_FILE = "genres.npy"
POPULAR_FILE = "popular.npz"
MAX_GENRES = 64
POPULAR_ROWS = 1000
"""Rows kept in popularity order: enough for any k after filters that pass 10 % of items."""


def genre_bits(genres: Iterable[Iterable[str]], names: Sequence[str]) -> np.ndarray:
    """``[n] uint64``: bit ``i`` set when the item has genre ``names[i]``; unknown names are
    ignored (the model's genre list is what filters can name)."""
    if len(names) > MAX_GENRES:
        raise DataError(f"{len(names)} genres do not fit a {MAX_GENRES}-bit mask")
    bit = {name: 1 << i for i, name in enumerate(names)}
    return np.fromiter((sum(bit.get(g, 0) for g in set(item)) for item in genres), np.uint64)


def stack_bits(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Chunks' ``genre_bits`` as one ``[n] uint64`` array (empty for no chunks)."""
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def popular_rows(
    item_ids: Sequence[str], counts: Mapping[str, int], keep: int = POPULAR_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """The ``keep`` most interacted-with rows, most first (ties: lower row first).

    Returns:
        ``[n] int64`` rows and ``[n] float32`` shares of all interactions.
    """
    per_row = np.fromiter((counts.get(i, 0) for i in item_ids), np.int64, len(item_ids))
    order = np.argsort(-per_row, kind="stable")[:keep]
    total = max(int(per_row.sum()), 1)
    return order.astype(np.int64), (per_row[order] / total).astype(np.float32)


def interaction_counts(interactions: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in interactions["item_id"].value_counts().items()}


def write(directory: Path, genres: np.ndarray, rows: np.ndarray, shares: np.ndarray) -> None:
    np.save(directory / GENRES_FILE, genres)
    np.savez(directory / POPULAR_FILE, rows=rows, shares=shares)


@dataclass(frozen=True)
class ItemMeta:
    """Row-aligned item metadata of one index version.

    Attributes:
        genre_names: Bit ``i`` of ``genres`` is ``genre_names[i]``.
        genres: ``[items] uint64`` genre bit masks.
        popular: ``[n] int64`` rows, most popular first.
        popular_share: ``[n] float32`` each popular row's share of interactions.
    """

    genre_names: tuple[str, ...]
    genres: np.ndarray
    popular: np.ndarray
    popular_share: np.ndarray

    def genre_mask(self, names: Iterable[str]) -> int:
        """The bit mask of ``names``.

        Raises:
            InvalidRequestError: a name is not one of the catalog's genres.
        """
        mask = 0
        for name in names:
            if name not in self.genre_names:
                known = ", ".join(self.genre_names)
                raise InvalidRequestError(f"unknown genre {name!r}; the catalog's genres: {known}")
            mask |= 1 << self.genre_names.index(name)
        return mask

    def passing(self, include: int, exclude: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Which items pass a pair of genre masks: one of ``include``'s genres (0: any) and
        none of ``exclude``'s. The one place a mask is applied, for the search filters and
        the popular-items answer alike.

        Args:
            rows: ``[n] int64`` rows to test; ``None``: every item.

        Returns:
            ``[n] bool`` (``[items]`` without ``rows``).
        """
        bits = self.genres if rows is None else self.genres[rows]
        keep = (bits & np.uint64(include)) != 0 if include else np.ones(len(bits), bool)
        if exclude:
            keep &= (bits & np.uint64(exclude)) == 0
        return keep

    @classmethod
    def load(cls, directory: Path, manifest: Mapping[str, object], items: int) -> ItemMeta:
        """Loads and checks the metadata (the manifest's checksums were verified already)."""
        try:
            genres = np.load(directory / GENRES_FILE)
            with np.load(directory / POPULAR_FILE) as popular:
                rows, shares = popular["rows"], popular["shares"]
            names = tuple(str(g) for g in manifest["genres"])  # type: ignore[attr-defined]  # JSON: TypeError below
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(
                f"index {directory} lacks its item metadata ({exc}); rebuild it with "
                "`recsys build-index`"
            ) from exc
        if genres.shape != (items,) or len(rows) != len(shares) or (rows >= items).any():
            raise ArtifactError(
                f"index {directory}: item metadata does not match its {items} items"
            )
        return cls(names, genres.astype(np.uint64), rows.astype(np.int64), shares)
