"""Fetching MovieLens-100K: download the ``recbole`` wheel from PyPI and extract its
RecBole atomic files into the cache folder, atomically."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from recsys.artifacts import sha256_file
from recsys.errors import DataError

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
"""PyPI files never change once uploaded, so a mismatch means a corrupt or foreign file."""
_WHEEL_MEMBER_DIR = "recbole/dataset_example/ml-100k"
DATASET_DIR = "ml-100k"
"""Folder under the cache directory that :func:`fetch_ml100k` fills."""
RECBOLE_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")

_PIP_TIMEOUT_S = 600
_PIP_TAIL_LINES = 20


def fetch_ml100k(cache_dir: Path, *, log: Callable[[str], None] = print) -> Path:
    """Makes sure MovieLens-100K is on disk and returns the folder holding it.

    Idempotent: once ``<cache_dir>/ml-100k`` holds the three RecBole files nothing is
    downloaded again. Otherwise the ``recbole`` wheel is fetched with pip (unless it is
    already under ``<cache_dir>/wheels``), its hash checked, and the three files extracted.
    Both the wheel and the data folder are moved into place with a rename, so a run that is
    killed midway leaves either nothing or a complete copy, never half of one.

    Args:
        cache_dir: Folder to keep the wheel and the extracted data in; created if missing.
        log: Receives one line per step, for progress output.

    Returns:
        ``<cache_dir>/ml-100k``, holding ``ml-100k.inter``, ``.item`` and ``.user``.

    Raises:
        DataError: pip failed (the message carries the end of its output), the wheel is not
            the expected file, or the cache folder cannot be written.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / DATASET_DIR
    if _has_all(target, RECBOLE_FILES):
        log(f"MovieLens-100K already at {target}")
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        wheel = _ensure_wheel(cache_dir / "wheels", log)
        log(f"extracting MovieLens-100K from {wheel.name} into {target}")
        _extract_atomically(wheel, target)
    except OSError as e:
        raise DataError(f"cannot prepare MovieLens-100K under {cache_dir}: {e}") from e
    log(f"MovieLens-100K ready at {target}")
    return target


def _has_all(folder: Path, names: Iterable[str]) -> bool:
    return all((folder / name).is_file() for name in names)


def _ensure_wheel(wheels_dir: Path, log: Callable[[str], None]) -> Path:
    wheel = wheels_dir / RECBOLE_WHEEL
    if wheel.is_file():
        if sha256_file(wheel) == RECBOLE_WHEEL_SHA256:
            log(f"using cached {wheel}")
            return wheel
        log(f"cached {wheel} does not match its known SHA-256; downloading it again")
        wheel.unlink()
    wheels_dir.mkdir(parents=True, exist_ok=True)
    log(f"downloading {RECBOLE_REQUIREMENT} from PyPI (it ships MovieLens-100K) ...")
    # pip writes straight into -d, so it gets a private folder and the finished wheel is
    # renamed into place: a killed download must not look like a cached wheel.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheels_dir) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            RECBOLE_REQUIREMENT,
            "-d",
            tmp,
        ]
        try:
            proc = subprocess.run(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=_PIP_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise DataError(
                f"`{' '.join(cmd[2:])}` did not finish within {_PIP_TIMEOUT_S} s; "
                "check that PyPI is reachable and retry"
            ) from e
        downloaded = Path(tmp) / RECBOLE_WHEEL
        if proc.returncode != 0 or not downloaded.is_file():
            tail = "\n".join(proc.stdout.strip().splitlines()[-_PIP_TAIL_LINES:])
            raise DataError(
                f"`{' '.join(cmd[2:])}` failed (exit code {proc.returncode}) so MovieLens-100K "
                f"could not be fetched; check that PyPI is reachable or point paths.dataset at an "
                f"official ml-100k folder. pip said:\n{tail}"
            )
        digest = sha256_file(downloaded)
        if digest != RECBOLE_WHEEL_SHA256:
            raise DataError(
                f"downloaded {RECBOLE_WHEEL} has SHA-256 {digest}, expected "
                f"{RECBOLE_WHEEL_SHA256}; the package index served a different file"
            )
        os.replace(downloaded, wheel)
    log(f"saved {wheel}")
    return wheel


def _extract_atomically(wheel: Path, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        # mkdtemp makes the folder private (0700); the data set is not secret.
        tmp.chmod(0o755)
        try:
            with zipfile.ZipFile(wheel) as zf:
                for name in RECBOLE_FILES:
                    # Reading through ZipFile checks each member's CRC.
                    data = zf.read(f"{_WHEEL_MEMBER_DIR}/{name}")
                    with (tmp / name).open("wb") as out:
                        out.write(data)
                        out.flush()
                        os.fsync(out.fileno())
        except (zipfile.BadZipFile, KeyError) as e:
            raise DataError(
                f"{wheel} does not hold MovieLens-100K ({e}); delete it and fetch again"
            ) from e
        if _has_all(target, RECBOLE_FILES):
            return  # a concurrent fetch finished first; its copy is as good as ours
        if target.exists():
            # An incomplete folder (e.g. a file deleted by hand) is swapped out whole rather
            # than patched, so readers never see a mix of old and new files.
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            os.replace(target, stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # A concurrent fetch may have won the race; its copy is as good as ours.
            if not _has_all(target, RECBOLE_FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
