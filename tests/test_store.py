"""The results folder: layout, atomic writes, no secret on disk, loading."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from runhelpers import PY, command, harness, last_line, results_by_name, write_suite

from harness import store
from harness.errors import HarnessError
from harness.records import COLUMNS, OPTIONAL_COLUMNS

SECRETS = {
    "HF_TOKEN": "sekrit-token-123",
    "AWS_SECRET_ACCESS_KEY": "aws-Secret-456-xyz",
    "MY_PASSWORD": "pa55word-789",
}


def test_sanitise_masks_url_credentials_and_secret_values(monkeypatch):
    monkeypatch.setenv("SOME_API_KEY", "abcd-1234-efgh")
    text = (
        "git clone https://user:hunter2@example.com/x and s3://AKIA:pw@bucket/k key=abcd-1234-efgh"
    )
    clean = store.sanitise_text(text)
    assert clean == "git clone https://***@example.com/x and s3://***@bucket/k key=***"
    data = store.sanitise({"env": {"HF_TOKEN": "short", "PATH": "/bin"}, "args": [text]})
    assert data["env"] == {"HF_TOKEN": "***", "PATH": "/bin"}
    assert "hunter2" not in data["args"][0] and "abcd-1234" not in data["args"][0]
    assert (
        store.sanitise_text("https://example.com/no-credentials")
        == "https://example.com/no-credentials"
    )


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    store.write_json(path, {"v": 1})

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        store.write_json(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left behind
    store.write_json(path, {"v": float("nan")})
    assert json.loads(path.read_text()) == {"v": None}  # strict JSON: NaN is stored as null


def test_run_id_format():
    run_id = store.new_run_id("quickstart")
    assert re.fullmatch(r"quickstart-\d{8}T\d{6}-[0-9a-f]{6}", run_id)


def test_no_secret_reaches_the_run_folder(tmp_path):
    url = "https://user:hunter2@example.com/x"
    leaky = (
        "import os, sys, json; print(os.environ['HF_TOKEN'], sys.argv); "
        "print(os.environ['MY_PASSWORD'], file=sys.stderr); "
        "print(json.dumps({'queries': 1, 'metric': os.environ['HF_TOKEN']}))"
    )
    suite = write_suite(
        tmp_path,
        [
            # prints the secrets and the URL (stdout, stderr) and reports one in its JSON line
            {"type": "command", "name": "leaky", "run": [PY, "-c", leaky, url]},
            # fails with a secret in its error message
            command(
                "failing",
                "import os; raise SystemExit('bad ' + os.environ['AWS_SECRET_ACCESS_KEY'])",
            ),
            # a secret-named variable given in the suite itself
            command("suite-env", "print(1)", env={"SERVICE_TOKEN": "suite-tok-000", "PLAIN": "x"}),
        ],
    )
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path, **SECRETS)
    assert proc.returncode == 1, proc.stderr
    run_dir = tmp_path / last_line(proc.stdout)
    results = results_by_name(run_dir)
    assert results["cpu/leaky"]["status"] == "ok", results["cpu/leaky"]["error"]
    assert results["cpu/failing"]["error"] == "command exited with status 1: bad ***"
    # the program really got its secrets (they were masked only on the way to disk)
    output = (run_dir / "cases" / results["cpu/leaky"]["case_id"] / "output.log").read_text()
    assert "*** [" in output and "https://***@example.com/x" in output
    forbidden = [*SECRETS.values(), "hunter2", "suite-tok-000"]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) >= 10
    for path in files:
        raw = path.read_bytes()
        for secret in forbidden:
            assert secret.encode() not in raw, (path, secret)
        if path.suffix == ".parquet":  # compressed pages: look at the decoded values too
            cells = [str(v) for v in pd.read_parquet(path).to_numpy().ravel()]
            assert not any(secret in cell for cell in cells for secret in forbidden), path
    assert "SECRET" not in json.dumps(
        json.loads((run_dir / "manifest.json").read_text())["environment"]
    )


def test_resume_restores_masked_settings_from_the_unchanged_suite_file(tmp_path):
    log = tmp_path / "seen.txt"
    suite = write_suite(
        tmp_path,
        [
            {
                "type": "command",
                "name": "needs-token",
                "run": [
                    PY,
                    "-c",
                    "import os,sys; open(sys.argv[1],'a').write(os.environ['API_TOKEN'])",
                    str(log),
                ],
                "env": {"API_TOKEN": "real-token-value"},
            },
            command(
                "fails-once",
                f"import os,sys; p={str(tmp_path / 'flag')!r}; "
                "sys.exit(0) if os.path.exists(p) else (open(p,'w'), sys.exit(5))",
            ),
        ],
    )
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path)
    assert proc.returncode == 1
    run_dir = tmp_path / last_line(proc.stdout)
    case = json.loads(next(run_dir.glob("cases/*/case.json")).read_text())
    assert "real-token-value" not in json.dumps(case)
    proc = harness(["run", "--resume", str(run_dir), "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert log.read_text() == "real-token-value"  # ran once, with its real value
    assert len(results_by_name(run_dir)) == 2


def _fake_run(folder: Path, run_id: str, cases: list[tuple[str, str, list[dict] | None]]) -> Path:
    run_dir = folder / run_id
    store.write_json(
        run_dir / "manifest.json",
        {"run_id": run_id, "cases": [{"case_id": cid, "case": name} for cid, name, _ in cases]},
    )
    for cid, name, reps in cases:
        case = {
            "case_id": cid,
            "case": name,
            "suite": "s",
            "hardware": {"name": "cpu", "device": "cpu"},
            "workload": {"type": "command", "name": name},
        }
        store.write_json(run_dir / "cases" / cid / "case.json", case)
        result = {
            "case_id": cid,
            "case": name,
            "status": "ok" if reps else "failed",
            "error": None if reps else "it broke",
            "repetitions": reps or [],
        }
        store.write_json(run_dir / "cases" / cid / "result.json", result)
    return run_dir


def _reps(run_id: str, cid: str, n: int) -> list[dict]:
    return [
        {
            "run_id": run_id,
            "case_id": cid,
            "case": f"cpu/{cid}",
            "repetition": i,
            "status": "ok",
            "energy_j": 1.0 + i,
            "loss": 0.5,
        }
        for i in range(n)
    ]


def test_measurements_rebuilt_columns_order_and_failed_rows(tmp_path):
    run_dir = _fake_run(tmp_path, "r1", [("b", "cpu/b", _reps("r1", "b", 2)), ("a", "cpu/a", None)])
    df = store.rebuild_measurements(run_dir)
    # the report-time columns (produce_j, embodied_g, co2e_total_g) are left out until the report
    # fills them (issue 24: they were always empty in the files), and so are optional ones no row
    # fills (counter_vs_power: no source here reads both a counter and its power)
    columns = [c for c in COLUMNS if c not in store.REPORT_COLUMNS + OPTIONAL_COLUMNS]
    assert list(df.columns[: len(columns)]) == columns and list(df.columns[len(columns) :]) == [
        "loss"
    ]
    assert list(df["case_id"]) == ["b", "b", "a"]  # the manifest's case order
    assert list(df["status"]) == ["ok", "ok", "failed"]
    assert df["error"].iloc[2] == "it broke" and df["run_id"].iloc[2] == "r1"
    csv = pd.read_csv(run_dir / "measurements.csv")
    assert list(csv.columns) == list(df.columns) and len(csv) == 3
    assert str(pd.read_parquet(run_dir / "measurements.parquet")["repetition"].dtype) == "Int64"


def test_load_results_one_run_many_runs_and_rebuild(tmp_path):
    r1 = _fake_run(tmp_path, "r1", [("a", "cpu/a", _reps("r1", "a", 2))])
    r2 = _fake_run(tmp_path, "r2", [("a", "cpu/a", _reps("r2", "a", 3))])
    store.rebuild_measurements(r1)  # r2 has no measurements.parquet: rebuilt on load
    assert len(store.load_results(r1)) == 2
    assert len(store.load_results(r2)) == 3 and not (r2 / "measurements.parquet").exists()
    both = store.load_results(tmp_path)
    assert sorted(both["run_id"].unique()) == ["r1", "r2"] and len(both) == 5
    with pytest.raises(HarnessError, match="no such results folder"):
        store.load_results(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="neither a run folder"):
        store.load_results(tmp_path / "empty")


def test_manifest_and_layout_of_a_real_run(tmp_path):
    suite = write_suite(tmp_path, [command("one", "print(1)")], idle_s=0.3)
    proc = harness(["run", str(suite), "--out", "res", "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / last_line(proc.stdout)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for key in (
        "schema_version",
        "run_id",
        "suite",
        "started",
        "finished",
        "host",
        "hardware",
        "software",
        "sensors",
        "carbon",
    ):
        assert manifest.get(key) is not None, key
    assert manifest["run_id"] == run_dir.name and manifest["suite"]["name"] == "t"
    assert manifest["software"]["python"] and "torch" in manifest["software"]
    assert manifest["carbon"]["intensity_g_per_kwh"] == 100 and manifest["carbon"]["pue"] == 1.2
    assert manifest["git_sha"] is None or re.fullmatch(r"[0-9a-f]{40}", manifest["git_sha"])
    idle = json.loads((run_dir / "idle.json").read_text())
    assert idle["cpu"]["seconds"] == 0.3 and idle["cpu"]["watts"]["total"] > 0
    (result,) = results_by_name(run_dir).values()
    rec = result["repetitions"][0]
    assert rec["energy_dynamic_j"] is not None and rec["energy_dynamic_j"] < rec["energy_j"]
    cdir = run_dir / "cases" / result["case_id"]
    assert {p.name for p in cdir.iterdir()} >= {"case.json", "result.json", "trace.parquet"}
    trace = pd.read_parquet(cdir / "trace.parquet")
    assert list(trace.columns) == ["t_s", "domain", "watts"]
