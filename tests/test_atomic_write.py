"""The one atomic-write helper (store.write_bytes) and its folder analogue (replace_folder)."""

from __future__ import annotations

import os

import pytest

from harness import store


def test_write_bytes_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "result.json"
    store.write_bytes(target, b"old")
    store.write_text(target, "new é")
    assert target.read_text(encoding="utf-8") == "new é"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.csv"
    store.write_bytes(target, b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        store.write_bytes(target, b"new, half written")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]


def test_replace_folder_swaps_a_checkpoint_whole(tmp_path):
    target = tmp_path / "models" / "tiny-xs"
    first = store.staging_folder(target)
    (first / "config.json").write_text("{}")
    (first / "old.bin").write_bytes(b"1")
    store.replace_folder(first, target)
    second = store.staging_folder(target)
    assert second.parent == target.parent and second.name.startswith(".")
    (second / "config.json").write_text('{"v": 2}')
    (second / "new.bin").write_bytes(b"2")
    store.replace_folder(second, target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "new.bin"]
    assert (target / "config.json").read_text() == '{"v": 2}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny-xs"]  # nothing left over
