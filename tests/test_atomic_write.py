"""The one atomic-write helper (store.write_bytes) and its folder analogue (replace_folder)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from runhelpers import ROOT

from harness import store

#: a writer whose fsync never returns: it says so, then waits to be killed
HANGING_WRITER = """
import os, sys, time
from harness import store
store.write_bytes(sys.argv[1], b"old")
if sys.argv[2] == "named":
    from harness import atomic  # the writer's own module (harness.store re-exports it)
    atomic._O_TMPFILE = None  # a filesystem without unnamed files
def fsync_and_hang(fd):
    print("in fsync", flush=True)
    time.sleep(600)
os.fsync = fsync_and_hang
store.write_bytes(sys.argv[1], b"new " * 100_000)
"""


def _kill_mid_write(target, how: str) -> None:
    """SIGKILL a process inside ``store.write_bytes`` of ``target``, its data written, unsynced."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_WRITER, str(target), how],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "in fsync\n"
    finally:
        proc.kill()  # by its own pid
        proc.wait()
        proc.stdout.close()


def test_a_writer_killed_mid_write_leaves_no_temporary(tmp_path):
    # a SIGKILL while the data is written (the long part on a busy disk) leaves the old file and
    # nothing else: before the data was complete the temporary had no name in the folder
    target = tmp_path / "measurements.csv"
    _kill_mid_write(target, "unnamed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measurements.csv"]


def test_without_unnamed_files_a_killed_write_leaves_what_the_sweep_removes(tmp_path):
    target = tmp_path / "measurements.csv"
    _kill_mid_write(target, "named")
    assert target.read_bytes() == b"old"
    (left,) = [p for p in tmp_path.iterdir() if p != target]
    assert store.sweep_temporaries(tmp_path) == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measurements.csv"]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _no_o_tmpfile(monkeypatch):
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if store._O_TMPFILE and flags & store._O_TMPFILE == store._O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)


def _no_proc_link(monkeypatch):
    def refusing_link(src, dst, **kwargs):
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), src)

    monkeypatch.setattr(os, "link", refusing_link)


@pytest.mark.parametrize("refuse", [None, _no_o_tmpfile, _no_proc_link])
def test_write_bytes_works_with_or_without_unnamed_files(tmp_path, monkeypatch, refuse):
    # a filesystem without O_TMPFILE, or a /proc that will not link one: a named temporary
    if refuse is not None:
        refuse(monkeypatch)
    target = tmp_path / "result.json"
    fds = _open_fds()
    for i in range(20):
        store.write_bytes(target, f"version {i}".encode())
    assert target.read_text() == "version 19"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    assert _open_fds() == fds  # neither the unnamed file nor the folder stays open
    assert (target.stat().st_mode & 0o777) == 0o600  # as tempfile.mkstemp makes it


def test_a_rename_that_fails_leaves_a_name_the_sweep_knows_and_removes_it(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    store.write_bytes(target, b"old")
    seen = []

    def failing_replace(src, dst):
        seen.append(os.path.basename(src))
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError) as failed:
        store.write_bytes(target, b"new")
    assert failed.value.filename == str(target)
    (name,) = seen  # between naming and renaming: what a SIGKILL there leaves for the sweep
    assert store._STALE_TEMPORARY.match(name), name
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_write_bytes_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "result.json"
    store.write_bytes(target, b"old")
    store.write_text(target, "new é")
    assert target.read_text(encoding="utf-8") == "new é"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


@pytest.mark.parametrize("unnamed", [True, False])
def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch, unnamed):
    if not unnamed:
        _no_o_tmpfile(monkeypatch)
    target = tmp_path / "summary.csv"
    store.write_bytes(target, b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left") as failed:
        store.write_bytes(target, b"new, half written")
    assert failed.value.filename == str(target)  # the one line names the file
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


def test_a_full_disk_when_naming_the_file_names_the_target(tmp_path, monkeypatch):
    def full_link(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src)

    monkeypatch.setattr(os, "link", full_link)
    target = tmp_path / "measurements.parquet"
    with pytest.raises(OSError) as failed:
        store.write_bytes(target, b"rows")
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(target)
    assert str(store.write_error(failed.value)) == f"no space left on device writing {target}"
    assert list(tmp_path.iterdir()) == []
