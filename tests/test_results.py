"""Result files that cannot be trusted are not done; a finished case is never overwritten."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pandas as pd
import pytest
from runhelpers import FAST, PY, command, harness, last_line, results_by_name, write_suite

from harness import store

BROKEN = {
    "a list": "[1]",
    "null": "null",
    "ok without repetitions": '{"status": "ok"}',
    "truncated": '{"schema_version": 1, "case_id": "x", "status": "ok", "repetitions": [{"a"',
    "a repetition that is not an object": '{"case_id": "ID", "status": "ok", "repetitions": [1]}',
    "another case's result": '{"case_id": "other", "status": "ok", "repetitions": [{}]}',
    "not UTF-8": b"\xff\xfe{",
}


@pytest.mark.parametrize("what", list(BROKEN))
def test_a_broken_result_is_not_done(what, tmp_path):
    cdir = tmp_path / "cases" / "ID"
    cdir.mkdir(parents=True)
    text = BROKEN[what]
    data = text if isinstance(text, bytes) else text.encode()
    (cdir / "result.json").write_bytes(data)
    assert not store.is_done(tmp_path, "ID")
    assert store.read_result(tmp_path, "ID") is None
    warnings = []
    pending = store.pending_cases(tmp_path, [{"case_id": "ID", "case": "cpu/x"}], warnings.append)
    assert [c["case_id"] for c in pending] == ["ID"]
    assert len(warnings) == 1 and "result.json" in warnings[0] and "cpu/x runs again" in warnings[0]
    assert store.collect_rows(tmp_path) == []  # and it contributes no rows


def test_resume_runs_cases_with_broken_results_again(tmp_path):
    log = tmp_path / "ran.log"
    code = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + chr(10))"
    workloads = [
        {"type": "command", "name": f"c{i}", "run": [PY, "-c", code, str(log), f"c{i}"]}
        for i in range(4)
    ]
    suite = write_suite(tmp_path, workloads)
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / last_line(proc.stdout)
    results = results_by_name(run_dir)
    broken = {"cpu/c0": "[1]", "cpu/c1": "null", "cpu/c2": '{"status": "ok"}'}
    for name, text in broken.items():
        (run_dir / "cases" / results[name]["case_id"] / "result.json").write_text(text)
    proc = harness(["run", "--resume", str(run_dir), "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "3 of 4 cases to run" in proc.stdout
    assert proc.stderr.count("not a complete result") == 3
    assert sorted(log.read_text().split()) == ["c0", "c0", "c1", "c1", "c2", "c2", "c3"]
    assert all(r["status"] == "ok" for r in results_by_name(run_dir).values())
    assert len(pd.read_csv(run_dir / "measurements.csv")) == 4


def test_a_stale_measurements_table_loses_to_newer_results(tmp_path):
    suite = write_suite(tmp_path, [command("a", "print(1)"), command("b", "print(2)")])
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / last_line(proc.stdout)
    # a run killed with kill -9 after a case wrote its result, before the table was rebuilt
    results = results_by_name(run_dir)
    path = run_dir / "cases" / results["cpu/b"]["case_id"] / "result.json"
    result = json.loads(path.read_text())
    result["repetitions"][0]["energy_j"] = 123.25
    time.sleep(0.01)
    store.write_json(path, result)
    future = time.time() + 5
    os.utime(path, (future, future))
    df = store.load_results(run_dir)
    assert 123.25 in set(df["energy_j"]) and len(df) == 2


def test_ctrl_c_never_touches_a_finished_case(tmp_path, monkeypatch):
    from harness.launchers.process import execute_case

    case = {
        "case_id": "done-then-ctrl-c",
        "case": "cpu/quick",
        "suite": "t",
        "hardware": {"name": "cpu", "device": "cpu", "threads": None},
        "model": None,
        "variant": None,
        "workload": {"type": "command", "name": "quick", "run": [PY, "-c", "print(1)"]},
        "measurement": dict(FAST),
        "carbon": {"intensity_g_per_kwh": 100.0, "pue": 1.0},
    }
    real_wait = subprocess.Popen.wait
    calls = []

    def wait_then_ctrl_c(self, timeout=None):
        rc = real_wait(self, timeout)
        calls.append(rc)
        if len(calls) == 1:  # the worker finished (its result is written), then Ctrl-C
            raise KeyboardInterrupt
        return rc

    monkeypatch.setattr(subprocess.Popen, "wait", wait_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        execute_case(case, tmp_path, run_id="r1")
    result = json.loads((tmp_path / "cases" / case["case_id"] / "result.json").read_text())
    assert result["status"] == "ok" and result["error"] is None


def test_measurements_csv_cannot_run_formulas(tmp_path):
    code = "import json; print(json.dumps({'metric': '=HYPERLINK(\"http://x\")', 'queries': -3}))"
    suite = write_suite(tmp_path, [command("f", code), command("g", "raise SystemExit('+1+1')")])
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path)
    run_dir = tmp_path / last_line(proc.stdout)
    text = (run_dir / "measurements.csv").read_text()
    assert "\"'=HYPERLINK" in text
    assert ',"=' not in text and ",=" not in text and ',"+' not in text
    csv = pd.read_csv(run_dir / "measurements.csv")
    assert list(csv["queries"].dropna()) == [-3]  # numbers stay numbers
