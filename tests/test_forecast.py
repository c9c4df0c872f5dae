"""The training forecast (total energy and time after the first steps) and the energy budget."""

from __future__ import annotations

import json

import pytest
import yaml
from runhelpers import FAST, command, harness, results_by_name

from harness.meter import Meter
from harness.workloads import Context, create
from harness.workloads.forecast import Block, block_bounds, forecast, forecast_steps

CPU = {"name": "cpu-1t", "device": "cpu", "threads": 1, "memory_limit_mb": None}


def test_blocks_cover_the_first_tenth_of_the_steps():
    assert forecast_steps(400) == 40 and forecast_steps(400, 0.25) == 100
    assert forecast_steps(20) == 5  # at least one step per block
    assert forecast_steps(3) == 3
    assert block_bounds(40) == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)]
    assert block_bounds(3) == [(0, 1), (1, 2), (2, 3)]


def test_a_steady_rate_forecasts_exactly_and_the_first_block_is_left_out():
    # the first block pays for one-time costs: it counts in what was measured, not in the rate
    blocks = [Block(10, 50.0, 5.0)] + [Block(10, 20.0, 2.0) for _ in range(4)]
    f = forecast(blocks, 500)
    assert f["forecast_j"] == pytest.approx(130 + 450 * 2.0)
    assert f["forecast_j_ci_low"] == pytest.approx(f["forecast_j"])
    assert f["forecast_j_ci_high"] == pytest.approx(f["forecast_j"])
    assert f["forecast_s"] == pytest.approx(13 + 450 * 0.2)
    assert f["forecast_after_steps"] == 50


def test_a_noisy_rate_gets_a_prediction_interval_of_the_total():
    rates = [1.8, 2.2, 1.9, 2.1]
    blocks = [Block(10, 20.0, 1.0)] + [Block(10, 10 * r, 1.0) for r in rates]
    f = forecast(blocks, 1000)
    seen = 20 + sum(10 * r for r in rates)
    assert f["forecast_j"] == pytest.approx(seen + 950 * 2.0)
    import statistics

    # the rest's mean rate: the mean's error and the rest's own spread, t(0.975, 3) × s ×
    # sqrt(1/4 + 10/950), plus the drift across the blocks: slope 0.006 J/step² × 30 steps
    spread = 3.182446 * statistics.stdev(rates) * (1 / 4 + 10 / 950) ** 0.5
    half = spread + 0.006 * 30
    assert f["forecast_j_ci_high"] - f["forecast_j"] == pytest.approx(950 * half, rel=1e-4)
    assert f["forecast_j"] - f["forecast_j_ci_low"] == pytest.approx(950 * half, rel=1e-4)


def test_the_interval_covers_totals_not_the_early_mean():
    """The wrong figure: the old "95% interval" was the t-interval of the early mean rate, so a
    rate that drifted across the first blocks and kept drifting left the actual total outside.
    The interval now holds the total of a rate that keeps going as it went in the first tenth."""
    rates = [2.0, 2.04, 2.08, 2.12]  # +2% a block, 10 steps a block, no spread around the trend
    blocks = [Block(10, 25.0, 1.0)] + [Block(10, 10 * r, 1.0) for r in rates]
    f = forecast(blocks, 500)
    # the rest's 450 steps at a rate that rose on past the last block (2.12)
    actual = 25 + sum(10 * r for r in rates) + 450 * 2.2
    assert f["forecast_j_ci_low"] <= actual <= f["forecast_j_ci_high"]
    # the old interval, the t-interval of the early mean rate, missed it
    import statistics

    mean, s = statistics.fmean(rates), statistics.stdev(rates)
    old_high = 25 + sum(10 * r for r in rates) + 450 * (mean + 3.182446 * s / 2)
    assert old_high < actual


def test_over_repeated_noisy_rates_the_interval_covers_95_percent():
    """A steady rate with white noise between blocks: the total lands inside about 95% of the time
    (the old interval of the early mean covered about 85%)."""
    import random

    rng = random.Random(7)
    inside = 0
    trials = 400
    for _ in range(trials):
        steps = [rng.gauss(2.0, 0.1) for _ in range(500)]
        blocks = [Block(10, sum(steps[i : i + 10]), 1.0) for i in range(0, 50, 10)]
        f = forecast(blocks, 500)
        inside += f["forecast_j_ci_low"] <= sum(steps) <= f["forecast_j_ci_high"]
    assert inside / trials >= 0.93


def _case(tmp_path, **measurement) -> tuple[Context, Meter]:
    case = {
        "case_id": "t",
        "case": "tiny-xs/fp32/cpu/train",
        "suite": "test",
        "hardware": CPU,
        "model": {"name": "tiny-xs", "source": "builtin:tiny-xs"},
        "variant": {"name": "fp32", "dtype": "float32", "quantization": None},
        "workload": {"type": "train", "steps": 50, "batch_size": 4, "seq_len": 16},
        "measurement": {"warmup": 0, **measurement},
        "carbon": {},
    }
    meter = Meter(sensors=["estimate"], sample_hz=None)
    return Context(meter, case, tmp_path / "artifacts", tmp_path), meter


def test_the_forecast_is_made_after_a_tenth_of_the_steps_and_joins_the_records(tmp_path):
    ctx, meter = _case(tmp_path)
    with meter:
        workload = create(ctx)
        workload.setup()
        reps = [workload.run(i) for i in range(workload.planned_repetitions())]
    # 10 chunks of 5 steps; the forecast's 5 blocks of one step lie in the first chunk
    assert reps[0].columns["forecast_after_steps"] == 5
    f = workload.summary()["forecast"]
    assert all(r.columns["forecast_j"] == f["forecast_j"] for r in reps)
    assert f["forecast_j_ci_low"] <= f["forecast_j"] <= f["forecast_j_ci_high"]
    actual_j = sum(r.measurement.total_j for r in reps)
    # the first chunk's blocks measured what the chunk measured (nested windows, same steps)
    assert sum(b.energy_j for b in workload.measured_blocks) <= reps[0].measurement.total_j * 1.05
    assert 0.2 * actual_j < f["forecast_j"] < 5 * actual_j


def test_a_forecast_past_the_budget_stops_the_case_and_keeps_what_it_measured(tmp_path):
    from harness.errors import HarnessError

    ctx, meter = _case(tmp_path, energy_budget_j=1e-6)
    with meter:
        workload = create(ctx)
        workload.setup()
        first = workload.run(0)
        assert first.columns["steps"] == 5  # stopped after the forecast, mid-chunk
        assert first.columns["forecast_j"] > 1e-6
        with pytest.raises(HarnessError, match=r"energy budget: after 5 of 50 steps the forecast"):
            workload.run(1)
    assert not (tmp_path / "artifacts" / "models" / "tiny-xs").exists()  # nothing saved


def test_budget_stop_in_a_run_fails_that_case_only(tmp_path):
    data = {
        "name": "budget",
        "carbon": {"intensity_g_per_kwh": 100, "pue": 1.0},
        "measurement": {**FAST, "energy_budget_j": 0.001, "case_timeout_s": 120},
        "hardware": [{"name": "cpu", "device": "cpu", "threads": 1}],
        "models": [{"name": "tiny-xs", "source": "builtin:tiny-xs"}],
        "variants": [{"name": "fp32"}],
        "workloads": [
            {"type": "train", "steps": 40, "batch_size": 2, "seq_len": 8},
            {"type": "infer", "batch_sizes": [1], "prompt_tokens": 4, "new_tokens": 2},
            command("after", "print('fine')"),
        ],
    }
    suite = tmp_path / "budget.yaml"
    suite.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = harness(["run", str(suite), "--out", str(tmp_path / "out")], tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr
    run_dir = next((tmp_path / "out").iterdir())
    results = results_by_name(run_dir)
    train = results["tiny-xs/fp32/cpu/train"]
    assert train["status"] == "failed"
    assert train["error"].startswith("energy budget: after 5 of 40 steps the forecast is")
    assert "more than energy_budget_j 0.001 J" in train["error"]
    # the forecast's blocks (5 steps) end inside the second chunk (4 steps a chunk): it stopped
    # there, and both chunks' records are kept in the result
    reps = train["repetitions"]
    assert [r["steps"] for r in reps] == [4, 1] and reps[-1]["forecast_j"] > 0.001
    assert results["tiny-xs/fp32/cpu/infer-b1"]["error"].startswith("not run: its train case")
    assert results["cpu/after"]["status"] == "ok"
    assert json.loads((run_dir / "manifest.json").read_text())["suite"]["measurement"][
        "energy_budget_j"
    ] == pytest.approx(0.001)
