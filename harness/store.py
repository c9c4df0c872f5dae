"""The results folder (ARCHITECTURE.md, Results folder): a run's manifest facts, its
measurements table and loading results.

What used to live here by job has its own module, and every name is still reachable as
``harness.store.X``: secrets and their masking in ``harness.redact``, atomic writes (the one way a
file is written) in ``harness.atomic``, the folder's names and a case's state in
``harness.results_layout``. A lower layer imports the one it needs (a model or a workload:
``harness.atomic``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from harness.atomic import (
    _O_TMPFILE,
    _STALE_TEMPORARY,
    RESERVE_BYTES,
    RESERVE_FILE,
    read_json,
    release_space,
    replace_folder,
    reserve_space,
    staging_folder,
    sweep_temporaries,
    try_write_json,
    write_bytes,
    write_csv,
    write_error,
    write_json,
    write_parquet,
    write_text,
    write_trace,
)
from harness.errors import HarnessError
from harness.redact import (
    ENV_ALLOW,
    MASK,
    SECRET_FLAGS,
    SECRET_NAMES,
    is_masked,
    is_secret_name,
    last_line,
    remember_secrets,
    sanitise,
    sanitise_frame,
    sanitise_text,
    secrets_in,
)
from harness.results_layout import (
    CASE_FILE,
    CASES,
    FAILED,
    IDLE,
    MANIFEST,
    MEASUREMENTS_CSV,
    MEASUREMENTS_PARQUET,
    OK,
    RESULT_FILE,
    SCHEMA_VERSION,
    TRACE_FILE,
    case_dir,
    check_result,
    default_out,
    is_done,
    new_run_id,
    pending_cases,
    read_manifest,
    read_result,
    result_problem,
    utc_now,
    write_failure,
)

#: what other modules and the tests use as harness.store.X: the split-out jobs, then its own
__all__ = [
    "SECRET_NAMES",
    "SECRET_FLAGS",
    "ENV_ALLOW",
    "MASK",
    "is_secret_name",
    "secrets_in",
    "remember_secrets",
    "sanitise_text",
    "sanitise",
    "is_masked",
    "sanitise_frame",
    "last_line",
    "_O_TMPFILE",
    "write_bytes",
    "write_text",
    "staging_folder",
    "_STALE_TEMPORARY",
    "sweep_temporaries",
    "replace_folder",
    "write_json",
    "try_write_json",
    "RESERVE_FILE",
    "RESERVE_BYTES",
    "reserve_space",
    "release_space",
    "write_error",
    "read_json",
    "write_parquet",
    "write_csv",
    "write_trace",
    "SCHEMA_VERSION",
    "MANIFEST",
    "IDLE",
    "CASES",
    "CASE_FILE",
    "RESULT_FILE",
    "TRACE_FILE",
    "MEASUREMENTS_PARQUET",
    "MEASUREMENTS_CSV",
    "OK",
    "FAILED",
    "utc_now",
    "new_run_id",
    "default_out",
    "case_dir",
    "result_problem",
    "check_result",
    "read_result",
    "is_done",
    "pending_cases",
    "write_failure",
    "read_manifest",
    "SOFTWARE",
    "software_versions",
    "git_sha",
    "host_facts",
    "safe_environment",
    "failed_row",
    "identity_columns",
    "result_rows",
    "collect_rows",
    "rows_frame",
    "rebuild_measurements",
    "measurements_stale",
    "load_results",
]


# ------------------------------------------------------------------------------ manifest facts
SOFTWARE = (
    "energy-harness",
    "torch",
    "transformers",
    "accelerate",
    "lm_eval",
    "codecarbon",
    "nvidia-ml-py",
    "pandas",
    "pyarrow",
    "pydantic",
    "ray",
)


def software_versions() -> dict[str, str | None]:
    """Installed versions from package metadata (nothing heavy is imported)."""
    import platform
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha(cwd: Path | None = None) -> str | None:
    """The commit of the checkout the harness runs from, if it runs from one."""
    import subprocess

    here = Path(__file__).resolve().parent.parent
    for folder in (here, Path(cwd or Path.cwd())):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=5,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", out.stdout.strip()):
            return out.stdout.strip()
    return None


def host_facts() -> dict:
    """Facts about this machine: harness.hardware's when present, else a small version here."""
    try:
        from harness.hardware import host_facts as _facts

        return _facts()
    except Exception:
        pass
    import platform

    facts: dict[str, Any] = {
        "hostname": platform.node(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        facts["memory_mb"] = round(psutil.virtual_memory().total / 2**20)
    except Exception:
        pass
    return facts


def safe_environment() -> dict[str, str]:
    return {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}


# ------------------------------------------------------------------------------ measurements
def _case_order(run_dir: Path) -> list[str]:
    try:
        manifest = read_json(Path(run_dir) / MANIFEST)
        return [c["case_id"] for c in manifest.get("cases", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def failed_row(case: dict, run_id: str | None, error: str | None) -> dict:
    """The one row a failed case contributes to measurements."""
    row = identity_columns(case, run_id)
    row.update(status=FAILED, error=error)
    return row


def identity_columns(case: dict, run_id: str | None) -> dict:
    """The identity columns of a case's records (ARCHITECTURE.md, Columns)."""
    model = case.get("model") or {}
    variant = case.get("variant") or {}
    hw = case.get("hardware") or {}
    w = case.get("workload") or {}
    return {
        "run_id": run_id,
        "suite": case.get("suite"),
        "case_id": case.get("case_id"),
        "case": case.get("case"),
        "model": model.get("name"),
        "model_source": model.get("source"),
        "variant": variant.get("name"),
        "dtype": variant.get("dtype"),
        "quantization": variant.get("quantization"),
        "hardware": hw.get("name"),
        "device": hw.get("device"),
        "workload": w.get("type"),
        "batch_size": w.get("batch_size"),
        "prompt_tokens": w.get("prompt_tokens"),
        "new_tokens": w.get("new_tokens"),
        "seq_len": w.get("seq_len"),
        "steps": w.get("steps"),
        "task": w.get("task"),
    }


def result_rows(result: dict, case: dict | None, run_id: str | None) -> list[dict]:
    """Measurement rows of one case: its repetitions if ok, else one failed row."""
    if result.get("status") == OK and result.get("repetitions"):
        return [dict(r) for r in result["repetitions"]]
    case = case or result.get("case_settings") or {"case_id": result.get("case_id")}
    row = failed_row(case, run_id, result.get("error") or "failed without a reason")
    if result.get("node"):
        row["node"] = result["node"]  # a Ray run: which node the case failed on
    return [row]


def collect_rows(run_dir: Path) -> list[dict]:
    """Every measurement row of a run folder, from the result.json files, in case order."""
    run_dir = Path(run_dir)
    cases_dir = run_dir / CASES
    try:
        run_id = read_json(run_dir / MANIFEST).get("run_id")
    except (OSError, ValueError):
        run_id = run_dir.name
    order = {cid: i for i, cid in enumerate(_case_order(run_dir))}
    folders = sorted(
        (p for p in cases_dir.iterdir() if p.is_dir()) if cases_dir.is_dir() else [],
        key=lambda p: (order.get(p.name, len(order)), p.name),
    )
    rows: list[dict] = []
    for folder in folders:
        result, _ = check_result(run_dir, folder.name)
        if result is None:
            continue  # no usable result: the case is not done, and has no rows
        try:
            case = read_json(folder / CASE_FILE)
        except (OSError, ValueError):
            case = None
        rows += result_rows(result, case, run_id)
    return rows


def rows_frame(rows: list[dict]):
    """A DataFrame with the columns of harness.records.COLUMNS first, then the extras."""
    import pandas as pd

    from harness.records import COLUMNS

    extras: list[str] = []
    for row in rows:
        extras += [k for k in row if k not in COLUMNS and k not in extras]
    df = pd.DataFrame(rows, columns=COLUMNS + extras)
    for col in df.columns:
        # whole-number columns stay whole numbers beside a failed row's empty cell
        values = [row.get(col) for row in rows if row.get(col) is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            df[col] = pd.array([row.get(col) for row in rows], dtype="Int64")
    return df


#: columns the report fills (harness.report.measurements): in the files once it is built, left
#: out before (or where no row has them), never written always empty
REPORT_COLUMNS = ("produce_j", "embodied_g", "co2e_total_g")


def without_unfilled_report_columns(df):
    """``df`` less the report-time and optional columns (``records.OPTIONAL_COLUMNS``) that no
    row fills."""
    from harness.records import OPTIONAL_COLUMNS

    optional = (*REPORT_COLUMNS, *OPTIONAL_COLUMNS)
    empty = [c for c in optional if c in df.columns and df[c].isna().all()]
    return df.drop(columns=empty)


def rebuild_measurements(run_dir: Path, fill=None):
    """Rewrite measurements.parquet and .csv from the case results; return the DataFrame.

    ``fill(df)``: a DataFrame of columns to set on the rows (the report's, by
    ``harness.report.measurements.report_columns``)."""
    df = rows_frame(collect_rows(run_dir))
    if fill is not None and len(df):
        for col, values in fill(df).items():
            df[col] = values
    df = without_unfilled_report_columns(df)
    write_parquet(Path(run_dir) / MEASUREMENTS_PARQUET, df)
    write_csv(Path(run_dir) / MEASUREMENTS_CSV, df)
    return df


def measurements_stale(run_dir: Path) -> bool:
    """True when a result.json is newer than measurements.parquet (a run killed between writing a
    result and rebuilding the table), or a case folder was added or removed since."""
    run_dir = Path(run_dir)
    try:
        cache = (run_dir / MEASUREMENTS_PARQUET).stat().st_mtime_ns
    except OSError:
        return True
    cases_dir = run_dir / CASES
    if not cases_dir.is_dir():
        return False
    for result in cases_dir.glob(f"*/{RESULT_FILE}"):
        try:
            if result.stat().st_mtime_ns > cache:
                return True
        except OSError:
            continue
    try:
        return cases_dir.stat().st_mtime_ns > cache
    except OSError:
        return False


def _is_run_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file() or (path / CASES).is_dir()


def load_results(path: str | Path = "results"):
    """The measurements of one run folder, or of every run folder inside ``path``, as a DataFrame."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise HarnessError(f"{path}: no such results folder")
    if _is_run_dir(path):
        runs = [path]
    else:
        runs = sorted(p for p in path.iterdir() if p.is_dir() and _is_run_dir(p))
        if not runs:
            raise HarnessError(f"{path}: neither a run folder nor a folder of run folders")
    frames = []
    for run in runs:
        parquet = run / MEASUREMENTS_PARQUET
        if parquet.is_file() and not measurements_stale(run):
            try:
                frames.append(pd.read_parquet(parquet))
                continue
            except Exception:
                pass  # unreadable: rebuild from the case results below
        frames.append(without_unfilled_report_columns(rows_frame(collect_rows(run))))
    frames = [f for f in frames if len(f)]
    if not frames:
        return rows_frame([])
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df
