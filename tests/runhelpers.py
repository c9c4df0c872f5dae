"""Helpers for the runner, store and suite tests: fast suites of command workloads, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
PY = sys.executable

#: a fast measurement block: estimate sensor, no idle, no warmup, one repetition
FAST = {
    "sensors": ["estimate"],
    "sample_hz": 20,
    "idle_s": 0,
    "warmup": 0,
    "min_repeats": 1,
    "max_repeats": 1,
    "min_duration_s": 0,
    "case_timeout_s": 30,
}


def command(name: str, code: str, env: dict | None = None) -> dict:
    """A command workload running ``python -c code``."""
    w = {"type": "command", "name": name, "run": [PY, "-c", code]}
    if env:
        w["env"] = env
    return w


def write_suite(folder: Path, workloads: list[dict], name: str = "t", **measurement) -> Path:
    data = {
        "name": name,
        "carbon": {"intensity_g_per_kwh": 100, "pue": 1.2},
        "measurement": {**FAST, **measurement},
        "hardware": [{"name": "cpu", "device": "cpu"}],
        "workloads": workloads,
    }
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def env(tmp_path: Path, **extra: str) -> dict:
    """The environment of a ``harness`` subprocess: this checkout, a private lock file."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), e.get("PYTHONPATH")]))
    e["HARNESS_LOCK_FILE"] = str(tmp_path / "harness.lock")
    e.update(extra)
    return e


def harness(
    args: list[str], tmp_path: Path, timeout: float = 120, **extra_env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "harness", *args],
        cwd=tmp_path,
        env=env(tmp_path, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results_by_name(run_dir: Path) -> dict[str, dict]:
    out = {}
    for path in (Path(run_dir) / "cases").glob("*/result.json"):
        result = json.loads(path.read_text())
        out[result["case"]] = result
    return out


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]
