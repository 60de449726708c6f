"""Tests for recsys.artifacts: atomic versions, checksummed manifests and the CURRENT pointer."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from recsys.artifacts import (
    MANIFEST,
    POINTER,
    current,
    new_version,
    publish,
    read_manifest,
    sha256_file,
    staged_version,
    write_manifest,
)
from recsys.errors import ArtifactError


def make_version(root: Path, version: str, files: dict[str, bytes] | None = None) -> Path:
    files = (
        {"model.bin": b"\x00\x01weights", "sub/vocab.json": b'{"a": 1}'} if files is None else files
    )
    with staged_version(root, version) as staging:
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        write_manifest(staging, {"kind": "model", "dim": 32})
    return root / version


def test_new_version_is_sortable_and_unique() -> None:
    a = new_version()
    time.sleep(0.002)
    b = new_version()
    assert re.fullmatch(r"\d{8}T\d{9}Z-[0-9a-f]{6}", a)
    assert a < b  # to the millisecond: two builds in one second still sort in order


# --------------------------------------------------------------------------------------------
# staged_version


def test_staged_version_publishes_the_directory_on_success(tmp_path: Path) -> None:
    root = tmp_path / "models"
    with staged_version(root, "v1") as staging:
        assert staging.parent == root
        assert staging.name != "v1"
        (staging / "a.txt").write_text("hello")
        assert not (root / "v1").exists(), "visible before the block finished"
    assert (root / "v1" / "a.txt").read_text() == "hello"
    assert not staging.exists()
    assert sorted(p.name for p in root.iterdir()) == ["v1"]


def test_staged_version_exception_leaves_nothing_behind(tmp_path: Path) -> None:
    root = tmp_path / "models"

    class BoomError(Exception):
        pass

    with pytest.raises(BoomError), staged_version(root, "v1") as staging:
        (staging / "half.bin").write_bytes(b"partial")
        raise BoomError
    assert not (root / "v1").exists()
    assert not staging.exists()
    assert list(root.iterdir()) == []


def test_staged_version_clears_a_stale_staging_dir(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    stale = root / ".v1.tmp"
    stale.mkdir()
    (stale / "leftover").write_text("from a crashed run")
    with staged_version(root, "v1") as staging:
        (staging / "fresh").write_text("x")
    assert sorted(p.name for p in (root / "v1").iterdir()) == ["fresh"]


# --------------------------------------------------------------------------------------------
# Manifests


def test_write_then_read_manifest_round_trip(tmp_path: Path) -> None:
    directory = make_version(tmp_path, "v1")
    manifest = read_manifest(directory)
    assert manifest["kind"] == "model"
    assert manifest["dim"] == 32
    assert manifest["files"] == {
        "model.bin": sha256_file(directory / "model.bin"),
        "sub/vocab.json": sha256_file(directory / "sub" / "vocab.json"),
    }
    assert MANIFEST not in manifest["files"]


def test_sha256_file_is_the_real_digest(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_read_manifest_detects_a_flipped_byte(tmp_path: Path) -> None:
    directory = make_version(tmp_path, "v1")
    target = directory / "model.bin"
    data = bytearray(target.read_bytes())
    data[3] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as info:
        read_manifest(directory)
    assert str(target) in str(info.value)
    # Without verification the manifest itself is still readable.
    assert read_manifest(directory, verify=False)["kind"] == "model"


def test_read_manifest_detects_a_deleted_file(tmp_path: Path) -> None:
    directory = make_version(tmp_path, "v1")
    target = directory / "sub" / "vocab.json"
    target.unlink()
    with pytest.raises(ArtifactError) as info:
        read_manifest(directory)
    assert str(target) in str(info.value)


def test_read_manifest_missing_manifest(tmp_path: Path) -> None:
    directory = tmp_path / "v1"
    directory.mkdir()
    with pytest.raises(ArtifactError) as info:
        read_manifest(directory)
    assert MANIFEST in str(info.value)
    assert "not a complete version" in str(info.value)


def test_read_manifest_corrupt_manifest(tmp_path: Path) -> None:
    directory = make_version(tmp_path, "v1")
    (directory / MANIFEST).write_text("{truncated")
    with pytest.raises(ArtifactError, match=re.escape(MANIFEST)):
        read_manifest(directory)


def test_read_manifest_detects_a_same_size_edit(tmp_path: Path) -> None:
    # Same length, different content: only a checksum (not a size check) catches it.
    directory = make_version(tmp_path, "v1", {"a.bin": b"AAAA"})
    (directory / "a.bin").write_bytes(b"AAAB")
    with pytest.raises(ArtifactError, match=r"a\.bin"):
        read_manifest(directory)


def test_write_manifest_records_the_files_present(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "x").write_bytes(b"1")
    write_manifest(directory, {"files": "ignored", "note": "n"})
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["note"] == "n"
    assert set(manifest["files"]) == {"x"}


# --------------------------------------------------------------------------------------------
# publish / current


def test_publish_then_current(tmp_path: Path) -> None:
    v1 = make_version(tmp_path, "v1")
    publish(tmp_path, "v1")
    assert current(tmp_path) == v1
    v2 = make_version(tmp_path, "v2")
    publish(tmp_path, "v2")
    assert current(tmp_path) == v2
    assert (tmp_path / POINTER).read_text().strip() == "v2"
    # No temporary pointer files are left lying around.
    assert sorted(p.name for p in tmp_path.iterdir()) == [POINTER, "v1", "v2"]


def test_current_without_pointer_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as info:
        current(tmp_path)
    message = str(info.value)
    assert POINTER in message
    assert "recsys train" in message
    assert "recsys build-index" in message


def test_current_naming_a_missing_version(tmp_path: Path) -> None:
    (tmp_path / POINTER).write_text("v9\n")
    with pytest.raises(ArtifactError) as info:
        current(tmp_path)
    assert "'v9'" in str(info.value)
    assert str(tmp_path / "v9") in str(info.value)


def test_publish_refuses_a_version_without_manifest(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "model.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="no manifest"):
        publish(tmp_path, "v1")
    assert not (tmp_path / POINTER).exists()


def test_publish_refuses_a_missing_version_and_keeps_the_old_pointer(tmp_path: Path) -> None:
    make_version(tmp_path, "v1")
    publish(tmp_path, "v1")
    with pytest.raises(ArtifactError):
        publish(tmp_path, "v2")
    assert current(tmp_path) == tmp_path / "v1"
