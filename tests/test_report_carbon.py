"""Carbon and lifetime figures against numbers worked out by hand.

Grid intensities read by hand from codecarbon's data/private_infra/global_energy_mix.json
(field carbon_intensity, gCO2e/kWh): FRA 56.039, DEU 380.95.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from fakeruns import accuracy_case, infer_case, train_case, write_run

from harness.carbon import embodied as emb
from harness.report.load import open_run
from harness.report.tables import build_tables

FRA_G_PER_KWH = 56.039
DEU_G_PER_KWH = 380.95


def _run(tmp_path, carbon, report=None):
    # 3.6 J per query -> 1 Wh per 1,000 queries; training 3 chunks of 1.2e6 J -> 1 kWh in total
    cases = [
        train_case("m", "fp32", "cpu", [1.2e6, 1.2e6, 1.2e6]),
        infer_case("m", "fp32", "cpu", 8, 3.6, rel_noise=0.0),
        infer_case("m", "int8", "cpu", 8, 1.8, rel_noise=0.0),
        accuracy_case("m", "fp32", "cpu", "t", 0.7),
    ]
    return build_tables(open_run(write_run(tmp_path, cases, carbon=carbon, report=report)))


def _setup(tables, variant="fp32"):
    return tables.setups.loc[("m", variant, "cpu", "measured")]


@pytest.mark.parametrize(
    ("carbon", "g_per_kwh", "pue"),
    [
        ({"country": "FRA", "pue": 1.2}, FRA_G_PER_KWH, 1.2),
        ({"country": "DEU"}, DEU_G_PER_KWH, 1.0),
        ({"intensity_g_per_kwh": 100, "pue": 1.5}, 100.0, 1.5),
    ],
)
def test_co2e_per_1000_queries_and_per_training_run(tmp_path, carbon, g_per_kwh, pue):
    tables = _run(tmp_path, carbon)
    row = _setup(tables)
    assert tables.grid.intensity_g_per_kwh == pytest.approx(g_per_kwh)
    assert tables.grid.pue == pytest.approx(pue)
    assert row["wh_per_1000_queries"] == pytest.approx(1.0)
    # 1 Wh = 0.001 kWh per 1,000 queries; 1 kWh per training run
    assert row["co2e_g_per_1000_queries"] == pytest.approx(0.001 * pue * g_per_kwh)
    assert row["co2e_g_per_training_run"] == pytest.approx(1.0 * pue * g_per_kwh)


def test_hand_computed_france_and_germany_values(tmp_path):
    fra = _setup(_run(tmp_path / "fra", {"country": "FRA", "pue": 1.2}))
    deu = _setup(_run(tmp_path / "deu", {"country": "DEU"}))
    assert fra["co2e_g_per_1000_queries"] == pytest.approx(0.0672468)
    assert deu["co2e_g_per_training_run"] == pytest.approx(380.95)


def test_lifetime_and_break_even(tmp_path):
    tables = _run(
        tmp_path, {"intensity_g_per_kwh": 100, "pue": 1.0}, report={"queries_lifetime": 1000}
    )
    own = _setup(tables)
    # 3.6e6 J to train, 3.6 J per query: inference overtakes training after 1,000,000 queries
    assert own["break_even_queries"] == pytest.approx(1_000_000)
    assert own["queries_lifetime"] == 1000
    assert own["energy_lifetime_j"] == pytest.approx(3.6e6 + 1000 * 3.6)
    assert own["co2e_lifetime_g"] == pytest.approx((3.6e6 + 3600) / 3.6e6 * 100)
    # the int8 copy has no training of its own: it takes the model's one training run
    copy = _setup(tables, "int8")
    assert copy["train_setup"] == "m/fp32/cpu"
    assert copy["break_even_queries"] == pytest.approx(2_000_000)


def test_lifetime_default_is_a_million_queries(tmp_path):
    row = _setup(_run(tmp_path, {"intensity_g_per_kwh": 100}))
    assert row["queries_lifetime"] == 1_000_000
    assert row["energy_lifetime_j"] == pytest.approx(3.6e6 + 3.6e6)
    assert row["inference_share_lifetime"] == pytest.approx(0.5)


# --- the report-time columns in the measurement files; embodied emissions on a shared host ------

needs_boavizta = pytest.mark.skipif(not emb.available(), reason="boaviztapi is not installed")
REPORT_COLUMNS = ["produce_j", "embodied_g", "co2e_total_g"]
#: a 2-vCPU virtual machine, as the manifest of a run on one records it
VM_HOST = {
    "hostname": "vm",
    "cpu": "AMD EPYC",
    "logical_cores": 2,
    "memory_mb": 24576,
    "virtual_machine": True,
}


def _cases():
    return [
        train_case("m", "fp32", "cpu", [1.2e6, 1.2e6, 1.2e6]),
        infer_case("m", "fp32", "cpu", 8, 3.6, rel_noise=0.0),
        accuracy_case("m", "fp32", "cpu", "t", 0.7),
    ]


@needs_boavizta
def test_measurement_files_carry_the_report_columns_once_the_report_is_built(tmp_path):
    import pandas as pd

    from harness import load_results, store
    from harness.report import build_report

    run = write_run(
        tmp_path, _cases(), carbon={"intensity_g_per_kwh": 100}, intensity_g_per_kwh=100
    )
    # before the report: the columns are not in the files at all (they were always empty)
    store.rebuild_measurements(run)
    before = pd.read_csv(run / "measurements.csv")
    assert not set(REPORT_COLUMNS) & set(before.columns)
    assert not set(REPORT_COLUMNS) & set(load_results(run).columns)

    build_report(run, figures=False)
    tables = build_tables(open_run(run))
    rate = tables.accounting.g_per_s
    for frame in (
        pd.read_csv(run / "measurements.csv"),
        pd.read_parquet(run / "measurements.parquet"),
        load_results(run),  # what a notebook reads: the cache, fresh after the report
    ):
        ok = frame[frame["status"] == "ok"]
        assert len(ok) == 7
        assert ok[REPORT_COLUMNS].notna().all().all(), ok[REPORT_COLUMNS]
        assert ok["embodied_g"].to_numpy() == pytest.approx(ok["duration_s"].to_numpy() * rate)
        assert ok["co2e_total_g"].to_numpy() == pytest.approx(
            (ok["co2e_g"] + ok["embodied_g"]).to_numpy()
        )
        # the setup's making: its training run, 3 chunks of 1.2e6 J, on every row of the setup
        assert ok["produce_j"].to_numpy() == pytest.approx(3.6e6)
    assert not store.measurements_stale(run)
    # a result newer than the cache: rebuilt from the results, the report's columns left out
    # until the next report rather than read stale or written empty
    result = next((run / "cases").glob("*/result.json"))
    future = time.time() + 5
    os.utime(result, (future, future))
    assert store.measurements_stale(run)
    assert not set(REPORT_COLUMNS) & set(load_results(run).columns)


@needs_boavizta
def test_a_vm_is_charged_its_share_of_the_host_not_the_whole_server(tmp_path):
    carbon = {"intensity_g_per_kwh": 100, "host_threads": 64}
    tables = build_tables(open_run(write_run(tmp_path, _cases(), carbon=carbon, host=VM_HOST)))
    acc = tables.accounting
    host = emb.embodied(emb.machine_of({"host": VM_HOST}, as_host=True))
    assert acc.embodied.kg == pytest.approx(host.kg)  # the host, from boaviztapi
    assert acc.share.cpu == pytest.approx(2 / 64)
    assert acc.share.ram == pytest.approx(24 / host.memory_gb)
    ram = sum(kg for part, kg in host.parts.items() if part.startswith("RAM"))
    charged = (host.kg - ram) * 2 / 64 + ram * 24 / host.memory_gb
    assert acc.charged_kg[0] == pytest.approx(charged)
    assert acc.charged_kg[0] < 0.2 * host.kg
    rate = charged * 1000 / (4 * 8760 * 3600)
    ok = tables.run.frame[tables.run.frame["status"] == "ok"]
    assert ok["embodied_g"].to_numpy() == pytest.approx(ok["duration_s"].to_numpy() * rate)
    assert acc.warning is None
    assert not ok["warnings"].fillna("").str.contains("embodied_g").any()


@needs_boavizta
def test_a_vm_whose_host_is_unknown_gets_an_assumed_share_with_a_warning(tmp_path):
    import pandas as pd

    from harness.report import build_report

    run = write_run(tmp_path, _cases(), carbon={"intensity_g_per_kwh": 100}, host=VM_HOST)
    out = build_report(run, figures=False)
    tables = build_tables(open_run(run))
    acc = tables.accounting
    # the whole server was charged before (every row's embodied share near 96 %)
    assert acc.share is not None and acc.share.cpu < 1
    assert acc.charged_kg[0] < 0.2 * acc.embodied.kg
    assert "carbon.host_threads" in acc.warning
    rows = pd.read_csv(run / "measurements.csv")
    assert rows["warnings"].str.contains("embodied_g: share of the host assumed").all()
    text = (out / "report.md").read_text()
    assert "this machine's share" in text and "**Warning:** embodied_g" in text
    saved = json.loads((out / "embodied.json").read_text())
    assert saved["charged_kg"] == pytest.approx(acc.charged_kg[0])
    assert saved["warning"] == acc.warning


@needs_boavizta
def test_a_cloud_instance_is_charged_as_boaviztapi_charges_it(tmp_path):
    carbon = {"intensity_g_per_kwh": 100, "cloud_instance": "aws/m5.large"}
    tables = build_tables(open_run(write_run(tmp_path, _cases(), carbon=carbon, host=VM_HOST)))
    acc = tables.accounting
    # boaviztapi's own figure for one m5.large: 2 of the 96 vCPUs of an m5.metal
    assert acc.charged_kg[0] == pytest.approx(emb.cloud_instance("aws/m5.large").kg)
    assert acc.charged_kg[0] < 50
    assert acc.warning is None


def test_the_bare_metal_machine_is_charged_whole(tmp_path):
    tables = build_tables(open_run(write_run(tmp_path, _cases(), carbon={"country": "FRA"})))
    acc = tables.accounting
    if acc.embodied is None:
        pytest.skip(acc.missing)
    assert acc.share is None and acc.warning is None
    assert acc.charged_kg[0] == pytest.approx(acc.embodied.kg)
