"""Knobs in a whole run: set per profile, restored after a worker is killed mid-case, refused
profiles failing alone, a killed runner's knobs undone at its resume, the sweep suite."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fakenvml
import yaml
from fakenvml import FakeGpu
from fakesysfs import make_cpufreq_policies
from runhelpers import FAST, PY, ROOT, command, env, harness, last_line, results_by_name

from harness.knobs import KNOBS_FILE, machine_file
from harness.runner import orchestrate_run

UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444"
#: a command that kills the worker running it: the case dies mid-way, as in a crash
KILL_WORKER = "import os, signal; os.kill(os.getppid(), signal.SIGKILL)"


def suite_file(folder: Path, hardware: list[dict], workloads: list[dict], name="knobs") -> Path:
    data = {
        "name": name,
        "carbon": {"intensity_g_per_kwh": 100, "pue": 1.0},
        "measurement": dict(FAST),
        "hardware": hardware,
        "workloads": workloads,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def caps(policies) -> list[int]:
    return [int((p / "scaling_max_freq").read_text()) for p in policies]


def test_power_limits_per_profile_restored_after_a_killed_worker(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    a = FakeGpu(
        "A100", UUID_A, energy_mj=0, power_limit_mw=300_000, power_limit_range_mw=(100_000, 400_000)
    )
    b = FakeGpu(
        "A100",
        UUID_B,
        energy_mj=0,
        power_limit_mw=300_000,
        power_limit_range_mw=(100_000, 400_000),
        errors={"nvmlDeviceSetPowerManagementLimit": fakenvml.NoPermission()},
    )
    monkeypatch.setitem(sys.modules, "pynvml", fakenvml.module([a, b]))
    suite = suite_file(
        tmp_path,
        [
            {"name": "gpu-200w", "device": "cuda:0", "power_limit_w": 200},
            {"name": "gpu-250w", "device": "cuda:0", "power_limit_w": 250},
            {"name": "gpu1-200w", "device": "cuda:1", "power_limit_w": 200},
        ],
        [command("work", "pass"), command("die", KILL_WORKER)],
    )
    lines: list[str] = []
    outcome = orchestrate_run(suite, tmp_path / "out", report=False, live=False, echo=lines.append)
    assert a.power_limit_mw == 300_000 and b.power_limit_mw == 300_000
    assert a.changes == [
        ("power_limit_mw", 200_000),
        ("power_limit_mw", 300_000),
        ("power_limit_mw", 250_000),
        ("power_limit_mw", 300_000),
    ]
    assert b.changes == []
    results = results_by_name(outcome.run_dir)
    assert results["gpu-200w/work"]["status"] == "ok"
    assert results["gpu-200w/die"]["error"] == "worker killed by SIGKILL"
    assert results["gpu-250w/work"]["status"] == "ok"  # the run went on
    refused = results["gpu1-200w/work"]["error"]
    assert refused.startswith("hardware 'gpu1-200w': power_limit_w 200: ")
    assert "nvmlDeviceSetPowerManagementLimit on GPU 1" in refused and "CAP_SYS_ADMIN" in refused
    assert results["gpu1-200w/die"]["error"] == refused
    assert outcome.exit_status == 1
    saved = json.loads((outcome.run_dir / KNOBS_FILE).read_text())
    assert saved["held"] == []
    assert [h["profile"] for h in saved["history"]] == ["gpu-200w", "gpu-250w", "gpu1-200w"]
    assert all(h["restored"] for h in saved["history"])
    assert not machine_file().exists()


def test_cpu_cap_recorded_per_window_and_restored_after_a_killed_worker(tmp_path):
    sysfs = tmp_path / "sys"
    policies = make_cpufreq_policies(sysfs, cpus=2, max_khz=3_000_000)
    seen = tmp_path / "seen.txt"
    read_cap = (
        f"import pathlib; p = pathlib.Path({str(policies[0] / 'scaling_max_freq')!r}); "
        f"pathlib.Path({str(seen)!r}).write_text(p.read_text())"
    )
    suite = suite_file(
        tmp_path,
        [
            {"name": "cpu-1200", "device": "cpu", "cpu_max_mhz": 1200},
            {"name": "cpu", "device": "cpu"},
        ],
        [command("read", read_cap), command("die", KILL_WORKER)],
    )
    proc = harness(
        ["run", str(suite), "--out", str(tmp_path / "out"), "--no-report"],
        tmp_path,
        timeout=300,
        HARNESS_SYSFS=str(sysfs),
    )
    assert proc.returncode == 1, proc.stderr
    assert "knobs of cpu-1200: cpu_max_mhz 1200 (was 3000)" in proc.stdout
    assert "knobs: restored cpu_max_mhz of cpu-1200" in proc.stdout
    assert caps(policies) == [3_000_000, 3_000_000]
    run_dir = Path(last_line(proc.stdout))
    results = results_by_name(run_dir)
    assert results["cpu-1200/die"]["error"] == "worker killed by SIGKILL"
    with (run_dir / "measurements.csv").open() as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    # the cap as the window saw it: set for its profile, back to the original for the next
    assert float(rows["cpu-1200/read"]["cpu_max_mhz"]) == 1200.0
    assert float(rows["cpu/read"]["cpu_max_mhz"]) == 3000.0
    assert seen.read_text().strip() == "3000000"  # the last reader ran after the restore


def test_a_killed_runner_leaves_its_knobs_for_the_resume_to_restore(tmp_path):
    sysfs = tmp_path / "sys"
    policies = make_cpufreq_policies(sysfs, cpus=2, max_khz=3_000_000)
    started, release = tmp_path / "started", tmp_path / "release"
    hang = (
        "import pathlib, time\n"
        f"if not pathlib.Path({str(release)!r}).exists():\n"
        f"    pathlib.Path({str(started)!r}).write_text('x')\n"
        "    time.sleep(600)\n"
    )
    suite = suite_file(
        tmp_path,
        [{"name": "cpu-1200", "device": "cpu", "cpu_max_mhz": 1200}],
        [command("hang", hang)],
    )
    runner = subprocess.Popen(
        [PY, "-m", "harness", "run", str(suite), "--out", str(tmp_path / "out"), "--no-report"],
        cwd=tmp_path,
        env=env(tmp_path, HARNESS_SYSFS=str(sysfs)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert runner.poll() is None, runner.communicate()
            assert time.monotonic() < deadline, "the case never started"
            time.sleep(0.05)
        assert caps(policies) == [1_200_000, 1_200_000]
        os.kill(runner.pid, signal.SIGKILL)  # the runner dies mid-case
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    assert caps(policies) == [1_200_000, 1_200_000]  # nobody restored it
    (run_dir,) = (tmp_path / "out").iterdir()
    assert json.loads((run_dir / KNOBS_FILE).read_text())["held"][0]["state"] == "set"
    release.write_text("x")
    proc = harness(
        ["run", "--resume", str(run_dir), "--no-report"],
        tmp_path,
        timeout=300,
        HARNESS_SYSFS=str(sysfs),
    )
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first == (
        f"knobs: restored cpu_max_mhz of cpu-1200, left set by {run_dir.name} (it did not finish)"
    )
    assert caps(policies) == [3_000_000, 3_000_000]
    assert results_by_name(run_dir)["cpu-1200/hang"]["status"] == "ok"
    assert not machine_file().exists()


# ------------------------------------------------------------------------------ the sweep suite
SWEEP = ROOT / "suites" / "power-sweep.yaml"


def test_sweep_suite_validates():
    proc = harness(["validate", str(SWEEP)], ROOT)
    assert proc.returncode == 0, proc.stderr
    from harness.suite import load_suite

    suite = load_suite(SWEEP)
    cpu = [h.cpu_max_mhz for h in suite.hardware if h.cpu_max_mhz]
    gpu = [h.power_limit_w for h in suite.hardware if h.power_limit_w]
    assert len(cpu) >= 3 and len(gpu) >= 3


def test_sweep_suite_cpu_part_is_refused_without_cpufreq(tmp_path):
    empty = tmp_path / "sys"
    empty.mkdir()
    proc = harness(
        ["run", str(SWEEP), "--only", "*/cpu-*", "--out", str(tmp_path / "out"), "--no-report"],
        tmp_path,
        timeout=300,
        HARNESS_SYSFS=str(empty),
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    run_dir = Path(last_line(proc.stdout))
    results = results_by_name(run_dir)
    assert results and all(r["status"] == "failed" for r in results.values())
    expected = (
        f"cpu_max_mhz {{}}: no cpufreq here ({empty}/devices/system/cpu/cpufreq has no "
        "policy*/scaling_max_freq): this kernel, VM or container does not let the CPU frequency "
        "be set"
    )
    for name, result in results.items():
        hw = name.split("/")[2]
        mhz = hw.removeprefix("cpu-").removesuffix("mhz")
        line = f"hardware {hw!r}: " + expected.format(mhz)
        if name.endswith("/train"):
            assert result["error"] == line, name
        else:  # the cases that would load its weights say why they were not run
            assert (
                result["error"]
                == f"not run: its train case {name.rsplit('/', 1)[0]}/train failed ({line})"
            ), name
    assert not (run_dir / "idle.json").exists()  # nothing measured under an unset knob


def test_dry_run_says_which_knobs_a_run_would_set(tmp_path):
    proc = harness(["run", str(SWEEP), "--dry-run", "--only", "*/cpu*/infer-b1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "knobs of cpu-1200mhz: cpu_max_mhz 1200" in proc.stdout.splitlines()
    assert "knobs of cpu:" not in proc.stdout  # the reference profile changes nothing
    assert "gpu" not in proc.stdout


def test_ray_run_with_knobs_is_refused_before_any_run_folder(tmp_path):
    suite = suite_file(
        tmp_path,
        [{"name": "cpu-1200", "device": "cpu", "cpu_max_mhz": 1200}],
        [command("c", "pass")],
    )
    proc = harness(["run", str(suite), "--out", str(tmp_path / "out"), "--ray"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "harness: hardware 'cpu-1200': cpu_max_mhz can only be set on this machine; run the suite "
        "without --ray"
    ]
    assert not (tmp_path / "out").exists()
