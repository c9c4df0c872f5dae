"""The results folder's layout (ARCHITECTURE.md, Results folder): file names, run ids, a case's
folder, whether a case is done, the manifest."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path
from typing import Any

from harness.atomic import read_json, write_json
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


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(suite_name: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{suite_name}-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def default_out() -> Path:
    return Path(os.environ.get("HARNESS_RESULTS") or "results")


def case_dir(run_dir: Path, case_id: str) -> Path:
    return Path(run_dir) / CASES / case_id


def result_problem(result: Any, case_id: str | None = None) -> str | None:
    """Why a parsed result.json is not a usable result, or None when it is one.

    A result is a JSON object with a status (ok or failed), of this case (its ``case_id``, where
    it names one); an ok one also has a non-empty list of repetitions, each an object: what a done
    case has, so a truncated, hand-edited or foreign file never counts as done.
    """
    if not isinstance(result, dict):
        return f"not a JSON object but {type(result).__name__}"
    status = result.get("status")
    if status not in (OK, FAILED):
        return f"status is {status!r}, not ok or failed"
    if case_id is not None and result.get("case_id") not in (None, case_id):
        return f"it belongs to case {result.get('case_id')!r}"
    if status == OK:
        reps = result.get("repetitions")
        if not isinstance(reps, list) or not reps:
            return "status ok without repetitions"
        if not all(isinstance(r, dict) for r in reps):
            return "a repetition is not a JSON object"
    return None


def check_result(run_dir: Path, case_id: str) -> tuple[dict | None, str | None]:
    """A case's result and, when its result.json exists but is unusable, why."""
    path = case_dir(run_dir, case_id) / RESULT_FILE
    try:
        result = read_json(path)
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValueError as e:
        return None, f"does not parse ({str(e).splitlines()[0][:80]})"
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    problem = result_problem(result, case_id)
    return (None, problem) if problem else (result, None)


def read_result(run_dir: Path, case_id: str) -> dict | None:
    """A case's result.json, or None when it is missing, unreadable or not a usable result."""
    return check_result(run_dir, case_id)[0]


def is_done(run_dir: Path, case_id: str) -> bool:
    """A case is done when its result.json exists, is a complete result and says ok."""
    result = read_result(run_dir, case_id)
    return result is not None and result.get("status") == OK


def _warn(line: str) -> None:
    import sys

    print(f"harness: warning: {line}", file=sys.stderr, flush=True)


def pending_cases(run_dir: Path, cases: list[dict], warn=None) -> list[dict]:
    """The cases of ``cases`` not done in ``run_dir``; each unusable result.json gets a warning
    naming it (that case runs again)."""
    warn = warn or _warn
    pending = []
    for case in cases:
        result, problem = check_result(run_dir, case["case_id"])
        if problem:
            path = case_dir(run_dir, case["case_id"]) / RESULT_FILE
            warn(f"{path}: not a complete result ({problem}); {case.get('case')} runs again")
        if result is None or result.get("status") != OK:
            pending.append(case)
    return pending


def write_failure(path: Path, result: dict) -> bool:
    """Write a failed (or interrupted) result unless ``path`` already holds a complete ok result:
    a finished case is never overwritten by what happened after it finished. True if written."""
    try:
        existing = read_json(path)
    except (OSError, ValueError):
        existing = None
    if existing is not None and result_problem(existing) is None and existing.get("status") == OK:
        return False
    write_json(path, result)
    return True


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / MANIFEST
    try:
        return read_json(path)
    except FileNotFoundError:
        raise HarnessError(f"{run_dir}: not a run folder (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: unreadable: {e}") from None
