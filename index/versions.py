"""The index read path: versions on disk, the verified load, rollback and pruning.

What serving imports of the index (so the server imports nothing of the build): a version
is a directory of ``index.faiss``, ``item_ids.json`` and the item files beside a manifest
with checksums; ``CURRENT`` names the one that serves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import faiss

from index.tuning import set_knob
from recsys import artifacts
from recsys.errors import ArtifactError

INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.json"


def search_params(manifest: dict[str, Any]) -> dict[str, int]:  # Any: a JSON manifest
    return {k: int(v) for k, v in dict(manifest.get("params", {})).items()}


def versions(root: Path) -> list[str]:
    """Complete index versions under ``root``, oldest first (staging dirs are not versions)."""
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / artifacts.MANIFEST).is_file()
    )


def prune(root: Path, keep: int) -> list[str]:
    """Deletes all but the newest ``keep`` versions; never the current one."""
    current = artifacts.current(root).name
    old = [v for v in versions(root) if v != current][: max(0, len(versions(root)) - keep)]
    for version in old:
        shutil.rmtree(root / version, ignore_errors=True)
    return old


def rollback(root: Path, to: str | None = None) -> str:
    """Points ``CURRENT`` at ``to`` (default: the newest version older than the current one)
    after verifying its checksums; returns the version now current."""
    current = artifacts.current(root).name
    if to is None:
        older = [v for v in versions(root) if v < current]
        if not older:
            raise ArtifactError(f"no index version older than {current} to roll back to")
        to = older[-1]
    if to not in versions(root):
        raise ArtifactError(f"no index version {to!r} in {root}; see `recsys index list`")
    load_index(root / to)  # checksums, id count and dimension, before anything moves
    artifacts.publish(root, to)
    return to


def read_item_ids(directory: Path) -> list[str]:
    """The item ids of an index version, row-aligned with its vectors."""
    try:
        ids: list[str] = json.loads((directory / IDS_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {directory / IDS_FILE}: {exc}") from exc
    return ids


def published_catalog(root: Path) -> set[str] | None:
    """The item ids of the index version ``root``'s CURRENT names, for checking events
    against; ``None`` when nothing is published yet (events are then not checked)."""
    try:
        directory = artifacts.current(root)
    except ArtifactError:
        return None
    return set(read_item_ids(directory))


# Any: the version's JSON manifest.
def load_index(directory: Path) -> tuple[faiss.Index, list[str], dict[str, Any]]:
    """Loads and verifies an index version: checksums, id count and dimension agree; the
    search parameters chosen at build time are set."""
    manifest = artifacts.read_manifest(directory)
    try:
        index = faiss.read_index(str(directory / INDEX_FILE))
    except RuntimeError as exc:
        raise ArtifactError(f"cannot load index {directory}: {exc}") from exc
    item_ids = read_item_ids(directory)
    if index.ntotal != len(item_ids) or index.ntotal != manifest["items"]:
        raise ArtifactError(
            f"index {directory} holds {index.ntotal} vectors but {len(item_ids)} ids "
            f"(manifest says {manifest['items']}); rebuild it"
        )
    if index.d != manifest["dim"]:
        raise ArtifactError(f"index {directory} has dim {index.d}, manifest says {manifest['dim']}")
    for name, value in search_params(manifest).items():
        set_knob(index, name, value)
    return index, item_ids, manifest
