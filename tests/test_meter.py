"""The Meter's logic over fake sources: windows, integration, totals, idle, threads."""

from __future__ import annotations

import threading
import time

import pytest

from harness.errors import HarnessError
from harness.meter import Meter
from harness.records import derive, measurement_columns
from harness.sensors.base import (
    COUNTER,
    ESTIMATE,
    ESTIMATED,
    MEASURED,
    OK,
    POWER,
    DomainStatus,
    Source,
)


class ClockCounter(Source):
    """A counter domain that reads ``watts`` × elapsed time: a perfectly known truth."""

    name = "fakecounter"

    def __init__(self, watts: dict[str, float], method: str = MEASURED):
        self.watts = watts
        self.method = method
        self.t0 = time.perf_counter()
        self.reads = 0

    def probe(self):
        kind = ESTIMATE if self.method == ESTIMATED else COUNTER
        return [DomainStatus(self.name, d, kind, OK) for d in self.watts]

    def counter_domains(self):
        return list(self.watts)

    def read_energy_j(self):
        self.reads += 1
        dt = time.perf_counter() - self.t0
        return {d: w * dt for d, w in self.watts.items()}


class SquareWave(Source):
    """A power-only domain alternating between two levels every ``half_period_s``."""

    name = "fakepower"

    def __init__(self, domain="board", low=10.0, high=30.0, half_period_s=0.1):
        self.domain, self.low, self.high, self.half = domain, low, high, half_period_s
        self.t0 = time.perf_counter()

    def probe(self):
        return [DomainStatus(self.name, self.domain, POWER, OK)]

    def power_domains(self):
        return [self.domain]

    def level(self, t: float) -> float:
        return self.high if int(t / self.half) % 2 else self.low

    def read_power_w(self):
        return {self.domain: self.level(time.perf_counter() - self.t0)}

    def truth_j(self, t_a: float, t_b: float, step: float = 1e-4) -> float:
        n = int((t_b - t_a) / step)
        return sum(self.level(t_a + (i + 0.5) * step) for i in range(n)) * step


def test_counter_window_energy_and_duration():
    with Meter([ClockCounter({"cpu:0": 20.0, "dram": 5.0})], sample_hz=None) as meter:
        with meter.window("w") as w:
            time.sleep(0.3)
    m = w.measurement
    assert m.duration_s == pytest.approx(0.3, abs=0.05)
    assert m.energy_j["cpu:0"] == pytest.approx(20.0 * m.duration_s, rel=0.01)
    assert m.total_j == pytest.approx(25.0 * m.duration_s, rel=0.01)
    assert m.method == MEASURED
    assert m.sources == ["fakecounter"]
    assert m.avg_power_w == pytest.approx(25.0, rel=0.01)


def test_nested_and_overlapping_windows():
    with Meter([ClockCounter({"cpu:0": 10.0})], sample_hz=None) as meter:
        meter.begin("outer")
        time.sleep(0.1)
        meter.begin("inner")
        time.sleep(0.1)
        meter.begin("overlap")
        inner = meter.end("inner")
        time.sleep(0.1)
        outer = meter.end("outer")
        overlap = meter.end("overlap")
    assert outer.duration_s > inner.duration_s + 0.15
    assert overlap.duration_s == pytest.approx(0.1, abs=0.04)
    for m in (outer, inner, overlap):
        assert m.total_j == pytest.approx(10.0 * m.duration_s, rel=0.01)


def test_window_names_unique_while_open():
    with Meter([ClockCounter({"cpu:0": 1.0})], sample_hz=None) as meter:
        meter.begin("a")
        with pytest.raises(HarnessError, match="already open"):
            meter.begin("a")
        meter.end("a")
        meter.begin("a")  # reusable once closed
        meter.end("a")
        with pytest.raises(HarnessError, match="no open window"):
            meter.end("a")


def test_square_wave_power_integrated_within_2_percent():
    wave = SquareWave(low=10.0, high=30.0, half_period_s=0.1)
    with Meter([wave], sample_hz=50) as meter:
        with meter.window("w") as w:
            time.sleep(2.0)
    m = w.measurement
    truth = wave.truth_j(m.start_s, m.end_s)
    assert m.energy_j["board"] == pytest.approx(truth, rel=0.02)
    assert m.total_domains == ["board"]
    assert m.peak_power_w == pytest.approx(30.0, rel=0.05)


def test_power_domains_left_out_without_sampling():
    meter = Meter([SquareWave(), ClockCounter({"cpu:0": 5.0})], sample_hz=None)
    try:
        assert meter.domains == ["cpu:0"]
    finally:
        meter.close()


def test_whole_device_figure_not_summed_with_components():
    sources = [ClockCounter({"cpu:0": 20.0, "cpu:0:core": 15.0, "dram": 3.0, "system": 40.0})]
    with Meter(sources, sample_hz=None) as meter, meter.window("w") as w:
        time.sleep(0.1)
    m = w.measurement
    assert m.total_domains == ["system"]
    assert m.total_j == pytest.approx(m.energy_j["system"])


def test_components_summed_without_subzones():
    sources = [ClockCounter({"cpu:0": 20.0, "cpu:1": 20.0, "cpu:0:core": 15.0, "dram:0": 3.0})]
    with Meter(sources, sample_hz=None) as meter, meter.window("w") as w:
        time.sleep(0.1)
    m = w.measurement
    assert m.total_domains == ["cpu:0", "cpu:1", "dram:0"]
    assert m.total_j == pytest.approx(43.0 * m.duration_s, rel=0.01)


def test_estimate_never_mixed_with_measured_and_labels_estimated():
    measured = ClockCounter({"cpu:0": 20.0})
    estimate = ClockCounter({"cpu": 50.0, "ram": 6.0}, method=ESTIMATED)
    estimate.name = "fakeestimate"
    with Meter([measured, estimate], sample_hz=None) as meter, meter.window("w") as w:
        time.sleep(0.1)
    m = w.measurement
    # the measured CPU package wins over the CPU estimate; the RAM estimate fills the gap
    assert m.total_domains == ["cpu:0", "ram"]
    assert m.method == ESTIMATED  # any estimated part makes the total estimated
    only_estimate = ClockCounter({"cpu": 50.0}, method=ESTIMATED)
    with Meter([only_estimate], sample_hz=None) as meter, meter.window("w") as w2:
        time.sleep(0.05)
    assert w2.measurement.method == ESTIMATED


def test_idle_watts_and_dynamic_energy():
    with Meter([ClockCounter({"cpu:0": 12.0})], sample_hz=None) as meter:
        idle = meter.idle(0.2)
        with meter.window("w") as w:
            time.sleep(0.1)
    assert idle["cpu:0"] == pytest.approx(12.0, rel=0.01)
    assert idle["total"] == pytest.approx(12.0, rel=0.01)
    m = w.measurement
    # the fake draws its idle power and nothing more: dynamic energy is about zero
    assert m.dynamic_j(idle) == pytest.approx(0.0, abs=0.02 * m.total_j)
    cols = measurement_columns(m, {"cpu:0": 2.0})
    assert cols["energy_dynamic_j"] == pytest.approx(10.0 * m.duration_s, rel=0.02)
    assert cols["energy_cpu_j"] == pytest.approx(m.total_j)
    assert cols["energy_method"] == MEASURED


def test_trace_rows_and_peak_from_counters():
    with Meter([ClockCounter({"cpu:0": 8.0})], sample_hz=100) as meter:
        with meter.window("w") as w:
            time.sleep(0.3)
        rows = meter.trace()
    assert len(rows) >= 15
    assert {r["domain"] for r in rows} == {"cpu:0"}
    assert all(r["watts"] == pytest.approx(8.0, rel=0.05) for r in rows)
    assert w.measurement.peak_power_w == pytest.approx(8.0, rel=0.05)


class UnwrappingCounter(Source):
    """A stateful counter like the real sources: it keeps its last read and adds the step since.

    A read that another thread enters before the first has finished corrupts the state, and the
    guard records it: the meter must serialise reads from windows and its sampler.
    """

    name = "fakeunwrap"
    method = MEASURED

    def __init__(self, watts: float):
        self.watts = watts
        self.total_j = 0.0
        self.last_t = time.perf_counter()
        self.busy = False
        self.overlaps = 0

    def probe(self):
        return [DomainStatus(self.name, "cpu:0", COUNTER, OK)]

    def counter_domains(self):
        return ["cpu:0"]

    def read_energy_j(self):
        if self.busy:
            self.overlaps += 1
        self.busy = True
        last = self.last_t
        time.sleep(0)  # let another thread in, if the meter does not keep it out
        now = time.perf_counter()
        self.total_j += self.watts * (now - last)
        self.last_t = now
        self.busy = False
        return {"cpu:0": self.total_j}


def test_windows_from_many_threads():
    source = UnwrappingCounter(10.0)
    errors: list[BaseException] = []
    results = []
    with Meter([source], sample_hz=200) as meter:

        def worker(i: int) -> None:
            try:
                for j in range(50):
                    with meter.window(f"t{i}-{j}") as w:
                        time.sleep(0.001)
                    results.append(w.measurement)
            except BaseException as e:  # noqa: BLE001 - surface anything to the test thread
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert source.overlaps == 0
    assert len(results) == 200
    assert all(m.total_j > 0 for m in results)
    # each window's joules are 10 W × the time between its two edge reads; summed over all
    # windows, preemption between the meter's clock and the read averages out
    total_j = sum(m.total_j for m in results)
    assert total_j == pytest.approx(10.0 * sum(m.duration_s for m in results), rel=0.05)


def test_duplicate_domain_across_sources_is_an_error():
    a = ClockCounter({"cpu:0": 1.0})
    b = ClockCounter({"cpu:0": 1.0})
    b.name = "other"
    with pytest.raises(HarnessError, match="cpu:0"):
        Meter([a, b], sample_hz=None)


def test_bad_sample_rate():
    with pytest.raises(HarnessError, match="sample_hz"):
        Meter([ClockCounter({"cpu:0": 1.0})], sample_hz=-1)


def test_derive_per_token_and_carbon():
    rec = {"energy_j": 36.0, "tokens_out": 12, "queries": 3, "duration_s": 2.0}
    derive(rec, {"intensity_g_per_kwh": 100.0, "pue": 1.5})
    assert rec["energy_per_token_j"] == pytest.approx(3.0)
    assert rec["energy_per_query_j"] == pytest.approx(12.0)
    assert rec["wh_per_1000_queries"] == pytest.approx(12.0 * 1000 / 3600)
    assert rec["tokens_per_s"] == pytest.approx(6.0)
    assert rec["tokens_per_j"] == pytest.approx(12 / 36)
    assert rec["co2e_g"] == pytest.approx(36.0 / 3.6e6 * 1.5 * 100.0)
    assert rec["energy_per_token_j"] * rec["tokens_out"] == pytest.approx(rec["energy_j"])


def test_psys_system_yields_to_the_components_beside_a_measured_gpu():
    # RAPL psys may leave out a PCIe GPU powered from the supply: the components make the total
    sources = [ClockCounter({"cpu:0": 20.0, "system": 60.0, "gpu:0": 100.0})]
    with Meter(sources, sample_hz=None) as meter, meter.window("w") as w:
        time.sleep(0.05)
    m = w.measurement
    assert m.total_domains == ["cpu:0", "gpu:0"]
    assert m.total_j == pytest.approx(m.energy_j["cpu:0"] + m.energy_j["gpu:0"])
    assert m.total_j == pytest.approx(120.0 * m.duration_s, rel=0.01)
    cols = measurement_columns(m)
    assert cols["energy_j"] == pytest.approx(m.total_j)
    assert cols["energy_system_j"] == pytest.approx(m.energy_j["system"])
    assert cols["energy_gpu_j"] == pytest.approx(m.energy_j["gpu:0"])


def test_wall_meter_containing_the_gpus_is_the_total():
    source = ClockCounter({"cpu:0": 20.0, "system": 160.0, "gpu:0": 100.0})
    source.contains_gpus = frozenset({"system"})  # an ACPI meter at the machine's input
    with Meter([source], sample_hz=None) as meter, meter.window("w") as w:
        time.sleep(0.05)
    m = w.measurement
    assert m.total_domains == ["system"]
    assert m.total_j == pytest.approx(160.0 * m.duration_s, rel=0.01)
    assert m.method == MEASURED and m.warnings == []


def test_warnings_column_and_thermal_columns():
    source = ClockCounter({"cpu:0": 5.0})
    with Meter([source], sample_hz=None) as meter, meter.window("w") as w:
        time.sleep(0.01)
    m = w.measurement
    m.warnings = ["cpu:0: counter reset inside the window; energy after it only", "dram: lost"]
    m.temp_start_c, m.temp_end_c, m.clock_mhz, m.power_limit_w = 50.0, 55.0, 1800.0, 300.0
    cols = measurement_columns(m)
    from harness.report.markdown import split_warnings

    assert split_warnings(cols["warnings"]) == m.warnings
    assert (cols["temp_start_c"], cols["temp_end_c"]) == (50.0, 55.0)
    assert (cols["clock_mhz"], cols["power_limit_w"]) == (1800.0, 300.0)
    assert split_warnings("") == [] and split_warnings(float("nan")) == []


def test_board_wins_and_component_columns_still_filled():
    sources = [ClockCounter({"board": 9.0, "cpu:0": 3.0, "gpu:0": 4.0})]
    with Meter(sources, sample_hz=None) as meter, meter.window("w") as w:
        time.sleep(0.05)
    m = w.measurement
    assert m.total_domains == ["board"]
    cols = measurement_columns(m)
    assert cols["energy_j"] == pytest.approx(cols["energy_board_j"])
    assert cols["energy_cpu_j"] == pytest.approx(m.energy_j["cpu:0"])


def test_column_types_cover_the_schema():
    from harness.records import COLUMNS, TEXT_COLUMNS, WORK_FIELDS

    assert TEXT_COLUMNS <= set(COLUMNS)
    assert "metric" not in WORK_FIELDS and {"tokens_out", "queries", "accuracy"} <= WORK_FIELDS
