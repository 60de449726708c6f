"""RecBole atomic export: a :class:`evaluation.protocols.Split` as ``.inter`` files.

So RecBole itself can train and score on exactly the rows this project's protocols use
(``benchmark_filename: [train, valid, test]``), and any other library that reads RecBole's
atomic format can too. Files are written atomically: a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.protocols import Split, check_columns
from recsys.errors import DataError

RECBOLE_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
"""The header line of RecBole's own ``ml-100k.inter``."""


def write_recbole_atomic(split: Split, folder: Path, name: str) -> list[Path]:
    """Writes a split as RecBole atomic ``.inter`` files for ``benchmark_filename``.

    Files are ``<name>.train.inter``, ``<name>.valid.inter`` (only when ``split.valid`` is
    not ``None``) and ``<name>.test.inter``, formatted like RecBole's own ``ml-100k.inter``:
    UTF-8, tab-separated, header :data:`RECBOLE_HEADER`, ``\\n`` line ends (a final one
    included), timestamps as integers and ratings in their shortest form (``3`` for 3.0,
    ``3.5`` for 3.5). Point RecBole at it with ``data_path: <folder's parent>``,
    ``dataset: <name>`` (``folder`` should be named ``name``) and
    ``benchmark_filename: [train, valid, test]`` (``[train, test]`` without valid).

    Each file is written to a temporary file in ``folder`` and moved into place with
    ``os.replace``, so a reader never sees half a file. When ``split.valid`` is ``None`` a
    stale ``<name>.valid.inter`` from an earlier export is removed, so it cannot be mixed
    with the new parts.

    Args:
        split: The split to export; its frames need
            :data:`evaluation.protocols.INTERACTION_COLUMNS`.
        folder: Output folder, created if missing.
        name: Dataset token (file name prefix), e.g. ``"ml-100k"``.

    Returns:
        The written paths in train, valid, test order.

    Raises:
        DataError: ``name`` is not a plain file name, an id is empty or holds a tab or line
            break, a rating is not finite, or a part lacks a column.
    """
    if not name or name in (".", "..") or any(c in name for c in "/\\\t\r\n"):
        raise DataError(f"RecBole dataset name must be a plain file name, got {name!r}")
    folder = Path(folder)
    texts = {part: _atomic_text(frame, part) for part, frame in split.parts().items()}
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for part, text in texts.items():
        path = folder / f"{name}.{part}.inter"
        _write_atomically(path, text)
        written.append(path)
    if split.valid is None:
        (folder / f"{name}.valid.inter").unlink(missing_ok=True)
    return written


def _atomic_text(frame: pd.DataFrame, part: str) -> str:
    check_columns(frame, f"the {part} part")
    users = frame["user_id"].astype(str).tolist()
    items = frame["item_id"].astype(str).tolist()
    for what, ids in (("user_id", users), ("item_id", items)):
        bad = [i for i in ids if not i or any(c in i for c in "\t\r\n")]
        if bad:
            raise DataError(
                f"the {part} part has {len(bad):,} {what}(s) that are empty or hold a tab or "
                f"line break, e.g. {bad[0]!r}; RecBole atomic files cannot store them"
            )
    ratings = frame["value"].to_numpy(np.float32)
    if not np.isfinite(ratings).all():
        raise DataError(f"the {part} part has non-finite ratings")
    # Shortest text that reads back as the same float32: "3" for 3.0 (RecBole's own style).
    rating_text = [np.format_float_positional(r, trim="-") for r in ratings]
    timestamp_text = frame["timestamp"].to_numpy(np.int64).astype(str).tolist()
    rows = map("\t".join, zip(users, items, rating_text, timestamp_text, strict=True))
    return "\n".join([RECBOLE_HEADER, *rows]) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
