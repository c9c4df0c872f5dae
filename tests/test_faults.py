"""Faults end to end, through ``harness run``: a runner killed with SIGKILL, a disk that fills up.

Whatever happens, every finished case stays intact, nothing is half-written, and ``--resume``
finishes the job, each case ok exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from runhelpers import PY, ROOT, env, harness, results_by_name, write_suite

from harness import store

DISK = Path(__file__).resolve().parent / "diskfull"
LOG_CODE = "import sys, time; time.sleep(float(sys.argv[3])); open(sys.argv[1], 'a').write(sys.argv[2] + chr(10))"


def _logging(name: str, log: Path, sleep_s: float = 0.0) -> dict:
    return {
        "type": "command",
        "name": name,
        "run": [PY, "-c", LOG_CODE, str(log), name, str(sleep_s)],
    }


def _assert_intact(run_dir: Path, killed: bool = False) -> None:
    """Every JSON file parses, every parquet reads, no temporary file is left.

    Right after a SIGKILL (``killed``, before any resume) a temporary may remain: a kill that
    lands between ``store.write_bytes`` naming its written file and renaming it (a few
    microseconds, longer when the disk stalls the link) leaves that name, and the next start's
    sweep removes it. So there, each one must be a name the sweep knows; after a resume, none.
    """
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text())
    for path in run_dir.rglob("*.parquet"):
        pd.read_parquet(path)
    left = [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    if killed:
        assert all(store._STALE_TEMPORARY.match(p.name) for p in left), left
        # at most the runner's write and its worker's were under way, not a trail of them
        assert len(left) <= 2, left
    else:
        assert not left


def _assert_finished_once(
    run_dir: Path, names: list[str], log: Path, reruns: set[str], reps: int = 1
) -> None:
    results = results_by_name(run_dir)
    assert sorted(results) == sorted(f"cpu/{n}" for n in names)
    assert all(r["status"] == "ok" for r in results.values()), results
    ran = log.read_text().split()
    for name in names:  # each repetition runs the program once
        assert ran.count(name) >= reps
        if name not in reruns:
            assert ran.count(name) == reps, (name, ran)
    csv = pd.read_csv(run_dir / "measurements.csv")
    assert len(csv) == reps * len(names) and not csv.duplicated(["case_id", "repetition"]).any()
    assert len(store.load_results(run_dir)) == reps * len(names)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert not (run_dir / store.RESERVE_FILE).exists()
    _assert_intact(run_dir)


# ----------------------------------------------------------------------------- SIGKILL
def _wait_for(predicate, timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _kill_mid_case(args: list[str], tmp_path: Path, log: Path, after_lines: int) -> None:
    """Start ``harness run ARGS`` and SIGKILL it once ``after_lines`` cases have logged."""
    proc = subprocess.Popen(
        [PY, "-m", "harness", *args, "--no-report"],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_for(lambda: log.exists() and len(log.read_text().split()) >= after_lines)
        time.sleep(0.1)  # the next case is under way
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)  # its worker dies with it (parent-death signal)


def _kill_and_resume(tmp_path: Path, n_cases: int, kills_after: list[int]) -> None:
    log = tmp_path / "ran.log"
    names = [f"c{i}" for i in range(n_cases)]
    suite = write_suite(tmp_path, [_logging(n, log, 0.3) for n in names])
    out = tmp_path / "res"
    _kill_mid_case(["run", str(suite), "--out", str(out)], tmp_path, log, kills_after[0])
    (run_dir,) = out.iterdir()
    for after in kills_after[1:]:  # the resume itself killed again
        _assert_intact(run_dir, killed=True)
        _kill_mid_case(["run", "--resume", str(run_dir)], tmp_path, log, after)
    _assert_intact(run_dir, killed=True)
    # what load_results sees before the resume is exactly what the result files hold
    done = [r for r in results_by_name(run_dir).values() if r["status"] == "ok"]
    assert len(store.load_results(run_dir).query("status == 'ok'")) == len(done)
    proc = harness(["run", "--resume", str(run_dir), "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # a case killed mid-way ran twice (its program may have finished before the kill); the
    # others ran once
    ran = log.read_text().split()
    killed = {n for n in names if ran.count(n) > 1}
    assert len(killed) <= len(kills_after)
    _assert_finished_once(run_dir, names, log, killed)


def test_sigkill_mid_case_then_resume(tmp_path):
    _kill_and_resume(tmp_path, 3, [1])


@pytest.mark.slow
def test_sigkill_mid_case_again_and_again_then_resume(tmp_path):
    _kill_and_resume(tmp_path, 8, [2, 4, 6])


# ----------------------------------------------------------------------------- disk full
FILL_CODE = """
import os, sys
log, name, marker = sys.argv[1:4]
open(log, 'a').write(name + chr(10))
if not os.path.exists(marker):  # another program fills the disk, once
    open(marker, 'w').close()
    from sitecustomize import used_bytes
    room = int(os.environ['FAKE_DISK_BYTES']) - used_bytes()
    with open(os.path.join(os.environ['FAKE_DISK_DIR'], 'filler'), 'wb') as f:
        f.write(b'x' * (room + 1))
"""


def _disk_env(disk: Path, capacity: int) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), str(DISK), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "FAKE_DISK_DIR": str(disk), "FAKE_DISK_BYTES": str(capacity)}


def _fill(name: str, log: Path, marker: Path) -> dict:
    return {
        "type": "command",
        "name": name,
        "run": [PY, "-c", FILL_CODE, str(log), name, str(marker)],
    }


def _disk_full_then_resume(tmp_path: Path, names: list[str], fills: dict[str, int], **measurement):
    log = tmp_path / "ran.log"
    disk = tmp_path / "disk"
    disk.mkdir()
    workloads = [
        _fill(n, log, tmp_path / f"filled-{n}") if n in fills else _logging(n, log) for n in names
    ]
    suite = write_suite(tmp_path, workloads, **measurement)
    denv = _disk_env(disk, 64 * 2**20)
    proc = harness(["run", str(suite), "--out", str(disk / "res"), "--no-report"], tmp_path, **denv)
    (run_dir,) = (disk / "res").iterdir()
    reps = int(measurement.get("max_repeats", 1))
    for name in sorted(fills, key=fills.get):
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = proc.stderr.strip()
        assert "\n" not in line and "Traceback" not in proc.stderr, proc.stderr
        assert line.startswith(f"harness: no space left on device writing {run_dir}"), line
        assert f"harness run --resume {run_dir}" in line
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "interrupted"
        _assert_intact(run_dir)
        results = results_by_name(run_dir)
        assert f"cpu/{name}" not in results or results[f"cpu/{name}"]["status"] != "ok"
        before = names[: names.index(name)]
        assert all(results[f"cpu/{n}"]["status"] == "ok" for n in before)
        assert len(pd.read_csv(run_dir / "measurements.csv")) == reps * len(before)
        (disk / "filler").unlink()  # space again
        proc = harness(["run", "--resume", str(run_dir), "--no-report"], tmp_path, **denv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_finished_once(run_dir, names, log, set(fills), reps)


def test_disk_full_mid_run_then_resume(tmp_path):
    _disk_full_then_resume(tmp_path, ["c0", "fill", "c2"], {"fill": 0})


@pytest.mark.slow
def test_disk_full_twice_in_a_longer_run_then_resume(tmp_path):
    names = ["c0", "c1", "fillA", "c3", "c4", "fillB", "c6", "c7"]
    _disk_full_then_resume(
        tmp_path, names, {"fillA": 0, "fillB": 1}, idle_s=0.2, min_repeats=2, max_repeats=2
    )


def test_a_failed_write_in_any_command_is_one_line(tmp_path):
    from fakeruns import standard_cases, write_run

    run = write_run(tmp_path, standard_cases())
    (run / "report").write_text("a file where the report folder goes")
    proc = harness(["report", str(run)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "report" in proc.stderr
