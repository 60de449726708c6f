"""MovieLens-100K: fetch it, load it into validated DataFrames, split it by time.

Two on-disk layouts load into identical frames:

* RecBole atomic files (``ml-100k.inter``, ``ml-100k.item``, ``ml-100k.user``): tab-separated
  with typed headers such as ``user_id:token``. This is what :func:`fetch_ml100k` provides,
  because the ``recbole`` wheel on PyPI ships them and PyPI is the only registry reachable
  from every machine this project runs on.
* The official GroupLens ``ml-100k/`` folder (``u.data``, ``u.item``, ``u.user``, optionally
  ``u.genre``).

Canonical form, whatever the source: ids are strings (``"196"``); titles carry no trailing
``(1995)`` because the year lives in ``release_year`` (0 when unknown); genres are tuples in
the order of :data:`ML100K_GENRES`.
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
