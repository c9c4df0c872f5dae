"""The NVML source against a fake pynvml, and GPU synchronisation at window edges."""

from __future__ import annotations

import sys
import time
import types

import fakenvml
import pytest
from fakenvml import FakeGpu

from harness.meter import Meter
from harness.sensors.base import COUNTER, NO_PERMISSION, OK, POWER, UNAVAILABLE
from harness.sensors.nvml import NO_DRIVER, NvmlSource

UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444"


@pytest.fixture(autouse=True)
def _no_cuda_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


def install(monkeypatch, gpus, init_error=None):
    fake = fakenvml.module(gpus, init_error=init_error)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


class Counter:
    """A settable energy counter in mJ."""

    def __init__(self, mj: int = 0):
        self.mj = mj

    def __call__(self) -> int:
        return self.mj


# ---------------------------------------------------------------------- Volta: energy counter
def test_volta_counter_window(monkeypatch):
    counter = Counter(123_456_789)  # the driver's counter does not start at zero
    fake = install(monkeypatch, [FakeGpu("Tesla V100-SXM2-16GB", UUID_A, energy_mj=counter)])
    source = NvmlSource()
    rows = source.probe()
    assert [(r.domain, r.kind, r.status) for r in rows] == [("gpu:0", COUNTER, OK)]
    assert "physical GPU 0" in rows[0].reason and "Tesla V100" in rows[0].reason
    with Meter(sensors=[source], sample_hz=None) as meter:
        meter.begin("w")
        counter.mj += 4_250
        m = meter.end("w")
    assert m.energy_j == {"gpu:0": pytest.approx(4.25)}
    assert m.total_j == pytest.approx(4.25)
    assert m.method == "measured" and m.sources == ["nvml"]
    assert fake.calls["init"] == 1 and fake.calls["shutdown"] == 1
    assert source.update_period_s == pytest.approx(0.1)


def test_counter_reset_counts_what_follows_and_says_so(monkeypatch):
    counter = Counter(10_000)
    install(monkeypatch, [FakeGpu("A100", UUID_A, energy_mj=counter)])
    source = NvmlSource()
    source.probe()
    source.open()
    counter.mj = 12_000
    assert source.read_energy_j() == {"gpu:0": pytest.approx(2.0)}
    counter.mj = 500  # driver reloaded: 0.5 J since
    assert source.read_energy_j() == {"gpu:0": pytest.approx(2.5)}
    assert source.events == ["gpu:0: counter reset inside the window; energy after it only"]
    counter.mj = 1_500
    assert source.read_energy_j() == {"gpu:0": pytest.approx(3.5)}
    source.close()


def test_probe_is_cached_and_init_once(monkeypatch):
    fake = install(monkeypatch, [FakeGpu("A100", UUID_A, energy_mj=0)])
    source = NvmlSource()
    assert source.probe() == source.probe()
    source.close()
    source.close()
    assert fake.calls["init"] == 1 and fake.calls["shutdown"] == 1


# ---------------------------------------------------------------------- Pascal: sampled power
def test_pascal_uses_instant_power_and_meter_integrates_a_step(monkeypatch):
    t_step = time.perf_counter() + 0.25

    def power_mw() -> int:
        return 100_000 if time.perf_counter() < t_step else 250_000

    install(monkeypatch, [FakeGpu("Tesla P100-PCIE-16GB", UUID_A, power_mw=power_mw)])
    source = NvmlSource()
    rows = source.probe()
    assert [(r.domain, r.kind, r.status) for r in rows] == [("gpu:0", POWER, OK)]
    assert "NVML_FI_DEV_POWER_INSTANT" in rows[0].reason
    with Meter(sensors=[source], sample_hz=50) as meter:
        meter.begin("w")
        t0 = time.perf_counter()
        time.sleep(0.6)
        m = meter.end("w")
    expected_j = 100.0 * (t_step - t0) + 250.0 * (t0 + m.duration_s - t_step)
    # trapezoid over 20 ms samples smears the step by at most half a step interval
    assert m.energy_j["gpu:0"] == pytest.approx(expected_j, abs=0.5 * 150 * 0.04 + 1.0)
    assert m.energy_j["gpu:0"] > 100.0 * m.duration_s * 1.2  # the step is seen
    assert m.method == "measured"


def test_pascal_constant_power(monkeypatch):
    install(monkeypatch, [FakeGpu("Tesla P40", UUID_A, power_mw=75_000)])
    with Meter(sensors=[NvmlSource()], sample_hz=50) as meter:
        with meter.window("w") as w:
            time.sleep(0.3)
    m = w.measurement
    assert m.energy_j["gpu:0"] == pytest.approx(75.0 * m.duration_s, rel=1e-6)


def test_power_usage_fallback_says_it_is_an_average(monkeypatch):
    fake = install(monkeypatch, [FakeGpu("Tesla K80", UUID_A, power_mw=60_000, instant=False)])
    source = NvmlSource()
    (row,) = source.probe()
    assert row.kind == POWER and row.status == OK
    assert "1-s average" in row.reason and "nvmlDeviceGetPowerUsage" in row.reason
    assert source.update_period_s == pytest.approx(1.0)
    source.open()
    assert source.read_power_w() == {"gpu:0": pytest.approx(60.0)}
    assert fake.calls["power"] >= 2
    source.close()


def test_no_energy_and_no_power_is_unavailable(monkeypatch):
    install(monkeypatch, [FakeGpu("GeForce GT 710", UUID_A, power_mw=None)])
    (row,) = NvmlSource().probe()
    assert row.status == UNAVAILABLE and "neither energy nor power" in row.reason


def test_sampler_meter_without_sample_hz_leaves_power_domains_out(monkeypatch):
    install(monkeypatch, [FakeGpu("Tesla P100", UUID_A, power_mw=50_000)])
    with Meter(sensors=[NvmlSource()], sample_hz=None) as meter:
        assert meter.domains == []


# ---------------------------------------------------------------------- errors
def test_library_not_found(monkeypatch):
    install(monkeypatch, [], init_error=fakenvml.LibraryNotFound())
    source = NvmlSource()
    rows = source.probe()
    assert len(rows) == 1
    assert rows[0].status == UNAVAILABLE and rows[0].reason == NO_DRIVER
    source.close()


def test_library_not_found_from_the_base_class_with_a_code(monkeypatch):
    # pynvml raises NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND), which maps to the subclass
    install(monkeypatch, [], init_error=fakenvml.NVMLError(12))
    (row,) = NvmlSource().probe()
    assert row.reason == NO_DRIVER


def test_driver_not_loaded(monkeypatch):
    install(monkeypatch, [], init_error=fakenvml.DriverNotLoaded())
    (row,) = NvmlSource().probe()
    assert row.status == UNAVAILABLE and "driver not loaded" in row.reason


def test_pynvml_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    (row,) = NvmlSource().probe()
    assert row.status == UNAVAILABLE and "nvidia-ml-py" in row.reason


def test_no_gpus(monkeypatch):
    install(monkeypatch, [])
    (row,) = NvmlSource().probe()
    assert row.status == UNAVAILABLE and row.domain == "gpu" and "no NVIDIA GPU" in row.reason


def test_permission_error_is_no_permission(monkeypatch):
    gpu = FakeGpu(
        "A100",
        UUID_A,
        energy_mj=0,
        errors={"nvmlDeviceGetTotalEnergyConsumption": fakenvml.NoPermission()},
    )
    install(monkeypatch, [gpu])
    (row,) = NvmlSource().probe()
    assert row.status == NO_PERMISSION and "permission" in row.reason


def test_unexpected_errors_never_escape_probe(monkeypatch):
    fake = install(monkeypatch, [FakeGpu("A100", UUID_A, energy_mj=0)])

    def broken():
        raise RuntimeError("ctypes exploded")

    fake.nvmlDeviceGetCount = broken
    source = NvmlSource()
    (row,) = source.probe()
    assert row.status == UNAVAILABLE and "ctypes exploded" in row.reason
    source.close()
    assert fake.calls["shutdown"] == 1


def test_lost_gpu_is_reported_and_others_still_work(monkeypatch):
    lost = FakeGpu("A100", UUID_A, energy_mj=0, errors={"nvmlDeviceGetUUID": fakenvml.GpuIsLost()})
    install(monkeypatch, [lost, FakeGpu("A100", UUID_B, energy_mj=0)])
    rows = NvmlSource().probe()
    assert [(r.domain, r.status) for r in rows] == [("gpu:0", UNAVAILABLE), ("gpu:1", OK)]
    assert "lost" in rows[0].reason


def test_read_failure_mid_run_leaves_the_domain_out_and_says_why(monkeypatch):
    gpu = FakeGpu("A100", UUID_A, energy_mj=0)
    install(monkeypatch, [gpu])
    source = NvmlSource()
    source.probe()
    source.open()
    gpu.errors["nvmlDeviceGetTotalEnergyConsumption"] = fakenvml.GpuIsLost()
    assert source.read_energy_j() == {}
    assert "physical GPU 0" in source.read_errors["gpu:0"] and "gpu:0" in source.gone
    source.close()


# ---------------------------------------------------------------------- MIG
def test_mig_enabled_gpu_is_unavailable(monkeypatch):
    install(
        monkeypatch,
        [
            FakeGpu("A100-SXM4-40GB", UUID_A, energy_mj=0, mig=(1, 1)),
            FakeGpu("A100-SXM4-40GB", UUID_B, energy_mj=0, mig=(0, 0)),
        ],
    )
    rows = NvmlSource().probe()
    assert [(r.domain, r.status) for r in rows] == [("gpu:0", UNAVAILABLE), ("gpu:1", OK)]
    assert "MIG" in rows[0].reason and "other tenants" in rows[0].reason


def test_mig_instance_in_cuda_visible_devices(monkeypatch):
    mig = "MIG-12345678-aaaa-bbbb-cccc-1234567890ab"
    install(monkeypatch, [FakeGpu("A100", UUID_A, energy_mj=0, mig=(1, 1), mig_uuids=[mig])])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mig)
    (row,) = NvmlSource().probe()
    assert row.domain == "gpu:0" and row.status == UNAVAILABLE
    assert "MIG" in row.reason and "physical GPU 0" in row.reason


def test_legacy_mig_id(monkeypatch):
    install(monkeypatch, [FakeGpu("A100", UUID_A, energy_mj=0, mig=(1, 1))])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"MIG-{UUID_A}/1/0")
    (row,) = NvmlSource().probe()
    assert row.status == UNAVAILABLE and "MIG" in row.reason


# ---------------------------------------------------------------------- CUDA_VISIBLE_DEVICES
def two_gpus(monkeypatch):
    a, b = Counter(0), Counter(0)
    fake = install(
        monkeypatch,
        [FakeGpu("A100", UUID_A, energy_mj=a), FakeGpu("A100", UUID_B, energy_mj=b)],
    )
    return fake, a, b


def test_visible_index_maps_to_physical(monkeypatch):
    _, a, b = two_gpus(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    source = NvmlSource()
    (row,) = source.probe()
    assert row.domain == "gpu:0" and row.status == OK and "physical GPU 1" in row.reason
    assert source.devices["gpu:0"]["nvml_index"] == 1
    assert source.devices["gpu:0"]["uuid"] == UUID_B
    source.open()
    b.mj += 3_000
    a.mj += 9_000
    assert source.read_energy_j() == {"gpu:0": pytest.approx(3.0)}
    source.close()


def test_visible_reordered(monkeypatch):
    two_gpus(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    source = NvmlSource()
    source.probe()
    assert source.devices["gpu:0"]["nvml_index"] == 1
    assert source.devices["gpu:1"]["nvml_index"] == 0


def test_visible_by_uuid_and_prefix(monkeypatch):
    two_gpus(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", UUID_B)
    source = NvmlSource()
    source.probe()
    assert source.devices["gpu:0"]["nvml_index"] == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa")  # a unique prefix is enough for CUDA
    source = NvmlSource()
    source.probe()
    assert source.devices["gpu:0"]["nvml_index"] == 0


def test_visible_invalid_entry(monkeypatch):
    two_gpus(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    (row,) = NvmlSource().probe()
    assert row.status == UNAVAILABLE and row.domain == "gpu"
    assert "'7' names no GPU" in row.reason and "CUDA_VISIBLE_DEVICES" in row.reason


def test_visible_invalid_entry_hides_the_rest(monkeypatch):
    two_gpus(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,GPU-zzzz,0")
    rows = NvmlSource().probe()
    assert [r.domain for r in rows] == ["gpu:0"]
    assert "'GPU-zzzz' names no GPU" in rows[0].reason


def test_visible_empty_hides_all(monkeypatch):
    two_gpus(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    (row,) = NvmlSource().probe()
    assert row.status == UNAVAILABLE and "empty" in row.reason


def test_visible_duplicate_is_invalid(monkeypatch):
    two_gpus(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,0")
    rows = NvmlSource().probe()
    assert [r.domain for r in rows] == ["gpu:0"] and "twice" in rows[0].reason


# ---------------------------------------------------------------------- GPU sync at window edges
def fake_torch(initialised: bool, devices: int = 2):
    calls: list[int] = []
    cuda = types.SimpleNamespace(
        is_initialized=lambda: initialised,
        device_count=lambda: devices,
        synchronize=lambda i: calls.append(i),
    )
    return types.SimpleNamespace(cuda=cuda), calls


def counting_source():
    from harness.sensors.estimate import EstimateSource

    return EstimateSource(tdp_w=10.0)


def test_window_edges_synchronise_every_gpu(monkeypatch):
    torch, calls = fake_torch(initialised=True)
    monkeypatch.setitem(sys.modules, "torch", torch)
    with Meter(sensors=[counting_source()], sample_hz=None) as meter:
        meter.begin("w")
        assert calls == [0, 1]
        meter.end("w")
        assert calls == [0, 1, 0, 1]


def test_no_sync_when_cuda_not_initialised_or_disabled(monkeypatch):
    torch, calls = fake_torch(initialised=False)
    monkeypatch.setitem(sys.modules, "torch", torch)
    with Meter(sensors=[counting_source()], sample_hz=None) as meter:
        with meter.window("w"):
            pass
    assert calls == []
    torch, calls = fake_torch(initialised=True)
    monkeypatch.setitem(sys.modules, "torch", torch)
    with Meter(sensors=[counting_source()], sample_hz=None, sync_gpu=False) as meter:
        with meter.window("w"):
            pass
    assert calls == []


# ------------------------------------------------------------- counter against sampled power
def test_counter_against_its_sampled_power_per_window(monkeypatch):
    """A counter beside its own instant power (NVML total energy): each window judges one against
    the other with the function harness sensors --check uses; the worst is the row's column."""
    from harness.records import measurement_columns

    install(
        monkeypatch,
        [
            fakenvml.metered_gpu("A100", UUID_A),
            fakenvml.metered_gpu("A100", UUID_B, counter_gain=1.1),
        ],
    )
    import harness.meter

    monkeypatch.setattr(harness.meter, "PRUNE_AT", 20)  # samples pruned between windows
    with Meter(sensors=[NvmlSource()], sample_hz=100) as meter:
        with meter.window("first"):
            time.sleep(0.4)
        pruned = len(meter._cvp_power["gpu:0"])
        with meter.window("long") as w:
            time.sleep(2.0)
        with meter.window("short") as short:
            time.sleep(0.4)
    assert pruned <= 3  # the samples before the first window's end are dropped but the last
    m = w.measurement
    assert set(m.counter_vs_power) == {"gpu:0", "gpu:1"}
    assert abs(m.counter_vs_power["gpu:0"]) < 0.02
    assert m.counter_vs_power["gpu:1"] == pytest.approx(0.1, abs=0.02)
    assert measurement_columns(m)["counter_vs_power"] == m.counter_vs_power["gpu:1"]
    assert m.to_dict()["counter_vs_power"] == m.counter_vs_power
    # under 1 s (and 10 update periods): too short to judge, not a number
    assert short.measurement.counter_vs_power == {"gpu:0": None, "gpu:1": None}
    assert measurement_columns(short.measurement)["counter_vs_power"] is None


def test_counter_against_power_only_where_the_sampler_runs(monkeypatch):
    install(monkeypatch, [fakenvml.metered_gpu("A100", UUID_A, counter_gain=1.1)])
    with Meter(sensors=[NvmlSource()], sample_hz=None) as meter:
        with meter.window("w") as w:
            time.sleep(1.2)
    assert w.measurement.counter_vs_power == {}
    assert meter._cvp_sources == [] and meter._cvp_power == {}
