"""The machine lock: opened as a file someone else may have planted, waited for with a timeout."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import time

import pytest
from runhelpers import PY, command, env, harness, write_suite

from harness import lock as lockmod
from harness.errors import HarnessError
from harness.lock import MachineLock


def test_a_symlinked_lock_file_is_never_followed(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    os.chmod(target, 0o600)
    link = tmp_path / "harness.lock"
    link.symlink_to(target)
    with pytest.raises(HarnessError, match="symbolic link"):
        MachineLock("r", path=link).acquire()
    assert target.read_text() == "keep me\n"
    assert (target.stat().st_mode & 0o777) == 0o600
    # a dangling link is refused too: nothing is created where it points
    dangling = tmp_path / "dangling.lock"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(HarnessError, match="symbolic link"):
        MachineLock("r", path=dangling).acquire()
    assert not (tmp_path / "nowhere").exists()


def test_the_command_line_refuses_a_symlinked_lock_in_one_line(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    (tmp_path / "harness.lock").symlink_to(target)  # runhelpers.env points HARNESS_LOCK_FILE here
    suite = write_suite(tmp_path, [command("x", "print(1)")])
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "symbolic link" in proc.stderr
    assert target.read_text() == "keep me\n"


def test_a_hard_link_or_a_folder_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    hard = tmp_path / "hard.lock"
    os.link(target, hard)
    with pytest.raises(HarnessError, match="hard links"):
        MachineLock("r", path=hard).acquire()
    assert target.read_text() == "keep me\n"
    folder = tmp_path / "folder.lock"
    folder.mkdir()
    with pytest.raises(HarnessError, match="lock file"):
        MachineLock("r", path=folder).acquire()


def test_never_chmod_nor_truncate(tmp_path):
    path = tmp_path / "mine.lock"
    path.write_text("x" * 300)
    os.chmod(path, 0o640)
    with MachineLock("run-1", path=path) as lock:
        assert lock.holder()["run_id"] == "run-1"
        assert path.stat().st_size == 300
    assert (path.stat().st_mode & 0o777) == 0o640
    assert path.stat().st_size == 300


def test_wait_gives_up_after_the_timeout(tmp_path):
    path = tmp_path / "l.lock"
    with MachineLock("holder", path=path):
        lines = []
        t0 = time.monotonic()
        with pytest.raises(HarnessError, match=r"busy for 0.5 s .*run holder.*--lock-timeout"):
            MachineLock("waiter", path=path, timeout_s=0.5, on_wait=lines.append).acquire()
        assert 0.4 < time.monotonic() - t0 < 10
        assert lines and "waiting for another run" in lines[0]
    with MachineLock("waiter", path=path, timeout_s=0.5):  # free now: taken at once
        pass
    with pytest.raises(HarnessError, match="--lock-timeout"):
        MachineLock("x", path=path, timeout_s=float("nan"))


def test_lock_timeout_option_of_run(tmp_path):
    path = tmp_path / "harness.lock"
    suite = write_suite(tmp_path, [command("x", "print(1)")])
    with MachineLock("other-run", path=path):
        proc = harness(
            ["run", str(suite), "--out", "res", "--no-report", "--lock-timeout", "1"], tmp_path
        )
    assert proc.returncode == 2, proc.stderr
    assert "run other-run" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "res").exists()  # nothing was started


def test_a_filesystem_without_locks_is_one_clear_line(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(HarnessError, match="filesystem without file locks.*HARNESS_LOCK_FILE"):
        MachineLock("r", path=tmp_path / "nfs.lock").acquire()


def test_measure_takes_the_lock_unless_no_lock(tmp_path):
    path = tmp_path / "harness.lock"
    code = "print('ran')"
    with MachineLock("busy-run", path=path):
        proc = harness(
            ["measure", "--lock-timeout", "0.5", "--sensors", "estimate", "--", PY, "-c", code],
            tmp_path,
        )
        assert proc.returncode == 2 and "run busy-run" in proc.stderr, proc.stderr
        assert "ran" not in proc.stdout
        proc = harness(
            ["measure", "--no-lock", "--json", "--sensors", "estimate", "--", PY, "-c", code],
            tmp_path,
        )
        assert proc.returncode == 0 and "ran" in proc.stdout, proc.stderr
    proc = harness(["measure", "--sensors", "estimate", "--", PY, "-c", code], tmp_path)
    assert proc.returncode == 0 and "ran" in proc.stdout


def test_measure_inside_a_run_does_not_wait_for_its_own_run(tmp_path):
    # a command case that measures a part of itself with `harness measure`
    inner = [PY, "-m", "harness", "measure", "--json", "--sensors", "estimate", "--", PY, "-c", "1"]
    suite = write_suite(
        tmp_path,
        [{"type": "command", "name": "nested", "run": inner}],
        case_timeout_s=60,
    )
    proc = subprocess.run(
        [PY, "-m", "harness", "run", str(suite), "--out", "res", "--no-report"],
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lockmod.HELD_ENV not in os.environ
