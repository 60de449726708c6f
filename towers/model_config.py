"""The two-tower architecture as data: which features each tower uses. No TensorFlow here,
so the serving runtime can read it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

USER_PARTS = ("profile", "history", "time")
ITEM_PARTS = ("genres", "title", "year")


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
    """

    dim: int
    user_parts: tuple[str, ...] = USER_PARTS
    item_parts: tuple[str, ...] = ITEM_PARTS
    normalize: bool = True
    history_pooling: str = "mean"

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
        )
