"""Thermal state per window (hwmon package temperature, cpufreq) and the suite's cooldown."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from fakesysfs import make_coretemp, make_cpufreq, make_rapl, write_counter
from runhelpers import command, harness, last_line, write_suite

from harness.errors import HarnessError
from harness.meter import Meter
from harness.sensors.rapl import RaplSource
from harness.suite import load_suite


def test_cpu_package_temperature_and_frequency_at_window_edges(sysfs):
    make_rapl(sysfs, sockets=2, dram=False, psys=False, core=False)
    temps = make_coretemp(sysfs, {0: 45.0, 1: 47.0})
    freqs = make_cpufreq(sysfs, [2_000_000, 3_000_000])
    with Meter(sensors=[RaplSource()], sample_hz=None, max_temp_drift_c=10) as meter:
        meter.begin("w")
        write_counter(temps[1], 61_000)
        write_counter(freqs[0], 2_400_000)
        m = meter.end("w")
    assert (m.temp_start_c, m.temp_end_c) == (47.0, 61.0)
    assert m.clock_mhz == pytest.approx(2700.0)
    assert m.power_limit_w is None  # nothing here reports one
    assert m.thermal["cpu:1"] == {"start": {"temp_c": 47.0}, "end": {"temp_c": 61.0}}
    assert any(w.startswith("cpu:1: thermal drift of +14.0") for w in m.warnings)
    assert not any(w.startswith("cpu:0: thermal") for w in m.warnings)


def test_no_thermal_files_no_thermal_state(sysfs):
    make_rapl(sysfs, sockets=1, dram=False, psys=False, core=False)
    with Meter(sensors=[RaplSource()], sample_hz=None) as meter, meter.window("w") as w:
        pass
    assert w.measurement.temp_start_c is None and w.measurement.thermal == {}


def test_bad_drift_limit_is_refused(sysfs):
    with pytest.raises(HarnessError, match="max_temp_drift_c"):
        Meter(sensors=[RaplSource()], sample_hz=None, max_temp_drift_c=0)


def test_suite_thermal_options_are_validated(tmp_path):
    ok = write_suite(tmp_path, [command("c", "pass")], name="ok", cooldown_s=1, max_temp_drift_c=3)
    assert load_suite(ok).measurement.cooldown_s == 1
    bad = write_suite(tmp_path, [command("c", "pass")], name="bad", cooldown_s=-1)
    with pytest.raises(HarnessError, match="cooldown_s"):
        load_suite(bad)


def test_cooldown_between_repetitions_and_warnings_in_results(tmp_path):
    suite = write_suite(
        tmp_path,
        [command("nap", "import time; time.sleep(0.05)")],
        min_repeats=2,
        max_repeats=2,
        cooldown_s=0.6,
    )
    t0 = time.monotonic()
    proc = harness(["run", str(suite), "--out", str(tmp_path / "out")], tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(last_line(proc.stdout))
    (result_path,) = run_dir.glob("cases/*/result.json")
    result = json.loads(result_path.read_text())
    windows = result["windows"]
    assert len(windows) == 2
    assert windows[1]["start_s"] - windows[0]["end_s"] >= 0.6
    assert time.monotonic() - t0 >= 0.6
    assert isinstance(result["warnings"], list) and "warnings" in windows[0]
    with (run_dir / "measurements.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert "warnings" in rows[0] and {"temp_start_c", "clock_mhz"} <= set(rows[0])
