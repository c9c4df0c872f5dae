"""The estimate source: hand-computed energy from scripted CPU times, and labelling."""

from __future__ import annotations

import time
from collections import namedtuple
from types import SimpleNamespace

import psutil
import pytest

from harness.errors import HarnessError
from harness.meter import Meter
from harness.sensors import estimate
from harness.sensors.base import ESTIMATE, OK
from harness.sensors.estimate import EstimateSource, busy_and_total_s, lookup_tdp

# the fields psutil.cpu_times() has on Linux
Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def times(busy_s: float, idle_s: float) -> Times:
    # busy split over several busy fields; iowait counts as idle, guest is inside user already
    return Times(
        user=busy_s * 0.5, nice=0.0, system=busy_s * 0.3, idle=idle_s * 0.9,
        iowait=idle_s * 0.1, irq=busy_s * 0.1, softirq=busy_s * 0.05, steal=busy_s * 0.05,
        guest=busy_s * 0.2, guest_nice=0.0,
    )  # fmt: skip


def script(monkeypatch, clock_s: list[float], cpu: list[Times]) -> None:
    clock, cpus = iter(clock_s), iter(cpu)
    monkeypatch.setattr(estimate, "_clock", lambda: next(clock))
    monkeypatch.setattr(estimate, "_cpu_times", lambda: next(cpus))


def test_busy_and_total_follow_codecarbon():
    busy, total = busy_and_total_s(times(busy_s=3.0, idle_s=7.0))
    assert busy == pytest.approx(3.0) and total == pytest.approx(10.0)


def test_energy_matches_hand_computation(monkeypatch):
    # open at t=0; read at t=2 (50 % busy), t=3 (times have not moved: floor only), t=5 (100 % busy
    # across both stretches since t=2)
    script(
        monkeypatch,
        clock_s=[0.0, 2.0, 3.0, 5.0],
        cpu=[times(0, 0), times(2, 2), times(2, 2), times(8, 2)],
    )
    source = EstimateSource(classes=["cpu"], tdp_w=100.0, estimate_model="codecarbon")
    source.probe()
    source.open()
    e2 = source.read_energy_j()["cpu"]
    e3 = source.read_energy_j()["cpu"]
    e5 = source.read_energy_j()["cpu"]
    # E = TDP × (0.1 × wall + 0.9 × ∫u dt)
    assert e2 == pytest.approx(100 * (0.1 * 2 + 0.9 * 0.5 * 2))  # 110 J
    assert e3 == pytest.approx(100 * (0.1 * 3 + 0.9 * 0.5 * 2))  # 120 J: floor only so far
    assert e5 == pytest.approx(100 * (0.1 * 5 + 0.9 * (0.5 * 2 + 1.0 * 3)))  # 410 J
    assert e2 <= e3 <= e5


def test_ram_is_constant_power(monkeypatch):
    monkeypatch.setattr(
        estimate.psutil, "virtual_memory", lambda: SimpleNamespace(total=16 * 2**30)
    )
    script(monkeypatch, clock_s=[10.0, 14.0], cpu=[])
    source = EstimateSource(classes=["memory"], ram_w_per_gb=0.375)
    (row,) = source.probe()
    assert row.domain == "ram" and row.kind == ESTIMATE and row.status == OK
    assert "estimated" in row.reason and "16.0 GiB" in row.reason
    source.open()
    assert source.read_energy_j() == {"ram": pytest.approx(0.375 * 16 * 4)}


def test_rows_say_estimated_and_where_the_tdp_came_from():
    rows = EstimateSource(tdp_w=65).probe()
    assert [(r.domain, r.kind, r.status) for r in rows] == [
        ("cpu", ESTIMATE, OK),
        ("ram", ESTIMATE, OK),
    ]
    assert all("estimated" in r.reason for r in rows)
    assert "TDP 65 W given" in rows[0].reason
    auto = EstimateSource(classes=["cpu"], estimate_model="codecarbon").probe()[0].reason
    assert "codecarbon" in auto and "TDP" in auto


def test_tdp_table_follows_codecarbon_matching():
    assert lookup_tdp("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz") == (150.0, "Intel Xeon Gold 6248")
    assert lookup_tdp("AMD EPYC 7742 64-Core Processor") == (225.0, "AMD EPYC 7742")
    assert lookup_tdp("AMD EPYC") is None  # a tie between many EPYCs is no match


def test_default_tdp_without_a_match(monkeypatch):
    monkeypatch.setattr(estimate, "cpu_model_name", lambda: "Imaginary CPU 9000")
    monkeypatch.setattr(estimate.psutil, "cpu_count", lambda logical=True: 6)
    tdp_w, why = estimate.resolve_tdp()
    assert tdp_w == 24.0 and "no TDP match for 'Imaginary CPU 9000'" in why and "4 W/thread" in why


def test_bad_options_are_one_line_errors():
    with pytest.raises(HarnessError, match="classes"):
        EstimateSource(classes=["gpu"])
    with pytest.raises(HarnessError, match="tdp_w"):
        EstimateSource(tdp_w=-5)


def busy_loop(seconds: float) -> None:
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1


def test_busy_loop_costs_more_than_sleep():
    """One more busy CPU must show; the estimate is system-wide, so other load can hide it."""
    tdp_w, n_cpus = 100.0, psutil.cpu_count() or 1
    one_cpu = 1.0 / n_cpus

    def utilisation(m) -> float:  # inverts E = TDP × (0.1 + 0.9 u) × duration
        return (m.energy_j["cpu"] / (tdp_w * m.duration_s) - 0.1) / 0.9

    seen = []
    with Meter(
        sensors=[EstimateSource(classes=["cpu"], tdp_w=tdp_w, estimate_model="codecarbon")],
        sample_hz=None,
    ) as meter:
        for _ in range(3):  # other processes come and go: a few tries
            with meter.window("sleep") as sleep_w:
                time.sleep(0.4)
            with meter.window("busy") as busy_w:
                busy_loop(0.4)
            idle_u, busy_u = utilisation(sleep_w.measurement), utilisation(busy_w.measurement)
            assert idle_u >= -1e-9  # never below the idle floor
            seen.append((round(idle_u, 2), round(busy_u, 2)))
            headroom = 1.0 - idle_u
            if headroom >= 0.75 * one_cpu and busy_u > idle_u + 0.5 * min(one_cpu, headroom):
                return
    if all(1.0 - idle < 0.75 * one_cpu for idle, _ in seen):
        pytest.skip(f"other processes keep every CPU busy (utilisation idle/busy: {seen})")
    pytest.fail(f"a busy loop did not raise the estimated CPU utilisation: {seen}")


def test_busy_loop_costs_more_than_sleep_in_this_process_alone(monkeypatch):
    """The same through the whole meter, with CPU times that count only this test's own work.

    The thread's CPU time, not the process's: threads an earlier test left in this process (an
    OpenMP pool spinning down, a sampler) would otherwise count as this window's load.
    """
    n_cpus = psutil.cpu_count() or 1
    wall0, busy0 = time.perf_counter(), time.thread_time()

    def own_times() -> Times:  # both counted from the test's start, so busy never exceeds total
        busy = time.thread_time() - busy0
        total = (time.perf_counter() - wall0) * n_cpus
        return Times(busy, 0.0, 0.0, max(total - busy, 0.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    monkeypatch.setattr(estimate, "_cpu_times", own_times)
    with Meter(
        sensors=[EstimateSource(classes=["cpu"], tdp_w=100.0, estimate_model="codecarbon")],
        sample_hz=None,
    ) as meter:
        with meter.window("sleep") as sleep_w:
            time.sleep(0.4)
        with meter.window("busy") as busy_w:
            busy_loop(0.4)
    sleep_power_w, busy_power_w = (
        w.measurement.energy_j["cpu"] / w.measurement.duration_s for w in (sleep_w, busy_w)
    )
    assert sleep_power_w == pytest.approx(10.0, abs=0.9 * 100 * 0.1 / n_cpus)  # the idle floor
    # even sharing a CPU with other load, the loop gets a good part of one
    assert busy_power_w > sleep_power_w + 0.25 * 0.9 * 100.0 / n_cpus


def test_meter_labels_it_estimated_and_totals_cpu_plus_ram():
    with Meter(sensors=[EstimateSource(tdp_w=50.0)], sample_hz=None) as meter:
        with meter.window("w") as w:
            time.sleep(0.1)
    m = w.measurement
    assert m.method == "estimated"
    assert m.domain_methods == {"cpu": "estimated", "ram": "estimated"}
    assert set(m.energy_j) == {"cpu", "ram"}
    assert m.total_j == pytest.approx(m.energy_j["cpu"] + m.energy_j["ram"])
    assert m.energy_j["ram"] > 0 and m.energy_j["cpu"] >= 50.0 * 0.1 * m.duration_s * 0.999
