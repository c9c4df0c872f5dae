"""Hardware knobs: cpufreq caps and governors (fake sysfs), GPU power limits and clocks (fake NVML),
a board's own command; set before a profile's cases, restored after, undone after a crash."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import fakenvml
import pytest
from fakenvml import FakeGpu
from fakesysfs import make_cpufreq_policies
from runhelpers import PY

import harness.sysfs
from harness import knobs, store
from harness.errors import HarnessError
from harness.knobs import KNOBS_FILE, ProfileKnobs, machine_file, restore_left_over
from harness.suite import validate_data

UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444"


@pytest.fixture(autouse=True)
def _no_cuda_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def gpus_fake(monkeypatch, *gpus: FakeGpu):
    fake = fakenvml.module(list(gpus))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def gpu(uuid=UUID_A, limit_w=300, **kw) -> FakeGpu:
    return FakeGpu(
        "A100",
        uuid,
        energy_mj=0,
        power_limit_mw=limit_w * 1000,
        power_limit_range_mw=(100_000, 400_000),
        **kw,
    )


def caps(policies) -> list[int]:
    return [int((p / "scaling_max_freq").read_text()) for p in policies]


def run_folder(tmp_path, name="run") -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


# ------------------------------------------------------------------------------ CPU
def test_cpu_cap_is_set_saved_first_and_restored(sysfs, tmp_path):
    policies = make_cpufreq_policies(sysfs, cpus=2, max_khz=3_000_000)
    run_dir = run_folder(tmp_path)
    lines: list[str] = []
    with ProfileKnobs(run_dir, lines.append) as pk:
        assert pk.enter({"name": "cpu-1200", "device": "cpu", "cpu_max_mhz": 1200}) is None
        assert caps(policies) == [1_200_000, 1_200_000]
        saved = json.loads((run_dir / KNOBS_FILE).read_text())
        (held,) = saved["held"]
        assert held["knob"] == "cpu_max_mhz" and held["state"] == "set"
        assert sorted(held["original"].values()) == [3_000_000, 3_000_000]
        assert held["applied"] == 1200.0
        # the machine-wide copy names this run, for a restore after a crash
        assert json.loads(machine_file().read_text())["run_dir"] == str(run_dir.resolve())
        assert pk.enter({"name": "cpu-1200", "device": "cpu", "cpu_max_mhz": 1200}) is None
        assert pk.enter({"name": "cpu", "device": "cpu"}) is None  # a new profile: restored
        assert caps(policies) == [3_000_000, 3_000_000]
    assert not machine_file().exists()
    saved = json.loads((run_dir / KNOBS_FILE).read_text())
    assert saved["held"] == [] and saved["history"][0]["restored"]
    assert "knobs of cpu-1200: cpu_max_mhz 1200 (was 3000)" in lines
    assert any("restored cpu_max_mhz of cpu-1200" in ln for ln in lines)


def test_cpu_governor_set_and_restored_and_unknown_one_refused(sysfs, tmp_path):
    policies = make_cpufreq_policies(sysfs, cpus=2, governor="powersave")
    pk = ProfileKnobs(run_folder(tmp_path), lambda _: None)
    assert pk.enter({"name": "perf", "device": "cpu", "cpu_governor": "performance"}) is None
    assert {(p / "scaling_governor").read_text().strip() for p in policies} == {"performance"}
    line = pk.enter({"name": "odd", "device": "cpu", "cpu_governor": "schedutil"})
    assert line.startswith("hardware 'odd': cpu_governor schedutil: ")
    assert "no governor 'schedutil' (available: performance, powersave)" in line
    assert {(p / "scaling_governor").read_text().strip() for p in policies} == {"powersave"}
    pk.close()


def test_cap_outside_the_hardware_range_is_refused_before_writing(sysfs, tmp_path):
    policies = make_cpufreq_policies(sysfs, cpuinfo_khz=(800_000, 3_600_000))
    pk = ProfileKnobs(run_folder(tmp_path), lambda _: None)
    line = pk.enter({"name": "fast", "device": "cpu", "cpu_max_mhz": 5000})
    assert "5000 MHz is above what policy0 allows (cpuinfo_max_freq 3600 MHz)" in line
    assert caps(policies) == [3_000_000, 3_000_000]
    # the profile's later cases get the same line without another try
    assert pk.enter({"name": "fast", "device": "cpu", "cpu_max_mhz": 5000}) == line
    pk.close()
    assert not machine_file().exists()


def test_no_cpufreq_is_one_clear_line(sysfs, tmp_path):
    pk = ProfileKnobs(run_folder(tmp_path), lambda _: None)
    line = pk.enter({"name": "cpu-1200", "device": "cpu", "cpu_max_mhz": 1200})
    assert line == (
        f"hardware 'cpu-1200': cpu_max_mhz 1200: no cpufreq here "
        f"({sysfs}/devices/system/cpu/cpufreq has no policy*/scaling_max_freq): this kernel, VM "
        "or container does not let the CPU frequency be set"
    )


def test_no_permission_names_the_file_and_how_to_grant_it(sysfs, tmp_path, monkeypatch):
    policies = make_cpufreq_policies(sysfs, cpus=1)
    target = policies[0] / "scaling_max_freq"
    target.chmod(0o444)
    if os.geteuid() == 0:  # root writes read-only files: refuse the way the kernel does
        real_open = os.open

        def refusing_open(path, flags, *args):
            if Path(path) == target and flags & os.O_WRONLY:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *args)

        monkeypatch.setattr(harness.sysfs.os, "open", refusing_open)
    pk = ProfileKnobs(run_folder(tmp_path), lambda _: None)
    line = pk.enter({"name": "cpu-1200", "device": "cpu", "cpu_max_mhz": 1200})
    assert "\n" not in line
    assert f"cannot write {target}: permission denied" in line
    assert "run the harness as root, or let this user write them (sudo chown $USER" in line
    assert caps(policies) == [3_000_000]
    pk.close()


# ------------------------------------------------------------------------------ GPU
def test_power_limit_set_and_restored_through_nvml(monkeypatch, tmp_path):
    a = gpu()
    gpus_fake(monkeypatch, a)
    lines: list[str] = []
    pk = ProfileKnobs(run_folder(tmp_path), lines.append)
    assert pk.enter({"name": "gpu-200w", "device": "cuda:0", "power_limit_w": 200}) is None
    assert a.power_limit_mw == 200_000
    held = json.loads((tmp_path / "run" / KNOBS_FILE).read_text())["held"][0]
    assert (held["original"], held["applied"], held["gpu"]["uuid"]) == (300.0, 200.0, UUID_A)
    assert "knobs of gpu-200w: power_limit_w of GPU 0 200 (was 300)" in lines
    pk.close()
    assert a.power_limit_mw == 300_000
    assert a.changes == [("power_limit_mw", 200_000), ("power_limit_mw", 300_000)]


def test_refused_power_limit_says_which_call_and_how_to_grant(monkeypatch, tmp_path):
    a = gpu(errors={"nvmlDeviceSetPowerManagementLimit": fakenvml.NoPermission()})
    gpus_fake(monkeypatch, a)
    pk = ProfileKnobs(run_folder(tmp_path), lambda _: None)
    line = pk.enter({"name": "gpu-200w", "device": "cuda:0", "power_limit_w": 200})
    assert line == (
        "hardware 'gpu-200w': power_limit_w 200: nvmlDeviceSetPowerManagementLimit on GPU 0 "
        f"(A100 {UUID_A}): not permitted; run the harness as root, or give it CAP_SYS_ADMIN "
        "(in a container: --cap-add SYS_ADMIN)"
    )
    assert a.power_limit_mw == 300_000 and a.changes == []
    pk.close()
    assert not machine_file().exists()


def test_power_limit_outside_the_board_range_is_refused(monkeypatch, tmp_path):
    a = gpu()
    gpus_fake(monkeypatch, a)
    pk = ProfileKnobs(run_folder(tmp_path), lambda _: None)
    line = pk.enter({"name": "gpu-50w", "device": "cuda:0", "power_limit_w": 50})
    assert "50 W is outside what GPU 0 (A100" in line and "accepts (100-400 W)" in line
    assert a.changes == []


def test_profile_gpu_follows_cuda_visible_devices(monkeypatch, tmp_path):
    a, b = gpu(UUID_A), gpu(UUID_B)
    gpus_fake(monkeypatch, a, b)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    pk = ProfileKnobs(run_folder(tmp_path), lambda _: None)
    assert pk.enter({"name": "g", "device": "cuda:0", "power_limit_w": 250}) is None
    assert (a.power_limit_mw, b.power_limit_mw) == (300_000, 250_000)
    pk.close()
    assert b.power_limit_mw == 300_000


def test_locked_clocks_are_reset_after(monkeypatch, tmp_path):
    a = gpu()
    gpus_fake(monkeypatch, a)
    pk = ProfileKnobs(run_folder(tmp_path), lambda _: None)
    hw = {"name": "g", "device": "cuda:0", "gpu_locked_clocks_mhz": [900, 1200]}
    assert pk.enter(hw) is None
    assert a.locked_clocks_mhz == (900, 1200)
    pk.close()
    assert a.locked_clocks_mhz is None


# ------------------------------------------------------------------------------ a board's tool
def _mode_tool(tmp_path: Path) -> tuple[list[str], Path]:
    """A stand-in for nvpmodel: ``-q`` prints the mode, ``-m N`` sets it (in a file)."""
    state = tmp_path / "mode"
    state.write_text("0")
    script = tmp_path / "mode_tool.py"
    script.write_text(
        "import sys, pathlib\n"
        f"p = pathlib.Path({str(state)!r})\n"
        "if sys.argv[1] == '-q':\n"
        "    print('NV Power Mode: MAXN'); print(p.read_text())\n"
        "elif sys.argv[2] == 'deny':\n"
        "    print('nvpmodel: permission denied', file=sys.stderr); sys.exit(1)\n"
        "else:\n"
        "    p.write_text(sys.argv[2])\n"
    )
    return [PY, str(script)], state


def test_knob_command_saves_the_query_and_restores_it(tmp_path):
    tool, state = _mode_tool(tmp_path)
    hw = {
        "name": "jetson-15w",
        "device": "cpu",
        "knob_command": {
            "query": [*tool, "-q"],
            "set": [*tool, "-m", "2"],
            "restore": [*tool, "-m", "{original}"],
        },
    }
    pk = ProfileKnobs(run_folder(tmp_path), lambda _: None)
    assert pk.enter(hw) is None
    assert state.read_text() == "2"
    assert json.loads((tmp_path / "run" / KNOBS_FILE).read_text())["held"][0]["original"] == "0"
    pk.close()
    assert state.read_text() == "0"


def test_knob_command_failure_is_one_line_with_its_reason(tmp_path):
    tool, state = _mode_tool(tmp_path)
    hw = {
        "name": "j",
        "device": "cpu",
        "knob_command": {"set": [*tool, "-m", "deny"], "restore": [*tool, "-m", "0"]},
    }
    line = ProfileKnobs(run_folder(tmp_path), lambda _: None).enter(hw)
    assert "exited with status 1: nvpmodel: permission denied; if it needs root" in line
    assert "\n" not in line


def test_knob_command_schema():
    base = {
        "name": "s",
        "carbon": {"intensity_g_per_kwh": 1},
        "workloads": [{"type": "command", "name": "c", "run": ["true"]}],
    }
    ok = {**base, "hardware": [{"name": "j", "knob_command": {"set": ["a"], "restore": ["b"]}}]}
    assert validate_data(ok).hardware[0].knob_command.set == ["a"]
    bad = {
        **base,
        "hardware": [{"name": "j", "knob_command": {"set": ["a"], "restore": ["b", "{original}"]}}],
    }
    with pytest.raises(HarnessError, match="uses {original} but there is no query"):
        validate_data(bad)
    gpu_on_cpu = {**base, "hardware": [{"name": "g", "power_limit_w": 200}]}
    with pytest.raises(HarnessError, match="power_limit_w: a GPU knob needs a cuda:N device"):
        validate_data(gpu_on_cpu)


# ------------------------------------------------------------------------------ crashes
def test_knobs_left_by_a_dead_run_are_restored_at_the_next_start(sysfs, tmp_path):
    policies = make_cpufreq_policies(sysfs, cpus=2, max_khz=3_000_000)
    dead = run_folder(tmp_path, "dead-run")
    pk = ProfileKnobs(dead, lambda _: None)
    assert pk.enter({"name": "cpu-1200", "device": "cpu", "cpu_max_mhz": 1200}) is None
    del pk  # the runner died: nothing restored
    assert caps(policies) == [1_200_000, 1_200_000]
    lines: list[str] = []
    restore_left_over(run_folder(tmp_path, "next-run"), lines.append)
    assert caps(policies) == [3_000_000, 3_000_000]
    assert lines == [
        "knobs: restored cpu_max_mhz of cpu-1200, left set by dead-run (it did not finish)"
    ]
    assert not machine_file().exists()
    assert json.loads((dead / KNOBS_FILE).read_text())["held"] == []


def test_machine_copy_restores_even_when_the_run_folder_is_gone(monkeypatch, tmp_path):
    a = gpu()
    gpus_fake(monkeypatch, a)
    dead = run_folder(tmp_path, "dead-run")
    ProfileKnobs(dead, lambda _: None).enter(
        {"name": "g", "device": "cuda:0", "power_limit_w": 150}
    )
    assert a.power_limit_mw == 150_000
    (dead / KNOBS_FILE).unlink()
    dead.rmdir()
    restore_left_over(run_folder(tmp_path, "next"), lambda _: None)
    assert a.power_limit_mw == 300_000
    assert not machine_file().exists()


def test_ray_runs_refuse_knobs():
    case = {"hardware": {"name": "gpu-200w", "device": "cuda:0", "power_limit_w": 200}}
    with pytest.raises(
        HarnessError, match="can only be set on this machine; run the suite without --ray"
    ):
        knobs.refuse_on_ray([case])
    knobs.refuse_on_ray([{"hardware": {"name": "cpu", "device": "cpu"}}])


def test_profiles_without_knobs_keep_their_case_ids():
    from harness.suite import case_id, expand

    suite = validate_data(
        {
            "name": "s",
            "carbon": {"intensity_g_per_kwh": 1},
            "hardware": [{"name": "cpu", "device": "cpu"}],
            "workloads": [{"type": "command", "name": "c", "run": ["true"]}],
        }
    )
    (case,) = expand(suite)
    assert set(case["hardware"]) == {
        "name",
        "device",
        "threads",
        "memory_limit_mb",
        "edge",
        "resources",
    }
    assert case["case_id"] == case_id(case)
    assert store.sanitise(case["hardware"]) == case["hardware"]


def test_each_window_records_the_cpu_cap(sysfs):
    from fakesysfs import make_rapl, write_counter

    from harness.meter import Meter
    from harness.sensors.rapl import RaplSource

    make_rapl(sysfs, sockets=1, dram=False, psys=False, core=False)
    policies = make_cpufreq_policies(sysfs, cpus=2, max_khz=3_000_000)
    with Meter(sensors=[RaplSource()], sample_hz=None) as meter:
        with meter.window("uncapped") as w:
            pass
        assert w.measurement.cpu_max_mhz == 3000.0
        for p in policies:
            write_counter(p / "scaling_max_freq", 1_200_000)
        with meter.window("capped") as w:
            pass
    assert w.measurement.cpu_max_mhz == 1200.0
    assert w.measurement.to_dict()["cpu_max_mhz"] == 1200.0


def test_a_left_over_knob_that_cannot_be_restored_stops_the_next_run(monkeypatch, tmp_path):
    a = gpu()
    gpus_fake(monkeypatch, a)
    dead = run_folder(tmp_path, "dead-run")
    ProfileKnobs(dead, lambda _: None).enter(
        {"name": "g", "device": "cuda:0", "power_limit_w": 150}
    )
    a.errors["nvmlDeviceSetPowerManagementLimit"] = fakenvml.NoPermission()
    with pytest.raises(HarnessError, match="nothing is measured until it is restored") as e:
        restore_left_over(run_folder(tmp_path, "next"), lambda _: None)
    assert "cannot restore power_limit_w of GPU 0 of g: nvmlDeviceSetPowerManagementLimit" in str(
        e.value
    )
    assert a.power_limit_mw == 150_000
    # still saved, for the next try once permitted
    assert json.loads(machine_file().read_text())["run_dir"] == str(dead.resolve())
    del a.errors["nvmlDeviceSetPowerManagementLimit"]
    restore_left_over(run_folder(tmp_path, "later"), lambda _: None)
    assert a.power_limit_mw == 300_000 and not machine_file().exists()
