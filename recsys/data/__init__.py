"""The data: the data schema every layer follows (``schema.py``), the reader that turns a
schema's files into checked canonical frames (``dataset.py``), MovieLens-100K (fetched from
PyPI, its two layouts read and converted into the Parquet files its schema names:
``fetch.py``, ``readers.py``, ``movielens.py``, ``ml-100k.yaml``), a synthetic shop of any
size (``shop.py``), and the split by time (``split.py``).

MovieLens-100K's own frames (``load_movielens``) keep its canonical form: ids are strings
(``"196"``); titles carry no trailing ``(1995)`` because the year lives in ``release_year``
(0 when unknown); genres are tuples in the order of :data:`ML100K_GENRES`.
"""

from __future__ import annotations

from recsys.data.fetch import (
    DATASET_DIR,
    RECBOLE_FILES,
    RECBOLE_WHEEL,
    fetch_ml100k,
)
from recsys.data.movielens import ML100K_COUNTS, ExpectedCounts, MovieLens, load_movielens
from recsys.data.readers import ML100K_GENRES
from recsys.data.split import temporal_split

__all__ = [
    "DATASET_DIR",
    "ML100K_COUNTS",
    "ML100K_GENRES",
    "RECBOLE_FILES",
    "RECBOLE_WHEEL",
    "ExpectedCounts",
    "MovieLens",
    "fetch_ml100k",
    "load_movielens",
    "temporal_split",
]
