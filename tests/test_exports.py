"""Exports where users look: github-action-benchmark JSON, MLflow runs read back with MlflowClient,
Prometheus metrics scraped while `harness measure` and `harness run` go."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
import urllib.request

import pytest
from fakeruns import standard_cases, write_run
from runhelpers import PY, command, env, write_suite

from harness.cli import main
from harness.report.load import open_run
from harness.report.stats import describe

# ------------------------------------------------------------------ github-action-benchmark


def check_custom_benchmark(data) -> None:
    """github-action-benchmark's format for ``customSmallerIsBetter`` (src/extract.ts): the file is
    JSON.parse-d into ``BenchmarkResult[]``, each ``{name: string, value: number, unit: string,
    range?: string, extra?: string}``; ``extractCustomBenchmarkResult`` keeps only those five keys,
    and the charts key each series by ``name``, so a name must not repeat."""
    assert isinstance(data, list) and data
    names = set()
    for entry in data:
        assert isinstance(entry, dict)
        assert set(entry) <= {"name", "value", "unit", "range", "extra"}, set(entry)
        assert isinstance(entry["name"], str) and entry["name"]
        assert isinstance(entry["value"], (int, float)) and not isinstance(entry["value"], bool)
        assert math.isfinite(entry["value"])
        assert isinstance(entry["unit"], str) and entry["unit"]
        for optional in ("range", "extra"):
            assert optional not in entry or isinstance(entry[optional], str)
        assert entry["name"] not in names, entry["name"]
        names.add(entry["name"])


def test_github_benchmark_json_has_the_actions_format_and_the_reports_figures(tmp_path):
    run = write_run(tmp_path / "results", standard_cases())
    out = tmp_path / "bench.json"
    assert main(["export", "github-benchmark", str(run), "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    check_custom_benchmark(data)
    units = {e["unit"] for e in data}
    assert {"J/query", "J/token", "s/query", "J"} <= units
    frame = open_run(run).frame
    infer = frame[(frame["workload"] == "infer") & (frame["status"] == "ok")]
    case = infer["case"].iloc[0]
    reps = infer[infer["case"] == case]
    stats = describe(reps["energy_per_query_j"])
    entry = next(e for e in data if e["name"] == f"{case} energy per query [measured]")
    assert entry["value"] == pytest.approx(stats["median"])
    assert entry["range"] == f"± {(stats['ci_high'] - stats['ci_low']) / 2:.4g}"
    assert "measured" in entry["extra"] and "95% CI" in entry["extra"]
    per_query_s = describe(reps["duration_s"] / reps["queries"])["median"]
    assert next(e for e in data if e["name"] == f"{case} time per query [measured]")[
        "value"
    ] == pytest.approx(per_query_s)


def test_github_benchmark_bad_input_is_one_line(tmp_path, capsys):
    assert main(["export", "github-benchmark", str(tmp_path / "nope"), "-o", "x.json"]) == 2
    assert "no such folder" in capsys.readouterr().err
    run = write_run(tmp_path / "results", standard_cases())
    assert main(["export", "github-benchmark", str(run), "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


# ------------------------------------------------------------------ MLflow


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    # MLflow 3 keeps its file store for local use behind this switch (its SQLite store needs
    # SQLAlchemy, which mlflow-skinny leaves out)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def test_mlflow_export_reads_back_with_params_metrics_method_and_report(tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    from harness.report import build_report

    run = write_run(tmp_path / "results", standard_cases())
    build_report(run, figures=False)
    assert main(["export", "mlflow", str(run), "--tracking-uri", mlflow_uri]) == 0
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("fake")
    runs = client.search_runs([experiment.experiment_id])
    frame = open_run(run).frame
    assert len(runs) == frame["case_id"].nunique()
    infer = frame[(frame["workload"] == "infer") & (frame["status"] == "ok")].iloc[0]
    found = [r for r in runs if r.data.tags["harness.case_id"] == infer["case_id"]]
    assert len(found) == 1
    data = found[0].data
    assert data.params["model"] == infer["model"] and data.params["variant"] == infer["variant"]
    assert data.params["hardware"] == "cpu" and data.params["batch_size"] == str(
        int(infer["batch_size"])
    )
    reps = frame[frame["case_id"] == infer["case_id"]]
    assert data.metrics["energy_per_query_j"] == pytest.approx(reps["energy_per_query_j"].median())
    assert data.metrics["energy_per_token_j"] > 0 and data.metrics["co2e_g"] > 0
    assert data.tags["energy_method"] == "measured"
    artifacts = {a.path for a in client.list_artifacts(found[0].info.run_id)}
    assert {"report.md", "summary.csv"} <= artifacts
    accuracy = [r for r in runs if r.data.params.get("workload") == "accuracy"]
    assert accuracy and all(0 <= r.data.metrics["accuracy"] <= 1 for r in accuracy)
    # again: the cases already there are left as they are
    assert main(["export", "mlflow", str(run), "--tracking-uri", mlflow_uri]) == 0
    assert len(client.search_runs([experiment.experiment_id])) == len(runs)


def test_mlflow_export_errors_are_one_line(tmp_path, capsys):
    pytest.importorskip("mlflow")
    run = write_run(tmp_path / "results", standard_cases())
    assert main(["export", "mlflow", str(run), "--tracking-uri", "nosuchscheme://x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: mlflow export of") and len(err.strip().splitlines()) == 1


def test_the_tracker_exports_to_mlflow_when_asked(tmp_path, mlflow_uri):
    from mlflow import MlflowClient
    from test_integrations import CountingMeter

    from harness.integrations import track

    meter = CountingMeter()
    with track(
        "ml-track",
        steps=20,
        out=tmp_path,
        meter=meter,
        report=False,
        mlflow=True,
        mlflow_tracking_uri=mlflow_uri,
    ) as t:
        for _ in range(20):
            meter.work()
            t.step()
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("ml-track").experiment_id])
    assert len(runs) == 1
    data = runs[0].data
    assert data.params["workload"] == "train" and data.metrics["energy_total_j"] == pytest.approx(
        40
    )
    history = client.get_metric_history(runs[0].info.run_id, "block_energy_j")
    assert sum(m.value for m in history) == pytest.approx(40) and history[-1].step == 20


# ------------------------------------------------------------------ Prometheus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int, deadline_s: float = 20) -> dict:
    """{(name, labels...): value} of the endpoint, once it answers."""
    from prometheus_client.parser import text_string_to_metric_families

    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
            break
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _energy(samples: dict) -> float:
    return sum(v for (n, _), v in samples.items() if n == "harness_energy_joules_total")


def _rising(port: int, proc, want: str | None = None) -> tuple[dict, dict]:
    """Two scrapes a little over a second apart, each once the endpoint has energy."""
    first = None
    end = time.monotonic() + 60
    while time.monotonic() < end and proc.poll() is None:
        try:
            samples = _scrape(port, deadline_s=1)
        except OSError:
            time.sleep(0.2)
            continue
        ready = _energy(samples) > 0 and (
            want is None or any(n == want and v >= 1 for (n, _), v in samples.items())
        )
        if ready and first is None:
            first = samples
            time.sleep(1.5)
        elif ready:
            return first, samples
        else:
            time.sleep(0.3)
    raise AssertionError("the metrics endpoint never showed energy while the command ran")


BUSY = "import time\nt = time.time()\nwhile time.time() - t < {s}: pass"


def test_measure_serves_power_and_energy_rising_while_the_command_runs(tmp_path):
    pytest.importorskip("prometheus_client")
    port = _free_port()
    proc = subprocess.Popen(
        [PY, "-m", "harness", "measure", "--json", "--no-lock", "--sensors", "estimate"]
        + ["--metrics-port", str(port), "--", PY, "-c", BUSY.format(s=8)],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first, second = _rising(port, proc)
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert _energy(second) > _energy(first) > 0
    power = {k: v for k, v in second.items() if k[0] == "harness_power_watts"}
    assert power and all(v >= 0 for v in power.values()) and max(power.values()) > 0
    labels = dict(next(iter(power))[1])
    assert set(labels) == {"domain", "source", "method"} and labels["method"] == "estimated"
    assert json.loads(out)["exit_status"] == 0


def test_run_serves_cases_done_and_rising_energy(tmp_path):
    pytest.importorskip("prometheus_client")
    suite = write_suite(
        tmp_path,
        [command("quick", "pass"), command("busy", BUSY.format(s=6))],
        name="metrics",
    )
    port = _free_port()
    proc = subprocess.Popen(
        [PY, "-m", "harness", "run", str(suite), "--out", str(tmp_path / "results")]
        + ["--no-report", "--metrics-port", str(port)],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first, second = _rising(port, proc, want="harness_cases_done_total")
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _energy(second) > _energy(first) > 0
    assert second[("harness_cases_failed_total", ())] == 0


def test_metrics_port_bad_input_is_one_line(tmp_path):
    pytest.importorskip("prometheus_client")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for bad in (str(port), "70000"):
            proc = subprocess.run(
                [PY, "-m", "harness", "measure", "--no-lock", "--metrics-port", bad, "--", "true"],
                cwd=tmp_path,
                env=env(tmp_path),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 2 and "--metrics-port" in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1
