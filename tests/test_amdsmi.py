"""AMD GPUs through the device layer, against a fake amdsmi at the import boundary."""

from __future__ import annotations

import json
import sys
import time

import fakeamdsmi
import pytest
from fakeamdsmi import WRAP, FakeAmdGpu

from harness.cli import main
from harness.knobs import KNOBS_FILE, ProfileKnobs
from harness.meter import Meter
from harness.sensors.amdsmi import AmdsmiSource
from harness.sensors.base import COUNTER, NO_PERMISSION, OK, POWER, UNAVAILABLE

UUID_A = "aaaa1111-0000-1000-80b1-2f6b9a0c0001"
UUID_B = "bbbb2222-0000-1000-80b1-2f6b9a0c0002"


@pytest.fixture(autouse=True)
def _amd_only(sysfs, monkeypatch):
    """An empty sysfs, no NVIDIA library, no visibility variables."""
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.delenv("HIP_VISIBLE_DEVICES", raising=False)


def install(monkeypatch, gpus, init_error=None):
    fake = fakeamdsmi.module(gpus, init_error=init_error)
    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    return fake


class Drawing:
    """The true energy (µJ) of a GPU drawing ``watts`` since it was made."""

    def __init__(self, watts: float):
        self.watts, self.t0 = watts, time.perf_counter()

    def __call__(self) -> float:
        return self.watts * (time.perf_counter() - self.t0) * 1e6


class Settable:
    def __init__(self, uj: float = 0.0):
        self.uj = uj

    def __call__(self) -> float:
        return self.uj


# ---------------------------------------------------------------------- the counter
def test_counter_in_resolution_units_across_the_64_bit_wrap(monkeypatch):
    energy = Settable()
    # 100 counts before the wrap: the window's 10 J carry it over
    gpu = FakeAmdGpu("AMD Instinct MI300X", UUID_A, energy_uj=energy, start_count=WRAP - 100)
    fake = install(monkeypatch, [gpu])
    source = AmdsmiSource()
    rows = source.probe()
    assert [(r.domain, r.kind, r.status) for r in rows] == [("gpu:0", COUNTER, OK)]
    assert "physical GPU 0 AMD Instinct MI300X" in rows[0].reason
    with Meter(sensors=[source], sample_hz=None) as meter:
        meter.begin("w")
        energy.uj += 10e6
        m = meter.end("w")
    assert gpu.count() < 10e6 / fakeamdsmi.RESOLUTION_UJ  # it did wrap
    # counts are of counter_resolution µJ: 10 J within one count
    assert m.energy_j["gpu:0"] == pytest.approx(10.0, abs=fakeamdsmi.RESOLUTION_UJ * 1e-6)
    assert m.method == "measured" and m.sources == ["amdsmi"]
    assert not [w for w in m.warnings if "reset" in w or "range" in w]  # a wrap, not a reset
    assert fake.calls["init"] == 1 and fake.calls["shutdown"] == 1


def test_a_step_back_that_fits_no_wrap_is_a_reset(monkeypatch):
    energy = Settable(1e9)
    install(monkeypatch, [FakeAmdGpu("MI250X", UUID_A, energy_uj=energy, resolution_uj=1.0)])
    source = AmdsmiSource()
    source.probe()
    source.open()
    energy.uj += 2e6
    assert source.read_energy_j() == {"gpu:0": pytest.approx(2.0)}
    energy.uj = 0.5e6  # driver reloaded: 0.5 J since
    assert source.read_energy_j() == {"gpu:0": pytest.approx(2.5)}
    assert source.events == ["gpu:0: counter reset inside the window; energy after it only"]
    source.close()


def test_amdsmi_before_6_2_1_names_the_count_power(monkeypatch):
    energy = Settable()
    install(monkeypatch, [FakeAmdGpu("MI210", UUID_A, energy_uj=energy, old_api=True)])
    source = AmdsmiSource()
    source.probe()
    source.open()
    energy.uj += 3e6
    assert source.read_energy_j()["gpu:0"] == pytest.approx(3.0, abs=1e-4)
    source.close()


# ---------------------------------------------------------------------- acceptance
def test_harness_sensors_lists_the_amd_gpus(monkeypatch, capsys):
    install(
        monkeypatch,
        [
            FakeAmdGpu("AMD Instinct MI300X", UUID_A, energy_uj=0.0),
            FakeAmdGpu("Radeon PRO W7900", UUID_B, energy_uj=None, current_w="N/A"),
        ],
    )
    assert main(["sensors", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["source"] == "amdsmi"]
    assert [(r["domain"], r["kind"], r["status"]) for r in rows] == [
        ("gpu:0", COUNTER, OK),
        ("gpu:1", POWER, OK),
    ]
    assert "amdsmi_get_energy_count" in rows[0]["reason"]
    assert "average socket power" in rows[1]["reason"]  # no current power on that board


def test_harness_measure_gives_the_amd_energy_within_2_percent(monkeypatch, capsys):
    # 250 W, and the accumulator wraps about half a second into the run
    counts_per_s = 250.0 / (fakeamdsmi.RESOLUTION_UJ * 1e-6)
    gpu = FakeAmdGpu(
        "AMD Instinct MI300X",
        UUID_A,
        energy_uj=Drawing(250.0),
        start_count=WRAP - int(0.5 * counts_per_s),
    )
    install(monkeypatch, [gpu])
    rc = main(
        ["measure", "--json", "--sensors", "amdsmi", "--sample-hz", "0", "--", "sleep", "1.2"]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert gpu.count() < int(counts_per_s)  # wrapped during the run
    assert out["energy_j"]["gpu:0"] == pytest.approx(250.0 * out["duration_s"], rel=0.02)
    assert out["method"] == "measured"


def test_power_limit_knob_on_an_amd_gpu_is_set_and_restored(monkeypatch, tmp_path):
    gpu = FakeAmdGpu("AMD Instinct MI300X", UUID_A, energy_uj=0.0)
    install(monkeypatch, [gpu])
    run = tmp_path / "run"
    run.mkdir()
    lines: list[str] = []
    pk = ProfileKnobs(run, lines.append)
    assert pk.enter({"name": "amd-500w", "device": "cuda:0", "power_limit_w": 500}) is None
    assert gpu.power_cap_uw == 500_000_000
    held = json.loads((run / KNOBS_FILE).read_text())["held"][0]
    assert (held["original"], held["applied"]) == (750.0, 500.0)
    assert held["gpu"]["uuid"] == UUID_A and held["gpu"]["vendor"] == "amdsmi"
    assert "knobs of amd-500w: power_limit_w of GPU 0 500 (was 750)" in lines
    pk.close()
    assert gpu.power_cap_uw == 750_000_000
    assert gpu.changes == [("power_cap_uw", 500_000_000), ("power_cap_uw", 750_000_000)]


def test_refused_amd_power_limit_says_which_call_and_how_to_grant(monkeypatch, tmp_path):
    gpu = FakeAmdGpu(
        "MI300X", UUID_A, energy_uj=0.0,
        errors={"amdsmi_set_power_cap": fakeamdsmi.error("AMDSMI_STATUS_NO_PERM")},
    )  # fmt: skip
    install(monkeypatch, [gpu])
    pk = ProfileKnobs(tmp_path, lambda _: None)
    line = pk.enter({"name": "amd", "device": "cuda:0", "power_limit_w": 500})
    assert line.startswith(
        f"hardware 'amd': power_limit_w 500: amdsmi_set_power_cap on GPU 0 (MI300X {UUID_A}): "
        "not permitted; run the harness as root"
    )
    assert "\n" not in line and gpu.changes == []
    pk.close()
    low = pk.enter({"name": "low", "device": "cuda:0", "power_limit_w": 100})
    assert "100 W is outside what GPU 0 (MI300X" in low and "accepts (300-750 W)" in low


def test_check_compares_the_amd_counter_with_integrated_power(monkeypatch, capsys):
    # gpu:0's counter agrees with its power; gpu:1's counts twice what its power says
    good = FakeAmdGpu("MI300X", UUID_A, energy_uj=Drawing(200.0), current_w=200)
    bad = FakeAmdGpu("MI300X", UUID_B, energy_uj=Drawing(400.0), current_w=200)
    install(monkeypatch, [good, bad])
    rc = main(["sensors", "--check", "--json", "--check-s", "5.3"])
    rows = json.loads(capsys.readouterr().out)
    results = {r["domain"]: r for r in rows if r["source"] == "amdsmi"}
    assert rc == 1
    assert results["gpu:0"]["verdict"] == "ok"
    assert abs(results["gpu:0"]["counter_vs_power"]) < 0.02
    assert results["gpu:1"]["verdict"] == "fail"
    assert results["gpu:1"]["counter_vs_power"] == pytest.approx(1.0, rel=0.05)


# ---------------------------------------------------------------------- the rest of the layer
def test_thermal_state_through_the_device_layer(monkeypatch):
    install(monkeypatch, [FakeAmdGpu("MI300X", UUID_A, energy_uj=0.0, temp_c=61, gfx_mhz=2100)])
    source = AmdsmiSource()
    source.probe()
    source.open()
    assert source.thermal() == {
        "gpu:0": {"temp_c": 61.0, "clock_mhz": 2100.0, "power_limit_w": 750.0}
    }
    source.close()


def test_hip_visible_devices_picks_and_orders_the_domains(monkeypatch):
    install(
        monkeypatch,
        [FakeAmdGpu("MI300X", UUID_A, energy_uj=0.0), FakeAmdGpu("MI300X", UUID_B, energy_uj=0.0)],
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # HIP_VISIBLE_DEVICES wins where both are set
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")
    source = AmdsmiSource()
    (row,) = source.probe()
    assert row.domain == "gpu:0" and "physical GPU 1" in row.reason
    assert source.devices["gpu:0"]["amdsmi_index"] == 1
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "5")
    (row,) = AmdsmiSource().probe()
    assert row.status == UNAVAILABLE and "HIP_VISIBLE_DEVICES='5'" in row.reason


def test_vendor_errors_become_statuses(monkeypatch):
    no_perm = fakeamdsmi.error("AMDSMI_STATUS_NO_PERM")
    install(
        monkeypatch,
        [FakeAmdGpu("MI300X", UUID_A, energy_uj=0.0, errors={"amdsmi_get_energy_count": no_perm})],
    )
    (row,) = AmdsmiSource().probe()
    assert row.status == NO_PERMISSION and "render and video groups" in row.reason
    install(monkeypatch, [], init_error=fakeamdsmi.error("AMDSMI_STATUS_DRIVER_NOT_LOADED"))
    (row,) = AmdsmiSource().probe()
    assert row.status == UNAVAILABLE and "amdgpu driver not loaded" in row.reason
    install(monkeypatch, [])
    (row,) = AmdsmiSource().probe()
    assert row.domain == "gpu" and "no AMD GPU" in row.reason


def test_without_amdsmi_the_source_is_unavailable_and_check_leaves_it_out(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    source = AmdsmiSource()
    (row,) = source.probe()
    assert row.status == UNAVAILABLE and "amdsmi not importable" in row.reason
    assert not source.installed()
    assert main(["sensors", "--check", "--json", "--check-s", "0.1"]) == 0
    assert "amdsmi" not in {r["source"] for r in json.loads(capsys.readouterr().out)}


def test_a_lost_gpu_mid_run_is_left_out_and_named(monkeypatch):
    gpu = FakeAmdGpu("MI300X", UUID_A, energy_uj=0.0)
    install(monkeypatch, [gpu])
    source = AmdsmiSource()
    source.probe()
    source.open()
    gpu.errors["amdsmi_get_energy_count"] = fakeamdsmi.error("AMDSMI_STATUS_NOT_FOUND")
    assert source.read_energy_j() == {}
    assert "physical GPU 0" in source.read_errors["gpu:0"]
    assert "amdsmi energy read failed" in source.read_errors["gpu:0"]
    source.close()


def test_processes_on_each_gpu(monkeypatch):
    from harness.sensors.gpu import open_gpus

    install(monkeypatch, [FakeAmdGpu("MI300X", UUID_A, pids=[4242, 4343])])
    with open_gpus("amdsmi") as gpus:
        (gpu,) = gpus.all()
        assert gpu.processes() == [4242, 4343]
        assert gpus.driver_version() == "6.8.5"
