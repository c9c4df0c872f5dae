"""Each fault of issue 10, end to end through ``harness measure --json``: the true figure, or a
figure no higher than the truth with a warning naming the domain; never a silent wrong one.

Trees are laid out as kernels lay them out (class/ entries link into devices/, counters are
rewritten in place) and NVML is the fake module at the import boundary.
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import fakenvml
import pytest
from fakenvml import FakeGpu
from fakesysfs import CounterWriter, make_acpi_power_meter, make_rapl, write_counter

import harness.sysfs
from harness.cli import main
from harness.meter import Meter
from harness.sensors.base import COUNTER, ESTIMATED, MEASURED, OK, DomainStatus, Source
from harness.sensors.nvml import NvmlSource
from harness.sensors.rapl import RaplSource

REPO = Path(__file__).resolve().parents[1]
UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"


def no_gpu(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fakenvml.module([]))


def measure_subprocess(args: list[str], timeout_s: float = 120) -> dict:
    """``harness measure --json`` in a child process (it reads the tree the test writes)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "harness", "measure", "--json", *args]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    assert proc.stdout, proc.stderr
    out = json.loads(proc.stdout)
    out["_returncode"] = proc.returncode
    return out


def measure_here(capsys, args: list[str]) -> tuple[int, dict]:
    """``harness measure --json`` in this process, so a fake pynvml is seen."""
    rc = main(["measure", "--json", *args])
    return rc, json.loads(capsys.readouterr().out)


class GpuEnergy:
    """A GPU drawing ``watts`` whose NVML counter moves every ``period_s`` (as on real boards)."""

    def __init__(self, watts: float, period_s: float = 0.1):
        self.watts, self.period_s = watts, period_s
        self.t0 = time.perf_counter()

    def __call__(self) -> int:
        steps = math.floor((time.perf_counter() - self.t0) / self.period_s)
        return int(self.watts * 1000 * steps * self.period_s)


# ---------------------------------------------------------------------- counters
def test_rapl_reset_in_a_3_s_window_is_no_more_than_the_truth_and_named(sysfs):
    paths = make_rapl(sysfs, sockets=1, dram=False, psys=False, core=False)
    write_counter(paths["cpu:0"], 200_000_000_000)  # 200 kJ since boot
    with CounterWriter(paths["cpu:0"], 25.0, reset_after_s=1.0) as writer:
        out = measure_subprocess(["--sensors", "rapl", "--sample-hz", "0", "--", "sleep", "3"])
    assert writer.reset_t is not None
    truth_j = 25.0 * out["duration_s"]
    assert 0 < out["energy_j"]["cpu:0"] <= truth_j * 1.02
    assert out["total_j"] <= truth_j * 1.02
    assert any(w.startswith("cpu:0: counter reset") for w in out["warnings"])
    assert out["exit_status"] == 0


def test_die_zones_mirroring_one_counter_count_once_through_measure(sysfs):
    paths = make_rapl(sysfs, sockets=1, dies=2, dram=False, psys=False, core=False)
    with CounterWriter([paths["cpu:0/die-0"], paths["cpu:0/die-1"]], 25.0):
        out = measure_subprocess(["--sensors", "rapl", "--sample-hz", "0", "--", "sleep", "2"])
    assert list(out["energy_j"]) == ["cpu:0"]  # one socket, named as such
    assert out["total_j"] == pytest.approx(25.0 * out["duration_s"], rel=0.02)
    assert any("mirrors" in w and w.startswith("cpu:0:") for w in out["warnings"])


# ---------------------------------------------------------------------- totals
def test_acpi_meter_reading_zero_beside_rapl_yields_the_total_to_the_components(sysfs):
    paths = make_rapl(sysfs, sockets=1, dram=True, psys=False, core=False)
    make_acpi_power_meter(sysfs, watts=0.0)
    with CounterWriter(paths["cpu:0"], 30.0), CounterWriter(paths["dram"], 5.0):
        out = measure_subprocess(
            ["--sensors", "rapl,hwmon", "--sample-hz", "10", "--", "sleep", "2"]
        )
    assert out["energy_j"]["system"] == 0.0
    assert sorted(out["total_domains"]) == ["cpu:0", "dram"]
    assert out["total_j"] == pytest.approx(35.0 * out["duration_s"], rel=0.02)
    assert out["method"] == MEASURED
    assert any(w.startswith("system: reads 0") for w in out["warnings"])


def test_wall_meter_with_a_gpu_and_no_cpu_is_the_total(sysfs, monkeypatch, capsys):
    # an ACPI meter at the wall contains the GPU: the total is the meter, not the GPU alone
    make_acpi_power_meter(sysfs, watts=300.0)
    fake = fakenvml.module([FakeGpu("A100", UUID_A, energy_mj=GpuEnergy(120.0))])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    rc, out = measure_here(capsys, ["--sample-hz", "20", "--", "sleep", "1.5"])
    assert rc == 0
    assert out["total_domains"] == ["system"]
    assert out["total_j"] == pytest.approx(300.0 * out["duration_s"], rel=0.02)
    assert out["method"] == MEASURED
    assert out["energy_j"]["gpu:0"] < out["total_j"]


def test_gpu_without_a_readable_cpu_is_estimated(sysfs, monkeypatch, capsys):
    fake = fakenvml.module([FakeGpu("A100", UUID_A, energy_mj=GpuEnergy(120.0))])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    rc, out = measure_here(capsys, ["--sample-hz", "0", "--", "sleep", "1.2"])
    assert rc == 0
    assert "gpu:0" in out["total_domains"] and "cpu" in out["total_domains"]
    assert out["method"] == ESTIMATED


class Unlabelled(Source):
    """A source that never says how its figures were obtained."""

    name = "unlabelled"

    def probe(self):
        return [DomainStatus(self.name, "cpu:0", COUNTER, OK)]

    def counter_domains(self):
        return ["cpu:0"]

    def read_energy_j(self):
        return {"cpu:0": time.perf_counter()}


def test_labelling_fails_closed():
    with Meter([Unlabelled()], sample_hz=None) as meter, meter.window("w") as w:
        time.sleep(0.01)
    assert w.measurement.method == ESTIMATED
    assert w.measurement.domain_methods == {"cpu:0": ESTIMATED}


# ---------------------------------------------------------------------- coarse counters
@pytest.mark.parametrize("sample_hz", [30, 10])
def test_nvml_counter_traced_gives_a_flat_trace_and_the_true_peak(sysfs, monkeypatch, sample_hz):
    fake = fakenvml.module([FakeGpu("A100", UUID_A, energy_mj=GpuEnergy(200.0))])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with Meter(sensors=[NvmlSource()], sample_hz=sample_hz) as meter:
        time.sleep(0.6)  # the meter sees the counter's steps and measures its period
        with meter.window("w") as w:
            time.sleep(2.5)
        rows = [r for r in meter.trace(w.measurement.start_s, w.measurement.end_s)]
    m = w.measurement
    assert meter.update_periods_s["gpu:0"] == pytest.approx(0.1, rel=0.1)
    assert m.peak_power_w == pytest.approx(200.0, rel=0.05)
    assert rows and all(r["watts"] == pytest.approx(200.0, rel=0.1) for r in rows)
    assert m.energy_j["gpu:0"] == pytest.approx(200.0 * m.duration_s, rel=0.1)


def test_window_shorter_than_ten_update_periods_is_flagged(monkeypatch):
    fake = fakenvml.module([FakeGpu("A100", UUID_A, energy_mj=GpuEnergy(100.0))])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with Meter(sensors=[NvmlSource()], sample_hz=None) as meter:
        with meter.window("short") as w:
            time.sleep(0.3)
    assert any(x.startswith("gpu:0: window of") and "coarse" in x for x in w.measurement.warnings)


# ---------------------------------------------------------------------- faults mid-window
def flaky_pread(monkeypatch, path: Path, fail: threading.Event, err: int = errno.EIO):
    """Make reads of ``path`` fail with ``err`` while ``fail`` is set (once if it clears)."""
    real_pread = os.pread
    target = os.path.realpath(path)

    def reading(fd, n, offset):
        if fail.is_set() and os.readlink(f"/proc/self/fd/{fd}") == target:
            raise OSError(err, os.strerror(err))
        return real_pread(fd, n, offset)

    monkeypatch.setattr(harness.sysfs.os, "pread", reading)


def test_transient_read_error_is_retried_and_the_sampler_goes_on(sysfs, monkeypatch):
    paths = make_rapl(sysfs, sockets=1, dram=False, psys=False, core=False)
    fail = threading.Event()
    flaky_pread(monkeypatch, paths["cpu:0"], fail)
    real_sleep = harness.sysfs.time.sleep

    def sleep_and_heal(s):  # the retry's pause: the bus is free again
        fail.clear()
        real_sleep(s)

    monkeypatch.setattr(harness.sysfs.time, "sleep", sleep_and_heal)
    with CounterWriter(paths["cpu:0"], 25.0):
        with Meter(sensors=[RaplSource()], sample_hz=50) as meter:
            with meter.window("w") as w:
                time.sleep(0.3)
                fail.set()  # one EIO on the next read
                time.sleep(0.5)
            t_fail = w.measurement.start_s + 0.3
            after = [r for r in meter.trace() if r["t_s"] > t_fail + 0.1]
    m = w.measurement
    assert not fail.is_set()  # the error was met, and retried
    assert after  # the sampler kept going
    assert m.method == MEASURED
    assert not [x for x in m.warnings if "lost" in x or "not read" in x]
    assert m.energy_j["cpu:0"] == pytest.approx(25.0 * m.duration_s, rel=0.02)


def test_domain_that_keeps_failing_is_dropped_and_the_rest_kept(sysfs, monkeypatch):
    paths = make_rapl(sysfs, sockets=1, dram=True, psys=False, core=False)
    fail = threading.Event()
    flaky_pread(monkeypatch, paths["dram"], fail)
    with CounterWriter(paths["cpu:0"], 25.0), CounterWriter(paths["dram"], 4.0):
        with Meter(sensors=[RaplSource()], sample_hz=50) as meter:
            with meter.window("w") as w:
                time.sleep(0.3)
                fail.set()
                time.sleep(0.5)
            with meter.window("after") as w2:
                time.sleep(0.2)
    m = w.measurement
    assert "dram" not in m.energy_j and m.total_domains == ["cpu:0"]
    assert any(x.startswith("dram: lost mid-window") for x in m.warnings)
    assert m.energy_j["cpu:0"] == pytest.approx(25.0 * m.duration_s, rel=0.02)
    assert any(x.startswith("dram: lost before the window") for x in w2.measurement.warnings)
    assert w2.measurement.energy_j["cpu:0"] > 0


def test_gpu_falling_off_the_bus_during_measure_keeps_the_rest_and_cmds_status(
    sysfs, monkeypatch, capsys
):
    make_acpi_power_meter(sysfs, watts=250.0)
    gpu = FakeGpu("A100", UUID_A, energy_mj=GpuEnergy(100.0))
    monkeypatch.setitem(sys.modules, "pynvml", fakenvml.module([gpu]))
    timer = threading.Timer(
        0.4, lambda: gpu.errors.update(nvmlDeviceGetTotalEnergyConsumption=fakenvml.GpuIsLost())
    )
    timer.start()
    try:
        rc, out = measure_here(capsys, ["--sample-hz", "20", "--", "sh", "-c", "sleep 1; exit 3"])
    finally:
        timer.cancel()
    assert rc == 3 and out["exit_status"] == 3
    assert "gpu:0" not in out["energy_j"]
    assert any(w.startswith("gpu:0: lost mid-window") for w in out["warnings"])
    assert out["total_j"] == pytest.approx(250.0 * out["duration_s"], rel=0.02)


def test_a_source_opens_again_after_it_was_closed(monkeypatch):
    counter = GpuEnergy(50.0)
    monkeypatch.setitem(
        sys.modules, "pynvml", fakenvml.module([FakeGpu("A100", UUID_A, energy_mj=counter)])
    )
    source = NvmlSource()
    for _ in range(2):  # a second Meter in one process sees the GPU
        with Meter(sensors=[source], sample_hz=None) as meter:
            assert meter.domains == ["gpu:0"]
            with meter.window("w") as w:
                time.sleep(0.35)
        assert w.measurement.energy_j["gpu:0"] > 0


# ---------------------------------------------------------------------- thermal
def test_thermal_state_per_window_and_drift_warning(monkeypatch):
    temps = iter([60, 72, 72, 72])  # read at the two edges
    gpu = FakeGpu(
        "A100",
        UUID_A,
        energy_mj=GpuEnergy(100.0),
        temp_c=lambda: next(temps),
        sm_clock_mhz=1410,
        power_limit_mw=400_000,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fakenvml.module([gpu]))
    with Meter(sensors=[NvmlSource()], sample_hz=None, max_temp_drift_c=5) as meter:
        with meter.window("w") as w:
            pass
    m = w.measurement
    assert (m.temp_start_c, m.temp_end_c) == (60.0, 72.0)
    assert m.clock_mhz == 1410.0 and m.power_limit_w == 400.0
    assert any(x.startswith("gpu:0: thermal drift of +12.0") for x in m.warnings)


# ---------------------------------------------------------------------- self-test
def test_check_on_a_machine_without_sensors_says_so_per_source(sysfs, monkeypatch, capsys):
    no_gpu(monkeypatch)
    assert main(["sensors", "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["rapl", "nvml", "hwmon", "jetson", "battery"]
    assert all("no usable domain" in line for line in lines)


def test_check_judges_counter_against_power_and_fails_a_bad_gpu(sysfs, monkeypatch, capsys):
    # gpu:0's counter agrees with its power; gpu:1's counts twice what its power says
    good = FakeGpu("A100", UUID_A, energy_mj=GpuEnergy(150.0), power_mw=150_000)
    bad = FakeGpu("A100", UUID_A.replace("a", "b"), energy_mj=GpuEnergy(300.0), power_mw=150_000)
    monkeypatch.setitem(sys.modules, "pynvml", fakenvml.module([good, bad]))
    rc = main(["sensors", "--check", "--json", "--check-s", "5.3"])
    rows = json.loads(capsys.readouterr().out)
    results = {r["domain"]: r for r in rows}
    assert rc == 1
    assert results["gpu:0"]["verdict"] == "ok"
    assert results["gpu:0"]["update_period_s"] == pytest.approx(0.1, rel=0.05)
    assert abs(results["gpu:0"]["counter_vs_power"]) < 0.02
    assert results["gpu:1"]["verdict"] == "fail"
    assert results["gpu:1"]["counter_vs_power"] == pytest.approx(1.0, rel=0.05)
    # the sources without domains: one entry each
    assert [r["source"] for r in rows if r["domain"] is None] == [
        "rapl",
        "hwmon",
        "jetson",
        "battery",
    ]


def test_check_of_rapl_reports_resolution_and_mirrors(sysfs, monkeypatch, capsys):
    no_gpu(monkeypatch)
    paths = make_rapl(sysfs, sockets=1, dies=2, dram=False, psys=False, core=False)
    with CounterWriter([paths["cpu:0/die-0"], paths["cpu:0/die-1"]], 25.0, period_s=0.01):
        rc = main(["sensors", "--check", "--json", "--check-s", "0.5"])
    results = [r for r in json.loads(capsys.readouterr().out) if r["domain"] == "cpu:0"]
    assert rc == 0
    (r,) = results
    assert r["verdict"] == "warn" and r["mirrors"] and "package-0-die-1" in r["mirrors"][0]
    assert r["update_period_s"] == pytest.approx(0.01, rel=0.5)
    assert r["resolution"] > 0


def test_an_update_missed_by_a_late_read_does_not_stretch_the_period():
    from harness.sensors.check import _Series

    s = _Series()
    # a counter updating every 0.1 s, read once late enough that two updates merged into one
    for t, value in [(0.0, 0), (0.05, 1), (0.15, 2), (0.25, 3), (0.45, 5), (0.55, 6), (0.65, 7)]:
        s.see(t, value)
    assert s.period_s() == pytest.approx(0.1)  # the mean of the intervals would say 0.12
