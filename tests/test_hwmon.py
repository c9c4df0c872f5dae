"""The hwmon source against fake trees: ACPI meter, energy counters, Jetson rails, batteries."""

from __future__ import annotations

import os
import threading
import time

import pytest
from fakesysfs import (
    make_acpi_power_meter,
    make_battery,
    make_hwmon_energy,
    make_hwmon_power,
    make_jetson_jp4,
    make_jetson_jp5,
    make_rapl,
    write_counter,
)

import harness.sysfs
from harness.meter import Meter
from harness.sensors.base import COUNTER, MEASURED, NO_PERMISSION, OK, POWER, UNAVAILABLE
from harness.sensors.battery import BatterySource
from harness.sensors.hwmon import HwmonSource
from harness.sensors.jetson import JetsonSource


def rows_by_domain(source) -> dict:
    return {r.domain: r for r in source.probe()}


def opened(source):
    source.probe()
    source.open()
    return source


# ---------------------------------------------------------------------- ACPI and generic hwmon
def test_acpi_power_meter_is_the_system_and_integrates_constant_power(sysfs):
    make_acpi_power_meter(sysfs, watts=150.0, interval_ms=1000)
    rows = rows_by_domain(HwmonSource())
    assert list(rows) == ["system"]
    assert rows["system"].kind == POWER and rows["system"].status == OK
    with Meter(sensors=[HwmonSource()], sample_hz=50) as meter:
        assert meter.min_window_s == pytest.approx(10.0)  # 10 × the 1 s averaging interval
        with meter.window("w") as w:
            time.sleep(0.3)
    m = w.measurement
    assert m.energy_j["system"] == pytest.approx(150.0 * m.duration_s, rel=1e-9)
    assert m.total_domains == ["system"] and m.total_j == m.energy_j["system"]
    assert m.method == MEASURED and m.sources == ["hwmon"]


def test_power_domains_are_left_out_without_sampling(sysfs):
    make_acpi_power_meter(sysfs)
    with Meter(sensors=[HwmonSource()], sample_hz=None) as meter:
        assert meter.domains == []


def test_hwmon_energy_counter_without_rapl_gives_the_cpu_package(sysfs):
    paths = make_hwmon_energy(sysfs, "amd_energy", {"Esocket0": 5_000_000, "Ecore000": 1_000})
    rows = rows_by_domain(HwmonSource())
    assert {d: r.kind for d, r in rows.items()} == {
        "cpu:0": COUNTER,
        "hwmon:amd_energy:Ecore000": COUNTER,
    }
    with Meter(sensors=[HwmonSource()], sample_hz=None) as meter:
        meter.begin("w")
        write_counter(paths["Esocket0"], 12_000_000)
        write_counter(paths["Ecore000"], 501_000)
        m = meter.end("w")
    assert m.energy_j == pytest.approx({"cpu:0": 7.0, "hwmon:amd_energy:Ecore000": 0.5})
    assert m.total_domains == ["cpu:0"]


def test_hwmon_energy_counter_beside_rapl_is_a_part(sysfs):
    make_rapl(sysfs, sockets=1, dram=False, psys=False)
    make_hwmon_energy(sysfs, "amd_energy", {"Esocket0": 5_000_000})
    assert list(rows_by_domain(HwmonSource())) == ["hwmon:amd_energy:Esocket0"]


def test_energy_counter_that_resets_counts_what_follows_and_says_so(sysfs):
    paths = make_hwmon_energy(sysfs, "some_meter", {"pkg": 9_000_000})
    source = opened(HwmonSource())
    write_counter(paths["pkg"], 10_000_000)
    assert source.read_energy_j() == {"hwmon:some_meter:pkg": 1.0}
    write_counter(paths["pkg"], 2_000_000)  # reset (driver reload): 2 J counted since
    assert source.read_energy_j() == {"hwmon:some_meter:pkg": 3.0}
    assert source.events == [
        "hwmon:some_meter:pkg: counter reset inside the window; energy after it only"
    ]
    write_counter(paths["pkg"], 2_500_000)
    assert source.read_energy_j() == {"hwmon:some_meter:pkg": 3.5}


def test_generic_power_is_a_part_named_by_label_or_channel(sysfs):
    make_hwmon_power(sysfs, "fam15h_power", watts=42.0)
    make_hwmon_power(sysfs, "psu", watts=7.5, label="PSU input")
    source = opened(HwmonSource())
    assert source.read_power_w() == pytest.approx(
        {"hwmon:fam15h_power:power1": 42.0, "hwmon:psu:PSU_input": 7.5}
    )


def test_amdgpu_power_is_left_to_gpu_sources(sysfs):
    make_hwmon_power(sysfs, "amdgpu", watts=120.0)
    rows = HwmonSource().probe()
    assert (
        len(rows) == 1 and rows[0].status == UNAVAILABLE and "no energy or power" in rows[0].reason
    )


def test_garbage_power_file_is_unavailable_naming_it(sysfs):
    path = make_acpi_power_meter(sysfs)
    path.write_text("N/A\n")
    row = rows_by_domain(HwmonSource())["system"]
    assert row.status == UNAVAILABLE and str(path) in row.reason and "N/A" in row.reason


def test_permission_denied_names_the_file(sysfs, monkeypatch):
    path = make_acpi_power_meter(sysfs)
    real_open = os.open

    def deny(p, *args, **kwargs):
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(harness.sysfs.os, "open", deny)
    row = rows_by_domain(HwmonSource())["system"]
    assert row.status == NO_PERMISSION and str(path) in row.reason


def test_probe_never_raises(sysfs, monkeypatch):
    def broken():
        raise OSError("I/O error")

    monkeypatch.setattr("harness.sensors.hwmon._scan", broken)
    rows = HwmonSource().probe()
    assert [r.status for r in rows] == [UNAVAILABLE] and "I/O error" in rows[0].reason


# ---------------------------------------------------------------------- Jetson
def test_jetson_jp5_board_and_rails_listed_once(sysfs):
    make_jetson_jp5(
        sysfs, {"VDD_IN": (5000, 1200), "VDD_CPU_GPU_CV": (4900, 400), "VDD_SOC": (5100, 300)}
    )
    assert (sysfs / "class" / "hwmon" / "hwmon0" / "name").read_text() == "ina3221\n"
    rows = rows_by_domain(JetsonSource())
    assert list(rows) == ["board", "rail:vdd_cpu_gpu_cv", "rail:vdd_soc"]
    source = opened(JetsonSource())
    assert source.read_power_w() == pytest.approx(
        {"board": 6.0, "rail:vdd_cpu_gpu_cv": 1.96, "rail:vdd_soc": 1.53}
    )
    assert source.update_period_s == pytest.approx(0.01)
    source.close()
    with Meter(sensors=[JetsonSource()], sample_hz=50) as meter:
        with meter.window("w") as w:
            time.sleep(0.1)
    m = w.measurement
    assert m.total_domains == ["board"]
    assert m.total_j == pytest.approx(6.0 * m.duration_s, rel=1e-9)


def test_jetson_jp4_board_and_rails(sysfs):
    make_jetson_jp4(sysfs, {"POM_5V_IN": 4200, "POM_5V_GPU": 900, "POM_5V_CPU": 1100})
    source = opened(JetsonSource())
    assert source.read_power_w() == pytest.approx(
        {"board": 4.2, "rail:pom_5v_gpu": 0.9, "rail:pom_5v_cpu": 1.1}
    )


def test_jetson_rail_changes_are_read_live(sysfs):
    paths = make_jetson_jp5(sysfs, {"VDD_IN": (5000, 1000)})
    source = opened(JetsonSource())
    write_counter(paths["VDD_IN"][1], 3000)
    assert source.read_power_w() == pytest.approx({"board": 15.0})


# ---------------------------------------------------------------------- battery
def test_discharging_battery_is_the_board(sysfs):
    make_battery(sysfs, "BAT0", "Discharging", voltage_uv=12_000_000, current_ua=1_500_000)
    rows = rows_by_domain(BatterySource())
    assert rows["board"].status == OK and rows["board"].kind == POWER
    source = opened(BatterySource())
    assert source.update_period_s == pytest.approx(1.0)
    assert source.read_power_w() == pytest.approx({"board": 18.0})


def test_battery_power_now_and_negative_current(sysfs):
    make_battery(sysfs, "BAT0", "Discharging", power_uw=15_000_000)
    make_battery(sysfs, "BAT1", "Discharging", voltage_uv=11_000_000, current_ua=-1_000_000)
    assert opened(BatterySource()).read_power_w() == pytest.approx({"board": 26.0})


def test_charging_battery_is_unavailable_with_reason(sysfs):
    make_battery(sysfs, "BAT0", "Charging")
    row = rows_by_domain(BatterySource())["board"]
    assert row.status == UNAVAILABLE and "Charging" in row.reason and "mains" in row.reason
    with Meter(sensors=[BatterySource()], sample_hz=10) as meter:
        assert meter.domains == []


def test_battery_that_starts_charging_fails_its_reads_with_the_reason(sysfs):
    bat = make_battery(sysfs, "BAT0", "Discharging")
    source = opened(BatterySource())
    (bat / "status").write_text("Charging\n")
    assert source.read_power_w() == {}
    assert "stopped discharging" in source.read_errors["board"]


def test_jetson_keeps_the_board_over_a_battery(sysfs):
    make_jetson_jp5(sysfs, {"VDD_IN": (5000, 1000)})
    make_battery(sysfs, "BAT0", "Discharging")
    assert opened(JetsonSource()).read_power_w() == pytest.approx({"board": 5.0})
    assert opened(BatterySource()).read_power_w() == pytest.approx({"battery": 18.0})
    assert list(rows_by_domain(HwmonSource())) == ["hwmon"]  # the INA3221 is the jetson's


# ---------------------------------------------------------------------- a live power signal
def test_square_wave_power_is_integrated_within_2_percent(sysfs):
    """10 W / 30 W alternating every 100 ms, sampled at 50 Hz over about 2 s."""
    path = make_hwmon_power(sysfs, "wave", watts=10.0)
    log: list[tuple[float, float]] = [(time.perf_counter(), 10.0)]
    stop = threading.Event()

    def drive() -> None:
        next_t, watts = time.perf_counter(), 10.0
        while True:
            next_t += 0.1
            if stop.wait(max(0.0, next_t - time.perf_counter())):
                return
            watts = 40.0 - watts
            write_counter(path, watts * 1e6)
            log.append((time.perf_counter(), watts))

    writer = threading.Thread(target=drive, daemon=True)
    writer.start()
    try:
        with Meter(sensors=[HwmonSource()], sample_hz=50) as meter:
            t0 = time.perf_counter()
            with meter.window("wave") as w:
                time.sleep(2.0)
            t1 = time.perf_counter()
    finally:
        stop.set()
        writer.join()
    truth_j = _integrate_steps(log, t0, t1)
    assert len(log) > 15
    assert w.measurement.energy_j["hwmon:wave:power1"] == pytest.approx(truth_j, rel=0.02)


def _integrate_steps(log: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Exact joules of a piecewise-constant power (each value holds until the next) over [t0, t1]."""
    joules = 0.0
    for (t_a, watts), (t_b, _) in zip(log, [*log[1:], (float("inf"), 0.0)], strict=True):
        overlap_s = min(t_b, t1) - max(t_a, t0)
        if overlap_s > 0:
            joules += watts * overlap_s
    return joules


# ---------------------------------------------------------------------- stated update periods
def test_stated_periods_are_read_after_the_meter_starts_and_its_first_window_uses_them(
    sysfs, monkeypatch
):
    """Reading a stated period can run firmware code (the ACPI meter's _GAI): the meter starts
    without it, and its first window's warnings still use the period the meter states."""
    from harness.sensors import sysfs_power

    make_acpi_power_meter(sysfs, watts=100.0, interval_ms=5000)
    release, asked = threading.Event(), threading.Event()
    read = sysfs_power.stated_period_s

    def slow(paths, default_s):
        asked.set()
        release.wait(10)
        return read(paths, default_s)

    monkeypatch.setattr(sysfs_power, "stated_period_s", slow)
    meter = Meter(sensors=[HwmonSource()], sample_hz=50)  # returns while the read is held
    try:
        assert asked.wait(5) and not release.is_set()
        with meter.window("w") as w:
            time.sleep(0.1)
            release.set()
        (warning,) = [x for x in w.measurement.warnings if "update periods" in x]
        assert warning.startswith("system: window of") and "(5000 ms)" in warning
        assert meter.update_periods_s["system"] == pytest.approx(5.0)
    finally:
        release.set()
        meter.close()
