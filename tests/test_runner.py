"""The runner: isolation of faults, timeouts, resume, the machine lock, Ctrl-C, the stopping rule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from runhelpers import (
    FAST,
    PY,
    TESTS,
    command,
    env,
    harness,
    last_line,
    results_by_name,
    write_suite,
)

from harness.errors import HarnessError
from harness.launchers.process import execute_case
from harness.lock import MachineLock
from harness.stopping import CONVERGED, MAX_REPEATS, stop_reason, t_quantile


# --------------------------------------------------------------------- stopping rule
def _rule(energies, durations=None, **kw):
    settings = {"min_repeats": 3, "max_repeats": 10, "min_duration_s": 0, "target_rel_ci": 0.05}
    settings.update(kw)
    durations = durations if durations is not None else [1.0] * len(energies)
    return stop_reason(energies, durations, **settings)


def test_stop_rule_constant_energy_converges_at_min_repeats():
    assert _rule([10.0]) is None
    assert _rule([10.0, 10.0]) is None
    assert _rule([10.0, 10.0, 10.0]) == CONVERGED


def test_stop_rule_noisy_energy_runs_to_max_repeats():
    noisy = [1.0, 100.0] * 5
    assert all(_rule(noisy[:n]) is None for n in range(1, 10))
    assert _rule(noisy) == MAX_REPEATS


def test_stop_rule_respects_min_duration():
    steady = [5.0] * 12
    short = [0.25] * 12  # 1 s of measured time is reached at the 4th repetition
    got = [_rule(steady[:n], short[:n], min_duration_s=1.0, max_repeats=20) for n in range(1, 13)]
    assert got[:3] == [None, None, None] and got[3] == CONVERGED
    assert _rule(steady[:3], short[:3], min_duration_s=1.0, max_repeats=3) == MAX_REPEATS


def test_stop_rule_ci_threshold():
    # mean 100, sd 1, n=5: half-width 2.776 * 1 / sqrt(5) = 1.24: within 5%, not within 1%
    values = [99.0, 100.0, 101.0, 100.0 + 2**-0.5 * 1.0, 100.0 - 2**-0.5 * 1.0]
    assert _rule(values, target_rel_ci=0.05) == CONVERGED
    assert _rule(values, target_rel_ci=0.01) is None
    assert abs(t_quantile(4) - 2.7764) < 1e-3 and abs(t_quantile(1000) - 1.962) < 1e-3


# --------------------------------------------------------------------- worker faults
def _case(mode: str, **measurement) -> dict:
    return {
        "case_id": f"mis-{mode}",
        "case": f"cpu/misbehave-{mode}",
        "suite": "t",
        "hardware": {"name": "cpu", "device": "cpu", "threads": None},
        "model": None,
        "variant": None,
        "workload": {"type": "misbehave", "mode": mode},
        "measurement": {**FAST, **measurement},
        "carbon": {"intensity_g_per_kwh": 100.0, "pue": 1.0},
    }


@pytest.mark.parametrize(
    "mode,reason",
    [
        ("raise", "ValueError: the workload broke"),
        ("exit", "worker exited with status 3"),
        ("kill", "worker killed by SIGKILL"),
        ("hang", "timed out after 3 s"),
    ],
)
def test_worker_faults_become_failed_results(mode, reason, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_PLUGINS", "harness_test_workloads")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    t0 = time.monotonic()
    # Only the hang needs a short timeout; a worker's start-up alone can pass 3 s on a loaded
    # 2-core machine, which turned the other faults into timeouts.
    timeout_s = 3 if mode == "hang" else 15
    result = execute_case(_case(mode, case_timeout_s=timeout_s), tmp_path, run_id="r1")
    assert result["status"] == "failed"
    assert result["error"] == reason
    on_disk = json.loads((tmp_path / "cases" / f"mis-{mode}" / "result.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == reason
    assert time.monotonic() - t0 < 30


def test_planned_repetitions_are_exact(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_PLUGINS", "harness_test_workloads")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    result = execute_case(_case("planned", max_repeats=2), tmp_path, run_id="r1")
    assert result["status"] == "ok", result["error"]
    assert result["stop_reason"] == "planned"
    assert [r["repetition"] for r in result["repetitions"]] == [0, 1, 2, 3]
    assert [r["samples"] for r in result["repetitions"]] == [10, 20, 30, 40]
    assert result["aggregates"]["n"] == 4 and result["summary"] == {"mode": "planned"}


# --------------------------------------------------------------------- a suite with faults
def test_faulty_cases_are_recorded_and_the_run_goes_on(tmp_path):
    suite = write_suite(
        tmp_path,
        [
            command("plain", "print('hello')"),
            command("boom", "raise SystemExit('boom')"),
            command("valueerror", "raise ValueError('bad value')"),
            command("exit3", "import os; os._exit(3)"),
            command("sigkill", "import os; os.kill(os.getpid(), 9)"),
            command("hang", "import time; time.sleep(600)"),
            command("garbage", "print('{not json at all')"),
            command(
                "reports",
                "import json; print('working'); "
                "print(json.dumps({'tokens_out': 200, 'queries': 4, 'accuracy': 0.75, 'bogus': 'x'}))",
            ),
            {"type": "command", "name": "missing", "run": ["/no/such/program"]},
            command("also-fine", "print(1)"),
        ],
        case_timeout_s=6,
    )
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    run_dir = tmp_path / last_line(proc.stdout)
    assert run_dir.is_dir() and run_dir.parent == tmp_path / "res"
    results = results_by_name(run_dir)
    assert len(results) == 10
    for ok in ("cpu/plain", "cpu/garbage", "cpu/reports", "cpu/also-fine"):
        assert results[ok]["status"] == "ok", results[ok]["error"]
        assert results[ok]["repetitions"]
    assert results["cpu/boom"]["error"] == "command exited with status 1: boom"
    assert results["cpu/valueerror"]["error"] == (
        "command exited with status 1: ValueError: bad value"
    )
    assert results["cpu/exit3"]["error"] == "command exited with status 3"
    assert results["cpu/sigkill"]["error"] == "command killed by SIGKILL"
    assert results["cpu/hang"]["error"] == "timed out after 6 s"
    assert "program not found: /no/such/program" in results["cpu/missing"]["error"]
    assert any("does not parse" in n for n in results["cpu/garbage"]["summary"]["notes"])
    rec = results["cpu/reports"]["repetitions"][0]
    assert rec["tokens_out"] == 200 and rec["queries"] == 4 and rec["accuracy"] == 0.75
    assert "bogus" not in rec
    assert rec["energy_per_token_j"] == pytest.approx(rec["energy_j"] / 200)
    assert rec["co2e_g"] == pytest.approx(rec["energy_j"] / 3.6e6 * 1.2 * 100)
    assert rec["energy_method"] == "estimated"  # the estimate sensor is never called measured
    # every case has its row: repetitions of good ones, one failed row per bad one
    csv = pd.read_csv(run_dir / "measurements.csv")
    assert sorted(csv["case"].unique()) == sorted(results)
    failed = csv[csv["status"] == "failed"]
    assert len(failed) == 6 and failed["error"].notna().all()
    assert list(csv.columns[:4]) == ["run_id", "suite", "case_id", "case"]
    parquet = pd.read_parquet(run_dir / "measurements.parquet")
    assert len(parquet) == len(csv)
    assert "6 of 10 cases failed" in proc.stdout


def test_stopping_rule_runs_in_the_worker(tmp_path):
    suite = write_suite(
        tmp_path,
        [command("steady", "print(1)")],
        min_repeats=2,
        max_repeats=6,
        target_rel_ci=100.0,
    )
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    (result,) = results_by_name(tmp_path / last_line(proc.stdout)).values()
    assert result["stop_reason"] == "converged" and result["aggregates"]["n"] == 2
    assert {r["stop_reason"] for r in result["repetitions"]} == {"converged"}
    assert result["aggregates"]["energy_j"] > 0


# --------------------------------------------------------------------- resume
def _logging_cases(log: Path, n: int, sleep_s: float) -> list[dict]:
    code = (
        "import sys, time; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n'); "
        f"time.sleep({sleep_s})"
    )
    return [
        {"type": "command", "name": f"c{i}", "run": [PY, "-c", code, str(log), f"c{i}"]}
        for i in range(n)
    ]


def _wait_for(predicate, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_resume_after_the_runner_is_killed(tmp_path):
    log = tmp_path / "ran.log"
    suite = write_suite(tmp_path, _logging_cases(log, 5, 0.6))
    out = tmp_path / "res"
    runner = subprocess.Popen(
        [PY, "-m", "harness", "run", str(suite), "--out", str(out), "--no-report"],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert _wait_for(lambda: len(list(out.glob("*/cases/*/result.json"))) >= 2)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    time.sleep(0.3)
    done_before = {p.parent.name for p in out.glob("*/cases/*/result.json")}
    time.sleep(1.5)  # the in-flight worker died with the runner: nothing more appears
    assert {p.parent.name for p in out.glob("*/cases/*/result.json")} == done_before
    (run_dir,) = out.iterdir()
    ran_before = log.read_text().split()

    proc = harness(["run", "--resume", str(run_dir), "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert last_line(proc.stdout) == str(run_dir)
    results = results_by_name(run_dir)
    assert len(results) == 5 and all(r["status"] == "ok" for r in results.values())
    ran = log.read_text().split()
    finished_before = {
        json.loads((run_dir / "cases" / cid / "case.json").read_text())["case"].split("/")[1]
        for cid in done_before
    }
    for name in finished_before:
        assert ran.count(name) == 1, (name, ran)  # a finished case never runs again
    assert sorted(set(ran)) == [f"c{i}" for i in range(5)]
    assert len(ran) - len(ran_before) == 5 - len(finished_before)
    # every file parses and no row is duplicated
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text())
    for path in run_dir.rglob("*.parquet"):
        pd.read_parquet(path)
    csv = pd.read_csv(run_dir / "measurements.csv")
    assert len(csv) == 5 and not csv.duplicated(["case_id", "repetition"]).any()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["sessions"]) == 2
    assert not list(run_dir.rglob("*.tmp"))
    # resuming a finished run runs nothing
    again = harness(["run", "--resume", str(run_dir), "--no-report"], tmp_path)
    assert again.returncode == 0 and "0 of 5 cases to run" in again.stdout
    assert log.read_text().split() == ran


def test_a_resume_sweeps_the_temporaries_of_killed_writes_and_nothing_else(tmp_path):
    # what a SIGKILL in the middle of store.write_bytes / store.staging_folder leaves behind
    log = tmp_path / "ran.log"
    suite = write_suite(tmp_path, _logging_cases(log, 2, 0.0))
    out = tmp_path / "res"
    first = harness(["run", str(suite), "--out", str(out), "--no-report"], tmp_path)
    assert first.returncode == 0, first.stderr
    (run_dir,) = out.iterdir()
    case_dir = next((run_dir / "cases").iterdir())
    stale = [
        case_dir / ".result.json.x1y2z3w4.tmp",
        case_dir / ".worker.log.ab_cd9ef.tmp",
        run_dir / ".manifest.json.q1w2e3r4.tmp",
        run_dir / ".checkpoint.zz9y8x7w.tmp",  # a staging folder, with a half-written file
    ]
    for path in stale[:3]:
        path.write_text('{"half": ')
    stale[3].mkdir()
    (stale[3] / "model.safetensors").write_bytes(b"\0" * 10)
    kept = [
        case_dir / ".keep",  # hidden but not a temporary
        case_dir / "notes.tmp",  # a user's file: not hidden
        case_dir / ".short.tmp",  # no random part: not one of ours
        run_dir / "extra" / ".data.json.toolong123.tmp",  # random part not tempfile's 8
    ]
    for path in kept:
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
    before = {
        p: p.read_bytes()
        for p in run_dir.rglob("*")
        if p.is_file()
        and p.name != "manifest.json"
        and not p.is_relative_to(stale[3])
        and p not in stale
    }

    proc = harness(["run", "--resume", str(run_dir), "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "0 of 2 cases to run" in proc.stdout
    assert not [p for p in stale if p.exists()]
    assert all(p.read_text() == "mine" for p in kept)
    assert {p: p.read_bytes() for p in before} == before
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["sessions"]) == 2


def test_ctrl_c_saves_what_is_done(tmp_path):
    pidfile = tmp_path / "program.pid"
    suite = write_suite(
        tmp_path,
        [
            command("quick", "print(1)"),
            command(
                "slow",
                f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
                "time.sleep(120)",
            ),
            command("never", "print(1)"),
        ],
    )
    runner = subprocess.Popen(
        [PY, "-m", "harness", "run", str(suite), "--out", "res", "--no-report"],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert _wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    runner.send_signal(signal.SIGINT)
    out, err = runner.communicate(timeout=30)
    assert runner.returncode == 130, err
    assert "Traceback" not in err
    run_dir = tmp_path / last_line(out)
    results = results_by_name(run_dir)
    assert results["cpu/quick"]["status"] == "ok"
    assert results["cpu/slow"]["error"] == "interrupted"
    assert "cpu/never" not in results
    program = int(pidfile.read_text())
    assert _wait_for(lambda: not _alive(program), 5), "the program outlived the interrupted run"
    assert len(pd.read_csv(run_dir / "measurements.csv")) == 2
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    assert not (run_dir / ".reserve").exists()  # the disk reserve is given back


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------- the lock
def _interval_cases(stamps: Path, tag: str) -> list[dict]:
    code = (
        "import sys, time; f = open(sys.argv[1], 'a'); f.write(f'{sys.argv[2]} start {time.time()}\\n'); "
        "f.flush(); time.sleep(0.4); f.write(f'{sys.argv[2]} end {time.time()}\\n')"
    )
    return [
        {"type": "command", "name": f"{tag}{i}", "run": [PY, "-c", code, str(stamps), tag]}
        for i in range(2)
    ]


def test_two_runs_never_measure_at_once(tmp_path):
    stamps = tmp_path / "stamps.txt"
    procs = {}
    for tag in ("A", "B"):
        suite = write_suite(tmp_path, _interval_cases(stamps, tag), name=f"run{tag}")
        procs[tag] = subprocess.Popen(
            [PY, "-m", "harness", "run", str(suite), "--out", "res", "--no-report"],
            cwd=tmp_path,
            env=env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    outs = {tag: p.communicate(timeout=120) for tag, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), outs
    events = [line.split() for line in stamps.read_text().splitlines()]
    spans = {
        tag: (
            min(float(t) for g, kind, t in events if g == tag and kind == "start"),
            max(float(t) for g, kind, t in events if g == tag and kind == "end"),
        )
        for tag in ("A", "B")
    }
    assert len(events) == 8
    first, second = sorted(spans.values())
    assert first[1] < second[0], spans  # one run's measuring ended before the other's began
    waited = [tag for tag, (out, _) in outs.items() if "waiting for another run" in out]
    assert len(waited) == 1


def test_no_wait_fails_at_once_naming_the_holder(tmp_path):
    holder_suite = write_suite(
        tmp_path, [command("sleepy", "import time; time.sleep(3)")], name="holder"
    )
    holder = subprocess.Popen(
        [PY, "-m", "harness", "run", str(holder_suite), "--out", "res", "--no-report"],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock_file = tmp_path / "harness.lock"
    assert _wait_for(lambda: lock_file.exists() and "holder-" in lock_file.read_text())
    other = write_suite(tmp_path, [command("x", "print(1)")], name="other")
    t0 = time.monotonic()
    proc = harness(["run", str(other), "--out", "res", "--no-wait", "--no-report"], tmp_path)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 2
    assert f"pid {holder.pid}" in proc.stderr and "run holder-" in proc.stderr
    assert "Traceback" not in proc.stderr
    holder.communicate(timeout=60)
    assert holder.returncode == 0


def test_stale_lock_is_taken_over(tmp_path):
    path = tmp_path / "stale.lock"
    path.write_text(json.dumps({"pid": 999999, "run_id": "dead-run", "started": "long ago"}))
    with MachineLock("fresh-run", wait=False, path=path) as lock:
        info = lock.holder()
        assert info["pid"] == os.getpid() and info["run_id"] == "fresh-run"
        # a second taker in this process (another open file) is refused at once
        with pytest.raises(HarnessError, match=f"pid {os.getpid()}, run fresh-run"):
            MachineLock("second", wait=False, path=path).acquire()
    # released: no holder recorded (the record is blanked in place, the file never truncated)
    assert path.read_text().strip() == "" and MachineLock("x", path=path).holder() is None


# --------------------------------------------------------------------- options
def test_dry_run_and_only(tmp_path):
    suite = write_suite(tmp_path, [command("alpha", "print(1)"), command("beta", "print(2)")])
    proc = harness(["run", str(suite), "--dry-run", "--out", "res"], tmp_path)
    assert proc.returncode == 0
    assert "cpu/alpha" in proc.stdout and "cpu/beta" in proc.stdout and "t: 2 cases" in proc.stdout
    assert not (tmp_path / "res").exists()
    proc = harness(["run", str(suite), "--only", "*/be*", "--out", "res", "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list(results_by_name(tmp_path / last_line(proc.stdout))) == ["cpu/beta"]
    proc = harness(["run", str(suite), "--only", "nothing*", "--out", "res"], tmp_path)
    assert proc.returncode == 2 and "no case matches" in proc.stderr


def test_run_suite_python_api(tmp_path, monkeypatch):
    import harness

    monkeypatch.setenv("HARNESS_LOCK_FILE", str(tmp_path / "api.lock"))
    lines = []
    suite = write_suite(tmp_path, [command("alpha", "print('{\"queries\": 2}')")])
    run_dir = harness.run_suite(suite, tmp_path / "res", report=False, echo=lines.append)
    assert run_dir.parent == tmp_path / "res" and run_dir.name.startswith("t-")
    df = harness.load_results(run_dir)
    assert list(df["queries"]) == [2] and list(df["status"]) == ["ok"]
    assert any("[1/1] ok" in line for line in lines)


# --------------------------------------------------------------------- dependants of a train case
def failing_train_suite(folder: Path, name: str = "t") -> Path:
    """tiny-xs trained from a text file that does not exist, then measured: the train case fails."""
    path = write_suite(folder, [], name=name)
    data = yaml.safe_load(path.read_text())
    data["models"] = [{"name": "tiny-xs", "source": "builtin:tiny-xs"}]
    data["variants"] = [{"name": "fp32", "dtype": "float32"}]
    data["workloads"] = [
        {"type": "train", "steps": 2, "batch_size": 2, "seq_len": 8, "text_file": "/no/such.txt"},
        {"type": "infer", "batch_sizes": [1], "prompt_tokens": 4, "new_tokens": 2},
        command("after", "print(1)"),
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_dependants_of_a_failed_train_case_fail_with_its_reason(tmp_path):
    proc = harness(
        ["run", str(failing_train_suite(tmp_path)), "--out", "res", "--no-report"],
        tmp_path,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = results_by_name(tmp_path / last_line(proc.stdout))
    train = results["tiny-xs/fp32/cpu/train"]
    assert train["status"] == "failed" and "text_file /no/such.txt" in train["error"]
    infer = results["tiny-xs/fp32/cpu/infer-b1"]
    assert infer["status"] == "failed"
    assert (
        infer["error"]
        == f"not run: its train case tiny-xs/fp32/cpu/train failed ({train['error']})"
    )
    assert infer["repetitions"] == []  # never measured on untrained weights
    assert results["cpu/after"]["status"] == "ok"  # the rest of the run goes on
