"""Carbon beyond the plug: an hourly intensity file, water, boaviztapi's embodied figures and
power profile, the ladder in the report, and the estimate's models."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from fakeruns import infer_case, train_case, write_run

from harness.carbon import embodied as emb
from harness.carbon import read_series, settings, window_intensity
from harness.carbon.water import water_l
from harness.errors import HarnessError
from harness.records import derive
from harness.sensors import estimate, power_model
from harness.sensors.estimate import EstimateSource

H0 = dt.datetime(2026, 3, 1, 10, tzinfo=dt.timezone.utc).timestamp()


def _grid_file(tmp_path, text=None):
    path = tmp_path / "grid.csv"
    path.write_text(
        text or "timestamp,g_per_kwh\n2026-03-01T10:00:00Z,100\n2026-03-01T11:00:00Z,300\n"
    )
    return path


def test_window_across_an_hour_boundary_is_split(tmp_path):
    series = read_series(_grid_file(tmp_path))
    # 10:59:00 to 11:01:00 UTC: one minute at 100 g/kWh, one at 300
    start = H0 + 3600 - 60
    assert window_intensity(series, start, 120) == pytest.approx(200.0)
    # 10:30 to 11:15: 30 min at 100, 15 at 300
    assert window_intensity(series, H0 + 1800, 2700) == pytest.approx((30 * 100 + 15 * 300) / 45)
    # inside one hour: that hour's figure
    assert window_intensity(series, H0 + 10, 60) == pytest.approx(100.0)


def test_record_carbon_uses_the_hour_it_ran_at(tmp_path):
    carbon = settings({"intensity_file": str(_grid_file(tmp_path)), "pue": 1.5})
    assert carbon["intensity_g_per_kwh"] == pytest.approx(200.0)  # the file's mean
    rec = {"energy_j": 3.6e6, "duration_s": 120.0, "start_unix_s": H0 + 3600 - 60}
    derive(rec, carbon)
    assert rec["intensity_g_per_kwh"] == pytest.approx(200.0)
    assert rec["co2e_g"] == pytest.approx(1.0 * 1.5 * 200.0)
    late = {"energy_j": 3.6e6, "duration_s": 60.0, "start_unix_s": H0 + 3600 + 5}
    assert derive(late, carbon)["co2e_g"] == pytest.approx(1.5 * 300.0)


def test_readings_finer_than_an_hour_are_averaged_per_hour(tmp_path):
    # Electricity Maps' 15-minute export: hour 10 reads 100, 200, 300, 400 (mean 250), hour 11
    # reads 50 four times. The last reading of each hour (400) was kept before.
    rows = [
        f"2026-03-01T10:{m:02d}:00Z,{g}"
        for m, g in zip((0, 15, 30, 45), (100, 200, 300, 400), strict=True)
    ]
    rows += [f"2026-03-01T11:{m:02d}:00Z,50" for m in (0, 15, 30, 45)]
    series = read_series(_grid_file(tmp_path, "timestamp,g_per_kwh\n" + "\n".join(rows) + "\n"))
    assert series.at_hour(int(H0 // 3600)) == pytest.approx(250.0)
    assert series.points == [[H0, pytest.approx(250.0)], [H0 + 3600, pytest.approx(50.0)]]
    assert series.mean_g_per_kwh == pytest.approx(150.0)
    assert window_intensity(series, H0 + 600, 60) == pytest.approx(250.0)
    assert "8 readings averaged per hour" in series.span()
    # the series as the manifest keeps it (one point an hour) reads the same back
    assert window_intensity(series.points, H0 + 600, 60) == pytest.approx(250.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp,g_per_kwh\nyesterday,100\n", "not a timestamp"),
        ("timestamp,g_per_kwh\n2026-03-01T10:00:00Z,lots\n", "not a number"),
        ("timestamp,g_per_kwh\n2026-03-01T10:00:00Z,-4\n", "zero or more"),
        ("when,what,why\n1,2,3\n", "need a timestamp column"),
    ],
)
def test_bad_intensity_files_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(HarnessError, match=message):
        read_series(_grid_file(tmp_path, text))


def test_water_is_on_site_plus_the_electricitys():
    # 1 kWh of IT energy, WUE 0.5 L/kWh on site, PUE 1.2, 2 L/kWh in generation
    assert water_l(3.6e6, 1.2, 0.5, 2.0) == pytest.approx(0.5 + 1.2 * 2.0)
    rec = derive(
        {"energy_j": 7.2e6},
        settings(
            {"intensity_g_per_kwh": 10, "wue_l_per_kwh": 0.5, "electricity_water_l_per_kwh": 2}
        ),
    )
    assert rec["water_l"] == pytest.approx(2 * (0.5 + 2.0))
    defaults = settings({"intensity_g_per_kwh": 10})
    assert "default" in defaults["wue_origin"] and "Shehabi" in defaults["wue_origin"]


needs_boavizta = pytest.mark.skipif(not emb.available(), reason="boaviztapi is not installed")


def _boavizta_own(config: dict) -> float:
    """boaviztapi's own result for a server configuration: its API route, called in-process."""
    import asyncio

    from boaviztapi.dto.device import Server
    from boaviztapi.routers.server_router import server_impact_from_configuration

    result = asyncio.run(
        server_impact_from_configuration(
            server=Server.model_validate({"configuration": config}),
            verbose=False,
            duration=None,
            archetype=emb.ARCHETYPE,
            criteria=["gwp"],
        )
    )
    return result["impacts"]["gwp"]["embedded"]["value"]


@needs_boavizta
def test_embodied_matches_boaviztapis_own_result_for_the_same_machine():
    machine = emb.Machine(
        cpu_name="AMD EPYC 7763 64-Core Processor",
        cpu_units=2,
        memory_gb=512,
        gpus=(("NVIDIA A100 80GB PCIe", 4),),
    )
    ours = emb.embodied(machine)
    assert ours.kg == pytest.approx(_boavizta_own(machine.configuration()))
    assert "matched" in ours.origins["CPU-1"]
    assert ours.kg > 1000  # a 4-GPU server: more than a tonne
    # amortised over 4 years: per hour
    assert ours.g_per_s(4) * 3600 == pytest.approx(ours.kg * 1000 / (4 * 8760))


@needs_boavizta
def test_an_unknown_part_gets_a_labelled_default():
    e = emb.embodied(emb.Machine(cpu_name="Imaginary CPU 9000", memory_gb=16))
    assert "default" in e.origins["CPU-1"] and "Imaginary CPU 9000" in e.origins["CPU-1"]
    assert e.kg > 0


@needs_boavizta
def test_report_has_embodied_columns_and_the_ladder(tmp_path):
    cases = [
        train_case("m", "fp32", "cpu", [3.6e5] * 3),
        infer_case("m", "fp32", "cpu", 8, 3.6, rel_noise=0.0),
    ]
    carbon = {"intensity_g_per_kwh": 100.0, "pue": 1.5, "hardware_lifetime_years": 2}
    run = write_run(tmp_path, cases, carbon=carbon, intensity_g_per_kwh=100.0, pue=1.5)
    from harness.report import build_report
    from harness.report.load import open_run
    from harness.report.tables import build_tables

    tables = build_tables(open_run(run))
    frame = tables.run.frame
    rate = tables.accounting.embodied.g_per_s(2)
    ok = frame[frame["status"] == "ok"]
    assert rate > 0
    assert list(ok["embodied_g"]) == pytest.approx(list(ok["duration_s"] * rate))
    assert list(ok["co2e_total_g"]) == pytest.approx(list(ok["co2e_g"] + ok["embodied_g"]))
    text = (build_report(run, figures=False) / "report.md").read_text()
    assert "## Carbon beyond the plug" in text and "embodied share (%)" in text
    assert "+ idle share" in text and "× PUE" in text


@needs_boavizta
def test_hour_of_day_figure_from_the_intensity_file(tmp_path):
    grid = _grid_file(tmp_path)
    carbon = settings({"intensity_file": str(grid)})
    run = write_run(tmp_path / "r", [infer_case("m", "fp32", "cpu", 1, 3.6)], carbon=carbon)
    from harness.report import build_report

    out = build_report(run)
    assert (out / "figures" / "carbon_by_hour.png").stat().st_size > 1000
    assert "carbon_by_hour.png" in (out / "report.md").read_text()


@needs_boavizta
@pytest.mark.parametrize("tdp_w", [35, 125, 280])
def test_tdp_profile_matches_boaviztapis_fit(tdp_w):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from boaviztapi.models.consumption_profile.consumption_profile import (
            CPUConsumptionProfileModel,
        )

        own = CPUConsumptionProfileModel()
        own.compute_consumption_profile_model(cpu_tdp=tdp_w)
        for load in (0, 10, 25, 50, 75, 100):
            expected = own.apply_consumption_profile(load)
            model = power_model.CpuModel("boaviztapi-tdp", tdp_w=tdp_w)
            assert model.power_w(load / 100) == pytest.approx(expected, rel=1e-3)


def test_vm_without_a_tdp_uses_ccf_per_vcpu_watts(monkeypatch):
    monkeypatch.setattr(estimate, "cpu_model_name", lambda: "Intel(R) Xeon(R) Platinum 8259CL")
    monkeypatch.setattr(estimate, "lookup_tdp", lambda model: None)
    monkeypatch.setattr(power_model, "is_virtual_machine", lambda: True)
    monkeypatch.setattr(estimate.psutil, "cpu_count", lambda logical=True: 4)
    source = EstimateSource(classes=["cpu"])
    (row,) = source.probe()
    assert source.cpu_model.kind == "ccf-vcpu" and "Cascade Lake" in row.reason
    assert source.cpu_model.power_w(0.0) == pytest.approx(4 * 0.64)
    assert source.cpu_model.power_w(1.0) == pytest.approx(4 * 3.80)


def test_process_attribution_charges_the_cases_share(monkeypatch):
    from collections import namedtuple

    T = namedtuple("T", "user nice system idle iowait")
    clock = iter([0.0, 2.0])
    cpus = iter([T(0, 0, 0, 0, 0), T(2.0, 0, 0, 2.0, 0)])  # 2 CPUs, 2 s: u = 0.5
    own = iter([0.0, 0.5])  # this process: a quarter of the busy time
    monkeypatch.setattr(estimate, "_clock", lambda: next(clock))
    monkeypatch.setattr(estimate, "_cpu_times", lambda: next(cpus))
    monkeypatch.setattr(estimate, "_process_busy_s", lambda: next(own))
    source = EstimateSource(
        classes=["cpu"], tdp_w=100.0, estimate_model="codecarbon", attribution="process"
    )
    source.probe()
    source.open()
    e = source.read_energy_j()["cpu"]
    assert e == pytest.approx(0.25 * 100 * (0.1 + 0.9 * 0.5) * 2.0)
    assert "attribution: process" in source.probe()[0].reason


def test_suite_takes_the_new_carbon_and_estimate_options(tmp_path):
    from harness.suite import Suite

    grid = _grid_file(tmp_path)
    base = {
        "name": "s",
        "hardware": [{"name": "cpu"}],
        "workloads": [{"type": "command", "name": "c", "run": ["true"]}],
    }
    s = Suite.model_validate(
        {
            **base,
            "carbon": {"intensity_file": str(grid), "hardware_lifetime_years": 5},
            "measurement": {"estimate": {"attribution": "process"}},
        }
    )
    assert s.carbon.hardware_lifetime_years == 5
    assert s.measurement.estimate.attribution == "process"
    with pytest.raises(Exception, match="give one of"):
        Suite.model_validate({**base, "carbon": {"country": "FRA", "intensity_file": str(grid)}})
    with pytest.raises(Exception, match="attribution"):
        Suite.model_validate(
            {
                **base,
                "carbon": {"country": "FRA"},
                "measurement": {"estimate": {"attribution": "x"}},
            }
        )


def test_record_has_its_start_time(tmp_path):
    from harness.meter import Meter
    from harness.records import measurement_columns

    before = time.time()
    with Meter(sensors="estimate", sample_hz=None) as meter:
        with meter.window("w") as w:
            time.sleep(0.05)
    cols = measurement_columns(w.measurement)
    assert before - 1 <= cols["start_unix_s"] <= time.time()
    json.dumps(cols)


def test_boamps_export_one_report_per_case(tmp_path):
    from harness.carbon import boamps

    if not boamps.available():
        pytest.skip("this codecarbon has no BoAmps models")
    cases = [
        train_case("m", "fp32", "cpu", [3.6e5] * 3),
        infer_case("m", "fp32", "cpu", 8, 3.6, rel_noise=0.0),
    ]
    run = write_run(tmp_path, cases, carbon={"country": "FRA"}, intensity_g_per_kwh=56.0)
    from harness.report import build_report

    out = build_report(run, figures=False)
    files = sorted((out / "boamps").glob("*.json"))
    assert len(files) == 2
    by_stage = {}
    for f in files:
        r = json.loads(f.read_text())
        by_stage[r["task"]["taskStage"]] = r
    train = by_stage["training"]
    assert [m["powerConsumption"] for m in train["measures"]] == pytest.approx([0.1] * 3)  # kWh
    assert train["header"]["formatVersion"] and train["quality"] == "high"
    assert by_stage["inference"]["task"]["nbRequest"] > 0
    assert by_stage["inference"]["environment"]["country"] == "FRA"
    embodied = json.loads((out / "embodied.json").read_text())
    assert embodied["hardware_lifetime_years"] == 4.0


BOAMPS_SCHEMAS = Path(__file__).parent / "boamps"
BOAMPS_MODEL_URI = "https://raw.githubusercontent.com/Boavizta/BoAmps/main/model/"


def boamps_validator():
    """BoAmps' own report schema (tests/boamps, see its README), its $refs resolved from the
    copies there: no network."""
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT4

    resources = []
    for path in sorted(BOAMPS_SCHEMAS.glob("*_schema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((BOAMPS_MODEL_URI + path.name, DRAFT4.create_resource(contents)))
    registry = referencing.Registry().with_resources(resources)
    schema = json.loads((BOAMPS_SCHEMAS / "report_schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft4Validator(schema, registry=registry)


def test_boamps_reports_pass_boamps_own_schema_with_params_in_billions(tmp_path):
    from harness.carbon import boamps

    if not boamps.available():
        pytest.skip("this codecarbon has no BoAmps models")
    cases = [
        train_case("m", "fp32", "cpu", [3.6e5] * 3, params=1.5e8),
        infer_case("m", "fp32", "cpu", 8, 3.6, rel_noise=0.0, params=1.5e8),
    ]
    run = write_run(tmp_path, cases, carbon={"country": "FRA"}, intensity_g_per_kwh=56.0)
    from harness.report import build_report

    out = build_report(run, figures=False)
    validator = boamps_validator()
    files = sorted((out / "boamps").glob("*.json"))
    assert len(files) == 2
    for f in files:
        report = json.loads(f.read_text())
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(report)]
        assert not problems, problems
        # "number of billions of total parameters of your model, e.g. 8 for llama3.1-8b"
        (algorithm,) = report["task"]["algorithms"]
        assert algorithm["parametersNumber"] == pytest.approx(0.15)
    assert report["infrastructure"]["infraType"] == "onPremise"
    # the validator does reject a report that breaks the schema
    report["quality"] = "excellent"
    assert any(True for _ in validator.iter_errors(report))


def test_a_capped_clock_scales_the_power_above_idle(tmp_path, monkeypatch):
    from fakesysfs import make_cpufreq

    paths = make_cpufreq(tmp_path, [1500000, 1500000], max_khz=3000000)
    monkeypatch.setenv("HARNESS_SYSFS", str(tmp_path))
    source = EstimateSource(classes=["cpu"], tdp_w=100.0)
    (row,) = source.probe()
    assert "clock 50% of max" in row.reason
    model = source.cpu_model
    half = model.idle_w() + 0.5 * (model.power_w(1.0) - model.idle_w())
    assert model.power_w(1.0, source._cpufreq.ratio()) == pytest.approx(half)
    for p in paths:  # rewritten in place, as the kernel does; re-read after REREAD_S
        p.write_text("3000000\n")
    monkeypatch.setattr(power_model.Cpufreq, "REREAD_S", 0.0)
    assert source._cpufreq.ratio() == pytest.approx(1.0)


def test_report_survives_a_missing_intensity_file(tmp_path):
    grid = _grid_file(tmp_path)
    carbon = {"intensity_file": str(grid)}
    run = write_run(
        tmp_path / "r", [infer_case("m", "fp32", "cpu", 1, 3.6)], carbon=carbon,
        intensity_g_per_kwh=150.0,
    )  # fmt: skip
    grid.unlink()
    from harness.report import build_report

    text = (build_report(run, figures=False) / "report.md").read_text()
    assert "150" in text and "the records" in text


def test_manifest_sensor_rows_name_the_estimates_attribution():
    from harness.runner import _sensor_rows

    rows = _sensor_rows({"estimate": {"model": "auto", "attribution": "process"}})
    estimate_rows = [r for r in rows if r.get("source") == "estimate"]
    assert estimate_rows and all("attribution: process" in r["reason"] for r in estimate_rows)


def test_ladder_rungs_by_hand():
    from harness.carbon.boundary import ladder, rungs_j

    row = {
        "duration_s": 10.0, "energy_gpu_j": 100.0, "energy_dynamic_j": 150.0,
        "energy_j": 200.0, "pue": 1.5,
    }  # fmt: skip
    idle = {"gpu:0": 2.0, "cpu": 3.0, "total": 5.0}
    assert rungs_j(row, idle) == {
        "gpu": pytest.approx(80.0),  # 100 J less 2 W × 10 s
        "machine_active": pytest.approx(150.0),
        "idle_share": pytest.approx(200.0),
        "pue": pytest.approx(300.0),
    }
    import pandas as pd

    frame = pd.DataFrame(
        [{**row, "status": "ok", "case_id": "c", "hardware": "gpu", "queries": 10.0,
          "intensity_g_per_kwh": 360.0, "embodied_g": 0.5, "energy_method": "measured"}]
    )  # fmt: skip
    (r,) = ladder(frame, {"gpu": {"watts": idle}}, {("m", "v", "gpu"): ("infer", "c")}).to_dict(
        "records"
    )
    # per 1,000 queries: ×100; 300 J = 1/12 Wh -> 8.33 Wh; 300 J at 360 g/kWh = 0.03 g -> 3 g
    assert r["pue_wh"] == pytest.approx(300 / 3600 * 100)
    assert r["pue_g"] == pytest.approx(300 / 3.6e6 * 360 * 100)
    assert r["embodied_g"] == pytest.approx(r["pue_g"] + 0.5 * 100)
    assert r["gpu_wh"] == pytest.approx(80 / 3600 * 100)


@needs_boavizta
def test_boamps_names_the_cloud_instance_the_suite_gives(tmp_path):
    from harness.carbon import boamps

    if not boamps.available():
        pytest.skip("this codecarbon has no BoAmps models")
    carbon = {"country": "FRA", "cloud_instance": "aws/m5.large"}
    run = write_run(tmp_path, [infer_case("m", "fp32", "cpu", 8, 3.6)], carbon=carbon)
    from harness.report import build_report

    out = build_report(run, figures=False)
    (path,) = (out / "boamps").glob("*.json")
    report = json.loads(path.read_text())
    assert not list(boamps_validator().iter_errors(report))
    infra = report["infrastructure"]
    assert (infra["infraType"], infra["cloudProvider"], infra["cloudInstance"]) == (
        "publicCloud",
        "aws",
        "m5.large",
    )


def test_suite_takes_the_host_share_keys(tmp_path):
    from harness.suite import Suite

    base = {
        "name": "s",
        "hardware": [{"name": "cpu"}],
        "workloads": [{"type": "command", "name": "c", "run": ["true"]}],
    }
    s = Suite.model_validate({**base, "carbon": {"country": "FRA", "host_threads": 64}})
    assert s.carbon.host_threads == 64
    with pytest.raises(Exception, match="greater than or equal to 1"):
        Suite.model_validate({**base, "carbon": {"country": "FRA", "host_threads": 0}})
    with pytest.raises(Exception, match="not both"):
        Suite.model_validate(
            {**base, "carbon": {"country": "FRA", "host_threads": 8, "cloud_instance": "aws/x"}}
        )
    with pytest.raises(Exception, match="provider/instance-type"):
        Suite.model_validate({**base, "carbon": {"country": "FRA", "cloud_instance": "m5.large"}})
    if emb.available():
        with pytest.raises(Exception, match="does not know 'm5.huge' at 'aws'"):
            Suite.model_validate(
                {**base, "carbon": {"country": "FRA", "cloud_instance": "aws/m5.huge"}}
            )
        ok = {**base, "carbon": {"country": "FRA", "cloud_instance": "aws/m5.large"}}
        assert Suite.model_validate(ok).carbon.cloud_instance == "aws/m5.large"
