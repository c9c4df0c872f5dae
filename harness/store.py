"""The results folder (ARCHITECTURE.md, Results folder): layout, atomic writes, loading.

Every file goes through ``write_bytes``: a temporary file in the same folder, flushed and fsynced,
then renamed over the target, so a reader (or a run killed mid-write) never sees half a file. And
every value written goes through ``sanitise`` first: the values of secret-looking environment
variables and the credentials of URLs never reach the disk.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
IDLE = "idle.json"
CASES = "cases"
CASE_FILE = "case.json"
RESULT_FILE = "result.json"
TRACE_FILE = "trace.parquet"
MEASUREMENTS_PARQUET = "measurements.parquet"
MEASUREMENTS_CSV = "measurements.csv"

OK = "ok"
FAILED = "failed"

# ------------------------------------------------------------------------------ secrets
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@:]*(?::[^/\s@]*)?@")
#: environment variables safe to record (the manifest never dumps the environment otherwise)
ENV_ALLOW = (
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "HARNESS_SYSFS",
    "HARNESS_RESULTS",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)
_MIN_SECRET_LEN = 4


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def _secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)  # longest first: no partial leftovers


def sanitise_text(text: str, secrets_: Iterable[str] | None = None) -> str:
    """``text`` without URL credentials and without the value of any secret environment variable."""
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    for value in _secret_values() if secrets_ is None else secrets_:
        if value in text:
            text = text.replace(value, "***")
    return text


def sanitise(value: Any, _secrets: list[str] | None = None) -> Any:
    """A copy of a JSON-like value with every string sanitised and secret-named keys masked."""
    if _secrets is None:
        _secrets = _secret_values()
    if isinstance(value, str):
        return sanitise_text(value, _secrets)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = sanitise_text(str(k), _secrets) if isinstance(k, str) else k
            if isinstance(k, str) and is_secret_name(k) and isinstance(v, str) and v:
                out[key] = "***"
            else:
                out[key] = sanitise(v, _secrets)
        return out
    if isinstance(value, (list, tuple)):
        return [sanitise(v, _secrets) for v in value]
    return value


def sanitise_frame(df):
    """A DataFrame whose string cells are sanitised (for parquet and CSV)."""
    secrets_ = _secret_values()
    df = df.copy()
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].map(lambda v: sanitise_text(v, secrets_) if isinstance(v, str) else v)
    df.columns = [sanitise_text(str(c), secrets_) for c in df.columns]
    return df


def last_line(text: str) -> str:
    """The last non-blank line of a program's output, stripped ("" when there is none).

    A failing program's last line is usually its error; a command case's last line may be its
    JSON report. The one helper for both.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------ atomic writes
def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    The one way the project writes a file (results, reports, figures, task files, tokenizer):
    a reader, or a run killed half-way, sees the old file or the new one, never a part.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)  # make the rename itself durable


def write_text(path: Path, text: str) -> None:
    """``write_bytes`` of UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def staging_folder(target: Path) -> Path:
    """A fresh hidden folder beside ``target`` to build its new contents in (``replace_folder``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))


def replace_folder(staging: Path, target: Path) -> Path:
    """Swap a fully written ``staging`` folder into place as ``target``, atomically.

    The folder analogue of ``write_bytes`` (a checkpoint is a folder of files written by
    ``save_pretrained``): every file is fsynced, then the old folder is renamed aside, the new one
    renamed in and the old one removed, so ``target`` is always a whole checkpoint, old or new.
    """
    staging, target = Path(staging), Path(target)
    for path in staging.rglob("*"):
        if path.is_file():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(staging)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def _finite(value: Any) -> Any:
    # JSON has no NaN or infinity: store them as null
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_finite(sanitise(obj)), indent=2, default=_json_default, allow_nan=False)
    write_bytes(path, (text + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _frame_for_arrow(df):
    """Mixed-type object columns (a number in one row, text in another) become text."""
    import pyarrow as pa

    for col in df.columns:
        if df[col].dtype != object:
            continue
        try:
            pa.array(df[col].tolist(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            df[col] = df[col].map(lambda v: None if v is None else str(v))
    return df


def write_parquet(path: Path, df) -> None:
    import io

    df = _frame_for_arrow(sanitise_frame(df))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    write_bytes(path, buf.getvalue())


def write_csv(path: Path, df) -> None:
    write_bytes(path, sanitise_frame(df).to_csv(index=False).encode())


def write_trace(path: Path, rows: list[dict]) -> None:
    """trace.parquet: t_s (seconds since the meter started), domain, watts."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_arrays(
        [
            pa.array([float(r["t_s"]) for r in rows], type=pa.float64()),
            pa.array([sanitise_text(str(r["domain"])) for r in rows], type=pa.string()),
            pa.array([float(r["watts"]) for r in rows], type=pa.float64()),
        ],
        names=["t_s", "domain", "watts"],
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------ layout
def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(suite_name: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{suite_name}-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def default_out() -> Path:
    return Path(os.environ.get("HARNESS_RESULTS") or "results")


def case_dir(run_dir: Path, case_id: str) -> Path:
    return Path(run_dir) / CASES / case_id


def read_result(run_dir: Path, case_id: str) -> dict | None:
    """A case's result.json, or None when it is missing or unreadable."""
    try:
        return read_json(case_dir(run_dir, case_id) / RESULT_FILE)
    except (OSError, ValueError):
        return None


def is_done(run_dir: Path, case_id: str) -> bool:
    """A case is done when its result.json exists with status ok."""
    result = read_result(run_dir, case_id)
    return bool(result) and result.get("status") == OK


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / MANIFEST
    try:
        return read_json(path)
    except FileNotFoundError:
        raise HarnessError(f"{run_dir}: not a run folder (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: unreadable: {e}") from None


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
        try:
            result = read_json(folder / RESULT_FILE)
        except (OSError, ValueError):
            continue
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


def rebuild_measurements(run_dir: Path):
    """Rewrite measurements.parquet and .csv from the case results; return the DataFrame."""
    df = rows_frame(collect_rows(run_dir))
    write_parquet(Path(run_dir) / MEASUREMENTS_PARQUET, df)
    write_csv(Path(run_dir) / MEASUREMENTS_CSV, df)
    return df


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
        if parquet.is_file():
            try:
                frames.append(pd.read_parquet(parquet))
                continue
            except Exception:
                pass  # unreadable: rebuild from the case results below
        frames.append(rows_frame(collect_rows(run)))
    frames = [f for f in frames if len(f)]
    if not frames:
        return rows_frame([])
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df
