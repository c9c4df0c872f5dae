"""A/A: the same suite run twice on the same machine flags nothing; a planted regression is.

The quick test runs a suite of three fixed command loops (seconds); the slow one a small suite of
builtin models (inference at three batch sizes and an accuracy task), three A/A compares in a row
and then a run whose every inference call does its work three times (tests/plant_slow_inference).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from runhelpers import FAST, ROOT, TESTS, harness

from harness.cli import main
from harness.runner import orchestrate_run


def _command(name: str, n: int, planted: bool = False) -> dict:
    """A fixed loop of ``n`` steps; with ``planted``, AA_SCALE times as many."""
    scale = "float(os.environ.get('AA_SCALE', '1'))" if planted else "1"
    code = f"import os\nt = 0\nfor i in range(int({n} * {scale})):\n    t += i * i % 7\n"
    return {"type": "command", "name": name, "run": [sys.executable, "-c", code]}


def _suite(folder: Path, data: dict) -> Path:
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(suite: Path, tmp_path: Path, out: Path, timeout: float, **env) -> Path:
    proc = harness(
        ["run", str(suite), "--out", str(out), "--no-report"], tmp_path, timeout=timeout, **env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Path(proc.stdout.strip().splitlines()[-1])


def _run_here(suite: Path, out: Path) -> Path:
    """A run in this process (no interpreter to start): its workers are forked as usual."""
    outcome = orchestrate_run(suite, out, report=False, live=False, echo=lambda _line: None)
    assert outcome.exit_status == 0
    return outcome.run_dir


def _compare(base: Path, new: Path, tmp_path: Path):
    return harness(["compare", str(base), str(new)], tmp_path, timeout=120)


@pytest.mark.slow
def test_a_a_of_command_loops_then_a_planted_slowdown(tmp_path, monkeypatch, capsys):
    suite = _suite(
        tmp_path,
        {
            "name": "aa-commands",
            "carbon": {"intensity_g_per_kwh": 100, "pue": 1.0},
            "measurement": {**FAST, "min_repeats": 3, "max_repeats": 3},
            "hardware": [{"name": "cpu", "device": "cpu", "threads": 1}],
            "workloads": [
                _command("loop-a", 600_000, planted=True),
                _command("loop-b", 600_000),
                _command("loop-c", 600_000),
            ],
        },
    )
    out = tmp_path / "results"
    monkeypatch.setenv("HARNESS_LOCK_FILE", str(tmp_path / "harness.lock"))
    first = _run_here(suite, out)
    second = _run_here(suite, out)
    for run in (first, second):  # every case measured the reference loop beside it
        assert len(list(run.glob("cases/*/reference.json"))) == 3
    assert main(["compare", str(first), str(second)]) == 0
    aa = capsys.readouterr().out
    assert " regression " not in aa and "0 regressions" in aa
    # the command inherits it: loop-a does 10 times the work (3 cases of 3 repetitions on a
    # shared machine cannot pin a threefold change; the slow test plants that on 4 cases)
    monkeypatch.setenv("AA_SCALE", "10")
    planted = _run_here(suite, out)
    assert main(["compare", str(second), str(planted)]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if " regression " in line]
    assert lines and all("loop-a" in line for line in lines)


@pytest.mark.slow
def test_a_a_of_builtin_models_three_times_then_a_planted_threefold_inference_cost(tmp_path):
    """The issue's acceptance: a small suite of builtin models run back to back; compare exits 0
    in 3 of 3 tries; a run whose inference costs 3 times as much exits 1."""
    suite = _suite(
        tmp_path,
        {
            "name": "aa-models",
            "carbon": {"intensity_g_per_kwh": 100, "pue": 1.0},
            "measurement": {**FAST, "warmup": 1, "min_repeats": 3, "max_repeats": 5},
            "hardware": [{"name": "cpu", "device": "cpu", "threads": 1}],
            "models": [{"name": "tiny-xs", "source": "builtin:tiny-xs"}],
            "variants": [{"name": "fp32", "dtype": "float32"}],
            "workloads": [
                {"type": "infer", "batch_sizes": [1, 4, 8], "prompt_tokens": 8, "new_tokens": 8},
                {"type": "accuracy", "tasks": ["arith_mc"], "limit": 20},
            ],
        },
    )
    out = tmp_path / "results"
    runs = [_run(suite, tmp_path, out, 600) for _ in range(4)]
    for base, new in zip(runs, runs[1:], strict=False):
        aa = _compare(base, new, tmp_path)
        assert aa.returncode == 0, aa.stdout + aa.stderr
        assert "paired over 20 questions" in aa.stdout  # accuracy answer by answer
    plugins = {"HARNESS_PLUGINS": "plant_slow_inference"}
    pythonpath = os.pathsep.join(
        filter(None, [str(ROOT), str(TESTS), os.environ.get("PYTHONPATH")])
    )
    planted = _run(suite, tmp_path, tmp_path / "planted", 600, PYTHONPATH=pythonpath, **plugins)
    flagged = _compare(runs[-1], planted, tmp_path)
    assert flagged.returncode == 1, flagged.stdout + flagged.stderr
    lines = [line for line in flagged.stdout.splitlines() if " regression " in line]
    assert lines and all("infer" in line for line in lines)
    assert json.loads(next(planted.glob("cases/*/reference.json")).read_text())["windows"]
