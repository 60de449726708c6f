"""The two-tower architecture as data: which inputs each tower reads and how it pools them.
No TensorFlow here, so the serving runtime can read it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

USER_PARTS = ("profile", "history", "time")
TIME_TABLES = ("hour_emb", "weekday_emb")


def table_input(table: str) -> str:
    """The encoded input (``towers.encoding.Inputs`` name) that indexes a tower table:
    ``user_emb`` → ``user``, ``user_age_emb`` → ``user_age``; ``item_emb`` in the user tower
    is pooled over the ``history``."""
    return "history" if table == "item_emb" else table.removesuffix("_emb")


@dataclass(frozen=True)
class TowerConfig:
    """The architecture, saved as ``tower.json`` beside the weights.

    Attributes:
        dim: Embedding width of both towers.
        user_parts: Which of ``USER_PARTS`` feed the user tower beside the user id.
        user_features: The declared user features the ``profile`` part reads, in schema
            order, each with its pooling (``one``, ``sum`` or ``mean``:
            ``towers.encoding.FeatureEncoder.pooling``).
        item_features: The declared item features the item tower reads beside the item id,
            with their pooling.
        normalize: L2-normalize both towers' outputs (scores are cosines).
        history_pooling: How the recent items are pooled: ``"mean"`` (each counts the same)
            or ``"position"`` (a learned weight per recency rank, normalised over the known
            items, so the last item can count more than the twentieth).
        user_concat: The tables whose rows the trained user tower concatenated before its
            hidden layer, in that order: written by the export from the model itself, so the
            NumPy runtime splits the hidden kernel by what the model did rather than by a
            copy of its code. Empty before the export.
    """

    dim: int
    user_parts: tuple[str, ...] = USER_PARTS
    user_features: tuple[tuple[str, str], ...] = ()
    item_features: tuple[tuple[str, str], ...] = ()
    normalize: bool = True
    history_pooling: str = "mean"
    user_concat: tuple[str, ...] = ()

    def user_tables(self) -> tuple[str, ...]:
        """The tables ``user_parts`` use, in the user tower's concatenation order."""
        tables = ["user_emb"]
        if "profile" in self.user_parts:
            tables += [f"user_{name}_emb" for name, _ in self.user_features]
        if "history" in self.user_parts:
            tables.append("item_emb")
        if "time" in self.user_parts:
            tables += TIME_TABLES
        return tuple(tables)

    def pooling(self, table: str) -> str:
        """How the user tower pools a table's rows (``one`` for the id and time tables)."""
        if table == "item_emb":
            return self.history_pooling
        if table in ("user_emb", *TIME_TABLES):
            return "one"
        return dict(self.user_features)[table.removeprefix("user_").removesuffix("_emb")]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> TowerConfig:
        data = json.loads(path.read_text())
        return cls(
            dim=int(data["dim"]),
            user_parts=tuple(data["user_parts"]),
            user_features=tuple((str(n), str(p)) for n, p in data["user_features"]),
            item_features=tuple((str(n), str(p)) for n, p in data["item_features"]),
            normalize=bool(data["normalize"]),
            history_pooling=str(data.get("history_pooling", "mean")),
            user_concat=tuple(data.get("user_concat", ())),
        )
