"""``harness export mlflow RUN_DIR [--tracking-uri URI]``: one MLflow run per case.

The experiment is the suite's name; each case becomes a run named after the case, with params
(model, variant, hardware, workload and its shape, params count, device), metrics (medians over the
repetitions: energy, J/query, J/token, tokens/s, accuracy, CO2e; a training case's whole energy and
its energy per block as a series over steps) and tags (``energy_method``, sources, run and case
ids). The report's figures, report.md and summary.csv, where the run has a report, are artifacts
of every case's run. A case already exported (same run id and case id) is left as it is, so an
export can be repeated. MLflow's own errors (a tracking URI it cannot open) are one line.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.workloads import makes_model

PARAMS = (
    "model",
    "model_source",
    "variant",
    "dtype",
    "quantization",
    "engine",
    "hardware",
    "device",
    "device_name",
    "workload",
    "batch_size",
    "concurrency",
    "prompt_tokens",
    "new_tokens",
    "seq_len",
    "steps",
    "task",
    "params",
)
#: metric name -> column of the report's per-case table (medians over the repetitions)
METRICS = {
    "energy_j": "energy_j",
    "energy_total_j": "energy_sum_j",
    "duration_s": "duration_s",
    "avg_power_w": "avg_power_w",
    "energy_per_query_j": "energy_per_query_j",
    "energy_per_token_j": "energy_per_token_j",
    "tokens_per_s": "tokens_per_s",
    "accuracy": "accuracy",
    "co2e_g": "co2e_g_total",
    "co2e_g_per_1000_queries": "co2e_g_per_1000_queries",
}
RUN_TAG, CASE_TAG = "harness.run_id", "harness.case_id"


def _value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


def _param_text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def case_params(row: pd.Series) -> dict[str, str]:
    return {k: _param_text(v) for k in PARAMS if k in row and (v := _value(row[k])) is not None}


def case_metrics(row: pd.Series) -> dict[str, float]:
    out = {}
    for name, col in METRICS.items():
        v = _value(row.get(col))
        if v is not None:
            try:
                out[name] = float(v)
            except (TypeError, ValueError):
                continue
    return out


def _client(tracking_uri: str | None):
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise HarnessError(
            "MLflow is not installed: pip install 'energy-harness[mlflow]'"
        ) from None
    return MlflowClient(tracking_uri=tracking_uri)


def export_run(run_dir: str | Path, tracking_uri: str | None = None) -> dict[str, str]:
    """Export every case of ``run_dir``; returns {case_id: MLflow run id}."""
    from harness.report.load import open_run
    from harness.report.tables import build_tables

    run = open_run(run_dir)
    tables = build_tables(run)
    try:
        return _export(_client(tracking_uri), run, tables)
    except HarnessError:
        raise
    except Exception as e:  # noqa: BLE001 - MLflow's errors (store, URI) as one line
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(f"mlflow export of {run.path}: {text[:300]}") from None


def _experiment(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name)


def _artifacts(run_path: Path) -> list[tuple[Path, str | None]]:
    report = run_path / "report"
    files = [(p, "figures") for p in sorted((report / "figures").glob("*.png"))]
    files += [(report / n, None) for n in ("report.md", "summary.csv") if (report / n).is_file()]
    return files


def _export(client, run, tables) -> dict[str, str]:
    experiment = _experiment(client, run.suite_name or run.run_id)
    cases = tables.cases
    done: dict[str, str] = {}
    frame = run.frame
    for _, row in cases.iterrows():
        case_id = str(row["case_id"])
        query = f"tags.`{RUN_TAG}` = '{run.run_id}' and tags.`{CASE_TAG}` = '{case_id}'"
        existing = client.search_runs([experiment], filter_string=query, max_results=1)
        if existing:
            done[case_id] = existing[0].info.run_id
            continue
        tags = {
            RUN_TAG: run.run_id,
            CASE_TAG: case_id,
            "energy_method": str(row.get("energy_method") or "unknown"),
            "energy_sources": str(_value(row.get("energy_sources")) or ""),
            "stop_reason": str(_value(row.get("stop_reason")) or ""),
        }
        mlrun = client.create_run(experiment, run_name=str(row["case"]), tags=tags)
        rid = mlrun.info.run_id
        for k, v in case_params(row).items():
            client.log_param(rid, k, v)
        for k, v in case_metrics(row).items():
            client.log_metric(rid, k, v)
        if makes_model(row.get("workload")):  # the energy of each block, over the steps
            reps = frame[(frame["case_id"] == case_id) & (frame["status"] == "ok")]
            done_steps = 0
            for _, rep in reps.iterrows():
                done_steps += int(rep["steps"]) if pd.notna(rep["steps"]) else 0
                if pd.notna(rep["energy_j"]):
                    client.log_metric(
                        rid, "block_energy_j", float(rep["energy_j"]), step=done_steps
                    )
        for path, folder in _artifacts(run.path):
            client.log_artifact(rid, str(path), folder)
        client.set_terminated(rid)
        done[case_id] = rid
    for _, row in tables.failed.iterrows():  # a failed case: its run says why
        case_id = str(row["case_id"])
        if case_id in done:
            continue
        query = f"tags.`{RUN_TAG}` = '{run.run_id}' and tags.`{CASE_TAG}` = '{case_id}'"
        if client.search_runs([experiment], filter_string=query, max_results=1):
            continue
        tags = {RUN_TAG: run.run_id, CASE_TAG: case_id, "error": str(row.get("error"))[:500]}
        mlrun = client.create_run(experiment, run_name=str(row["case"]), tags=tags)
        client.set_terminated(mlrun.info.run_id, status="FAILED")
        done[case_id] = mlrun.info.run_id
    return done
