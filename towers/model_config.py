"""The two-tower architecture as data: which features each tower uses. No TensorFlow here,
so the serving runtime can read it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

USER_PARTS = ("profile", "history", "time")
ITEM_PARTS = ("genres", "title", "year")
USER_TABLES = {
    "user_emb": "user",
    "gender_emb": "gender",
    "age_emb": "age",
    "occupation_emb": "occupation",
    "zip_emb": "zip",
    "item_emb": "history",
    "hour_emb": "hour",
    "weekday_emb": "weekday",
}
"""Each user-tower embedding table and the encoded input (``towers.encoding.UserInputs``)
that indexes it; ``item_emb`` is pooled over the history."""
PART_TABLES = {
    "profile": ("gender_emb", "age_emb", "occupation_emb", "zip_emb"),
    "history": ("item_emb",),
    "time": ("hour_emb", "weekday_emb"),
}


@dataclass(frozen=True)
class TowerConfig:
    """The architecture, saved as ``tower.json`` beside the weights.

    Attributes:
        dim: Embedding width of both towers.
        user_parts: Which of ``USER_PARTS`` feed the user tower beside the user id.
        item_parts: Which of ``ITEM_PARTS`` feed the item tower beside the item id.
        normalize: L2-normalize both towers' outputs (scores are cosines).
        history_pooling: How the recent items are pooled: ``"mean"`` (each counts the same)
            or ``"position"`` (a learned weight per recency rank, normalised over the known
            items, so the last item can count more than the twentieth).
        user_concat: The tables whose rows the trained user tower concatenated before its
            hidden layer, in that order (``USER_TABLES`` names): written by the export from
            the model itself, so the NumPy runtime splits the hidden kernel by what the
            model did rather than by a copy of its code. Empty before the export.
    """

    dim: int
    user_parts: tuple[str, ...] = USER_PARTS
    item_parts: tuple[str, ...] = ITEM_PARTS
    normalize: bool = True
    history_pooling: str = "mean"
    user_concat: tuple[str, ...] = ()

    def user_tables(self) -> tuple[str, ...]:
        """The tables ``user_parts`` use, in the user tower's concatenation order."""
        tables = ["user_emb"]
        for part in ("profile", "history", "time"):
            if part in self.user_parts:
                tables += PART_TABLES[part]
        return tuple(tables)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> TowerConfig:
        data = json.loads(path.read_text())
        return cls(
            dim=int(data["dim"]),
            user_parts=tuple(data["user_parts"]),
            item_parts=tuple(data["item_parts"]),
            normalize=bool(data["normalize"]),
            history_pooling=str(data.get("history_pooling", "mean")),
            user_concat=tuple(data.get("user_concat", ())),
        )
