"""Versioned artifact directories, written atomically, with a ``CURRENT`` pointer.

A version is built in ``<root>/.<version>.tmp``, fsynced, then renamed into place, so a
reader never sees half of one; ``CURRENT`` is replaced with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recsys.errors import ArtifactError

MANIFEST = "manifest.json"
POINTER = "CURRENT"


def new_version() -> str:
    """A sortable, unique version name, e.g. ``20261127T140102123Z-3fa9c1`` (to the
    millisecond, so versions built within one second still sort in build order)."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000_000))
    return f"{stamp}{now // 1_000_000 % 1000:03d}Z-{secrets.token_hex(3)}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_version(root: Path, version: str) -> Iterator[Path]:
    """Yields a scratch directory that becomes ``root/version`` only if the block succeeds."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        _fsync_tree(staging)
        os.replace(staging, root / version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:  # Any: JSON
    """Writes ``manifest.json`` with a sha256 of every other file in ``directory``."""
    files = {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps({**manifest, "files": files}, indent=2))


def read_manifest(directory: Path, *, verify: bool = True) -> dict[str, Any]:  # Any: JSON
    """Reads a version's manifest and, by default, checks every file's checksum."""
    path = directory / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())  # Any: JSON
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} is missing: {directory} is not a complete version") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    if verify:
        for name, expected in manifest.get("files", {}).items():
            file = directory / name
            if not file.is_file() or sha256_file(file) != expected:
                raise ArtifactError(
                    f"{file} is missing or corrupt (checksum mismatch); rebuild this version"
                )
    return manifest


def publish(root: Path, version: str) -> None:
    """Points ``root/CURRENT`` at ``version`` atomically."""
    if not (root / version / MANIFEST).is_file():
        raise ArtifactError(f"cannot publish {root / version}: no manifest")
    tmp = root / f".{POINTER}.{secrets.token_hex(4)}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, root / POINTER)


def current(root: Path) -> Path:
    """The directory ``root/CURRENT`` points at."""
    pointer = root / POINTER
    try:
        version = pointer.read_text().strip()
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"{pointer} does not exist: nothing has been published there yet "
            "(run `recsys train` and `recsys build-index`)"
        ) from exc
    if not version:
        raise ArtifactError(f"{pointer} is empty; publish a version or roll back")
    directory = root / version
    if not directory.is_dir():
        raise ArtifactError(f"{pointer} names {version!r}, but {directory} does not exist")
    return directory
