"""scripts/gpu-check.sh: its dry run on this CPU with a fake NVIDIA GPU, so that the device time of
a real GPU is spent on the GPU, not on the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import load_results

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def _dry_run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "check"
    e = dict(os.environ, PYTHON=sys.executable, **env)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        env=e,
        cwd=ROOT,
        timeout=900,
    )
    return proc, out


def _json_tail(path: Path):
    """The JSON value a command printed last (harness measure prints its CMD's output first)."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line in ("{", "["):
            try:
                return json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    raise AssertionError(f"no JSON value in {path}")


def _check(out: Path, suite_cases: int, variants: set[str]) -> None:
    log = (out / "gpu-check.log").read_text()
    assert "DRY RUN" in log and "fake NVIDIA GPU" in log
    # the fake GPU is seen through NVML, and its counter agrees with its power
    sensors = json.loads((out / "sensors.json").read_text())
    nvml = [s for s in sensors if s["source"] == "nvml" and s["status"] == "ok"]
    assert [s["domain"] for s in nvml] == ["gpu:0"]
    for w in (1, 5, 30):
        checks = _json_tail(out / f"check-{w}.log")
        gpu = [c for c in checks if c["source"] == "nvml" and c["domain"] == "gpu:0"]
        assert gpu and gpu[0]["counter_vs_power"] is not None
        assert abs(gpu[0]["counter_vs_power"]) < 0.02
        m = _json_tail(out / f"measure-{w}.log")
        assert m["exit_status"] == 0
        assert m["domain_methods"]["gpu:0"] == "measured"
        # 100 W for the loop's length (its start included), never less
        assert m["energy_j"]["gpu:0"] >= 100 * m["duration_s"] * 0.98
    idle = _json_tail(out / "idle.log")
    assert idle["energy_j"]["gpu:0"] > 0
    # the suite ran on the CPU and its report has energy per token per batch and precision
    runs = [p for p in (out / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1
    assert (runs[0] / "report" / "report.md").exists()
    rows = load_results(runs[0])
    infer = rows[rows["workload"] == "infer"]
    assert set(infer["variant"]) == variants
    assert sorted(set(infer["batch_size"])) == [1, 8, 64]
    assert (infer["energy_per_token_j"] > 0).all()
    assert len(list((runs[0] / "cases").iterdir())) == suite_cases
    table = (out / "energy-per-token.txt").read_text()
    assert "energy_per_token_j" in table
    assert "vLLM is not installed here" in log or "== vllm" in log
    assert "gpu-check: 0 step(s) failed" in log


def test_the_dry_run_passes_with_one_precision(tmp_path):
    proc, out = _dry_run(tmp_path, GPU_CHECK_ONLY="*/fp32/*")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    _check(out, suite_cases=5, variants={"fp32"})


@pytest.mark.slow
def test_the_dry_run_passes_whole(tmp_path):
    proc, out = _dry_run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    _check(out, suite_cases=14, variants={"fp32", "bf16", "int8w"})


def test_a_bad_option_is_one_line(tmp_path):
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpu-check: unknown option --bogus (see --help)"
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--wheels", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "is not a folder" in proc.stderr
