"""What serving needs to know about each indexed item beside its vector: its values of the
filter field (the data schema's ``filter``, for the API's filters) and its popularity (for
the cold-start answer). Written into the index version,
row-aligned with the vectors, and covered by the manifest's checksums.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import ArtifactError, DataError, InvalidRequestError

TAGS_FILE = "tags.npy"
POPULAR_FILE = "popular.npz"
MAX_FILTER_VALUES = 4096
"""The most values the filter field may have: each item keeps a bit per value (512 bytes an
item at the limit, 0.5 GB for a million items)."""
POPULAR_ROWS = 1000
"""Rows kept in popularity order: enough for any k after filters that pass 10 % of items."""


def words_for(values: int) -> int:
    """64-bit words a bitset of ``values`` bits takes."""
    return -(-values // 64)


def tag_bits(tags: Iterable[Iterable[str]], names: Sequence[str]) -> np.ndarray:
    """``[n, words] uint64``: bit ``i`` (of word ``i // 64``) set when the item has the filter
    value ``names[i]``; unknown values are ignored (the model's values are what filters can
    name). ``words`` is 0 when there are no names (no filter field)."""
    if len(names) > MAX_FILTER_VALUES:
        raise DataError(
            f"the filter field has {len(names):,} values; at most {MAX_FILTER_VALUES:,} fit the "
            "index's per-item bitsets: filter on a coarser tags feature"
        )
    bit = {name: i for i, name in enumerate(names)}
    rows: list[int] = []
    bits: list[int] = []
    n = 0
    for n, item in enumerate(tags, start=1):
        for i in {bit[t] for t in item if t in bit}:
            rows.append(n - 1)
            bits.append(i)
    out = np.zeros((n, words_for(len(names))), np.uint64)
    b = np.array(bits, np.int64)
    np.bitwise_or.at(
        out,
        (np.array(rows, np.int64), b >> 6),
        np.left_shift(np.uint64(1), (b & 63).astype(np.uint64)),
    )
    return out


def stack_bits(parts: Sequence[np.ndarray], words: int = 0) -> np.ndarray:
    """Chunks' ``tag_bits`` as one ``[n, words] uint64`` array (empty for no chunks)."""
    return np.concatenate(parts) if parts else np.zeros((0, words), np.uint64)


def mask_words(mask: int, words: int) -> np.ndarray:
    """A filter mask (a Python int, any width) as ``[words] uint64``."""
    return np.array([(mask >> (64 * w)) & 0xFFFFFFFFFFFFFFFF for w in range(words)], np.uint64)


def bits_passing(bits: np.ndarray, include: int, exclude: int) -> np.ndarray:
    """``[n] bool``: which of ``[n, words]`` filter bitsets carry one of ``include``'s values
    (0: any) and none of ``exclude``'s."""
    words = bits.shape[1]
    keep = np.ones(len(bits), bool)
    if include:
        keep &= (bits & mask_words(include, words)).any(axis=1)
    if exclude:
        keep &= ~(bits & mask_words(exclude, words)).any(axis=1)
    passes: np.ndarray = keep
    return passes


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


def write(directory: Path, tags: np.ndarray, rows: np.ndarray, shares: np.ndarray) -> None:
    np.save(directory / TAGS_FILE, tags)
    np.savez(directory / POPULAR_FILE, rows=rows, shares=shares)


@dataclass(frozen=True)
class ItemMeta:
    """Row-aligned item metadata of one index version.

    Attributes:
        filter_field: The item tags feature the API's filters name (the data schema's
            ``filter``; ``include_genres``/``exclude_genres`` on the wire); ``None``: none.
        filter_values: Bit ``i`` of ``tags`` is ``filter_values[i]``.
        tags: ``[items, words] uint64`` each item's filter values as a bitset.
        popular: ``[n] int64`` rows, most popular first.
        popular_share: ``[n] float32`` each popular row's share of interactions.
    """

    filter_field: str | None
    filter_values: tuple[str, ...]
    tags: np.ndarray
    popular: np.ndarray
    popular_share: np.ndarray

    def filter_mask(self, names: Iterable[str]) -> int:
        """The bit mask of ``names`` (a Python int: any number of values).

        Raises:
            InvalidRequestError: a name is not one of the catalog's filter values.
        """
        mask = 0
        for name in names:
            if name not in self.filter_values:
                if self.filter_field is None:
                    raise InvalidRequestError(
                        "this catalog has no filter field (the data schema declares none); "
                        "send no include_genres or exclude_genres"
                    )
                known = ", ".join(self.filter_values[:50])
                more = len(self.filter_values) - 50
                raise InvalidRequestError(
                    f"unknown {self.filter_field} value {name!r}; the catalog's: {known}"
                    + (f" and {more:,} more" if more > 0 else "")
                )
            mask |= 1 << self.filter_values.index(name)
        return mask

    def passing(self, include: int, exclude: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Which items pass a pair of filter masks: one of ``include``'s values (0: any) and
        none of ``exclude``'s. The one place a mask is applied, for the search filters and
        the popular-items answer alike.

        Args:
            rows: ``[n] int64`` rows to test; ``None``: every item.

        Returns:
            ``[n] bool`` (``[items]`` without ``rows``).
        """
        return bits_passing(self.tags if rows is None else self.tags[rows], include, exclude)

    @classmethod
    def load(cls, directory: Path, manifest: Mapping[str, object], items: int) -> ItemMeta:
        """Loads and checks the metadata (the manifest's checksums were verified already)."""
        try:
            tags = np.load(directory / TAGS_FILE)
            with np.load(directory / POPULAR_FILE) as popular:
                rows, shares = popular["rows"], popular["shares"]
            spec = manifest["filter"]
            field = spec["field"]  # type: ignore[index]  # JSON: TypeError below
            names = tuple(str(g) for g in spec["values"])  # type: ignore[index]  # JSON
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(
                f"index {directory} lacks its item metadata ({exc}); rebuild it with "
                "`recsys build-index`"
            ) from exc
        words = words_for(len(names))
        if tags.shape != (items, words) or len(rows) != len(shares) or (rows >= items).any():
            raise ArtifactError(
                f"index {directory}: item metadata does not match its {items} items"
            )
        return cls(
            None if field is None else str(field),
            names,
            tags.astype(np.uint64),
            rows.astype(np.int64),
            shares,
        )
