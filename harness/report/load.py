"""Opening run folders for reporting: the manifest, the repetitions (read once), trace paths.

The repetitions come from ``harness.store.load_results`` (the one loader of the project). Nothing
here reads a trace: plots ask for the few traces they draw by case id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness import store
from harness.errors import HarnessError
from harness.records import COLUMNS, TEXT_COLUMNS

NUMERIC_COLUMNS = [c for c in COLUMNS if c not in TEXT_COLUMNS]

DEFAULT_QUERIES_LIFETIME = 1_000_000


@dataclass
class Run:
    """One run folder: its manifest and its repetitions, one row each."""

    path: Path
    manifest: dict
    frame: pd.DataFrame = field(repr=False)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    @property
    def suite(self) -> dict:
        suite = self.manifest.get("suite")
        return suite if isinstance(suite, dict) else {}

    @property
    def suite_name(self) -> str:
        suite = self.manifest.get("suite")
        if isinstance(suite, str):
            return suite
        return str(self.suite.get("name") or self.manifest.get("suite_name") or "")

    @property
    def started(self) -> str:
        return str(self.manifest.get("started") or "")

    @property
    def carbon_block(self) -> dict | None:
        block = self.suite.get("carbon") or self.manifest.get("carbon")
        return block if isinstance(block, dict) else None

    @property
    def queries_lifetime(self) -> int:
        block = self.suite.get("report") or {}
        value = block.get("queries_lifetime", DEFAULT_QUERIES_LIFETIME)
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise HarnessError(
                f"{self.path}: report.queries_lifetime must be a whole number, got {value!r}"
            ) from None
        if value < 0:
            raise HarnessError(f"{self.path}: report.queries_lifetime must be >= 0, got {value}")
        return value

    def trace_path(self, case_id: str) -> Path:
        return self.path / "cases" / str(case_id) / "trace.parquet"

    def sort_key(self) -> tuple[str, str]:
        """Chronological order of runs: manifest start time, then run_id (which embeds it)."""
        return (self.started, self.run_id)


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def read_manifest(path: Path) -> dict:
    manifest = store.read_manifest(path)
    if not isinstance(manifest, dict):
        raise HarnessError(f"{path}/manifest.json: expected a JSON object")
    return manifest


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Every known column present, numbers as floats, text as text: one shape for all readers."""
    frame = frame.copy()
    for col in COLUMNS:
        if col not in frame.columns:
            frame[col] = np.nan
    for col in NUMERIC_COLUMNS:
        if frame[col].dtype.kind not in "fiu":
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
        frame[col] = frame[col].astype(float)
    for col in TEXT_COLUMNS:
        if frame[col].dtype.kind != "O":
            frame[col] = frame[col].astype(object)
        frame[col] = frame[col].where(frame[col].notna(), None)
    frame["status"] = frame["status"].fillna("ok")
    return frame


def _load_repetitions(path: Path) -> pd.DataFrame:
    try:
        return store.load_results(path)
    except HarnessError:
        raise
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: cannot read the run's results ({e})") from None


def open_run(path: str | os.PathLike) -> Run:
    """Open a run folder; a path that is not one is a one-line HarnessError."""
    path = Path(path)
    if not path.is_dir():
        raise HarnessError(f"{path}: no such folder")
    if not is_run_dir(path):
        raise HarnessError(f"{path}: not a run folder (no manifest.json)")
    manifest = read_manifest(path)
    frame = normalise(_load_repetitions(path))
    run = Run(path=path, manifest=manifest, frame=frame)
    # rows without a run_id (older writers) belong to this run
    frame["run_id"] = frame["run_id"].fillna(run.run_id)
    frame["suite"] = frame["suite"].fillna(run.suite_name)
    return run


def run_dirs(path: str | os.PathLike) -> list[Path]:
    """A run folder itself, or the run folders directly inside a results folder (sorted)."""
    path = Path(path)
    if is_run_dir(path):
        return [path]
    if not path.is_dir():
        raise HarnessError(f"{path}: no such folder")
    found = sorted(p for p in path.iterdir() if p.is_dir() and is_run_dir(p))
    if not found:
        raise HarnessError(f"{path}: neither a run folder nor a folder of runs")
    return found


def open_runs(paths: list[str | os.PathLike]) -> list[Run]:
    """Every run named (run folders or results folders), oldest first, each once."""
    seen: dict[Path, Run] = {}
    for p in paths:
        for d in run_dirs(p):
            key = d.resolve()
            if key not in seen:
                seen[key] = open_run(d)
    return sorted(seen.values(), key=Run.sort_key)


def previous_run(new: Run, results_dir: Path) -> Run:
    """The latest run of the same suite that started before ``new`` in ``results_dir``."""
    if not results_dir.is_dir():
        raise HarnessError(f"{results_dir}: no such results folder")
    candidates = []
    for d in results_dir.iterdir():
        if not d.is_dir() or not is_run_dir(d) or d.resolve() == new.path.resolve():
            continue
        manifest = read_manifest(d)
        other = Run(path=d, manifest=manifest, frame=pd.DataFrame())
        if other.suite_name == new.suite_name and other.sort_key() < new.sort_key():
            candidates.append(other)
    if not candidates:
        raise HarnessError(
            f"no earlier run of suite {new.suite_name!r} than {new.run_id} in {results_dir}"
        )
    return open_run(max(candidates, key=Run.sort_key).path)
