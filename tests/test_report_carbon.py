"""Carbon and lifetime figures against numbers worked out by hand.

Grid intensities read by hand from codecarbon's data/private_infra/global_energy_mix.json
(field carbon_intensity, gCO2e/kWh): FRA 56.039, DEU 380.95.
"""

from __future__ import annotations

import pytest
from fakeruns import accuracy_case, infer_case, train_case, write_run

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
