"""Knobs in the report: `recommend --max-latency`, and energy and latency against a power limit or
a frequency cap, on made-up runs whose answers are known."""

from __future__ import annotations

import pytest
from fakeruns import accuracy_case, infer_case, write_run

from harness.cli import main
from harness.report import build_report
from harness.report.knob_sweeps import knob_points
from harness.report.load import open_run
from harness.report.recommend import recommend
from harness.report.tables import build_tables

# hardware profile: (power limit recorded, J per query, p90 latency s); model m, accuracy 0.8
GPU_SETUPS = {
    "gpu-150w": (150.0, 2.0, 0.30),
    "gpu-200w": (200.0, 3.0, 0.20),
    "gpu-300w": (300.0, 4.0, 0.10),
}


def _knobbed(case, device: str, latency_s: float, **recorded):
    for row in case.reps:
        row.update(device=device, latency_p90_s=latency_s, **recorded)
    return case


@pytest.fixture
def gpu_run(tmp_path):
    cases = []
    for hw, (limit_w, e, lat) in GPU_SETUPS.items():
        infer = infer_case("m", "fp32", hw, 8, e, rel_noise=0.01, trace=False)
        cases.append(_knobbed(infer, "cuda:0", lat, power_limit_w=limit_w, cpu_max_mhz=3000.0))
        acc = accuracy_case("m", "fp32", hw, "arith", 0.8)
        cases.append(_knobbed(acc, "cuda:0", None))
    # a cheap, fast, inaccurate model: never the answer at 0.7
    cases.append(
        _knobbed(
            infer_case("n", "fp32", "gpu-300w", 8, 1.0, trace=False),
            "cuda:0",
            0.05,
            power_limit_w=300.0,
        )
    )
    cases.append(_knobbed(accuracy_case("n", "fp32", "gpu-300w", "arith", 0.6), "cuda:0", None))
    return write_run(tmp_path, cases)


def test_latency_target_picks_the_cheapest_limit_fast_enough(gpu_run):
    tables = build_tables(open_run(gpu_run))
    assert recommend(tables, 0.7).chosen["setup"] == "m/fp32/gpu-150w"
    r = recommend(tables, 0.7, max_latency=0.25)
    assert r.chosen["setup"] == "m/fp32/gpu-200w"
    assert r.chosen["latency_p90_s"] == pytest.approx(0.2)
    assert r.chosen["power_limit_w"] == 200.0
    assert recommend(tables, 0.7, max_latency=0.05).chosen is None


def test_cli_max_latency_names_latency_and_knob(gpu_run, capsys):
    assert main(["recommend", str(gpu_run), "--min-accuracy", "0.7", "--max-latency", "0.25"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith(
        "recommended: m/fp32/gpu-200w at batch 8: accuracy on arith 0.8 (95% interval"
    )
    assert first.endswith(
        "3 J/query (measured), p90 latency 0.2 s, power_limit_w 200, cpu_max_mhz 3000"
    )
    front = out.split("Pareto front")[1]
    assert "latency_p90_s" in front and "power_limit_w" in front


def test_cli_max_latency_none_fast_enough_exit_1(gpu_run, capsys):
    assert main(["recommend", str(gpu_run), "--min-accuracy", "0.7", "--max-latency", "0.05"]) == 1
    out = capsys.readouterr().out.strip()
    assert out == (
        "no setup reaches 95% lower bound of accuracy on arith >= 0.7 within p90 latency <= "
        "0.05 s; the fastest "
        "accurate enough is m/fp32/gpu-300w (p90 latency 0.1 s, 4 J/query)"
    )


def test_cli_ttft_and_bad_latency(gpu_run, capsys):
    # infer_case's TTFT is 0.01 s × batch 8: all fast enough, so the cheapest limit wins
    args = ["recommend", str(gpu_run), "--min-accuracy", "0.7", "--latency", "ttft"]
    assert main([*args, "--max-latency", "0.1"]) == 0
    assert "recommended: m/fp32/gpu-150w" in capsys.readouterr().out
    assert main([*args, "--max-latency", "0"]) == 2
    assert main([*args, "--max-latency", "0.05"]) == 1
    captured = capsys.readouterr()
    assert "--max-latency must be a positive number of seconds" in captured.err
    assert "within TTFT <= 0.05 s" in captured.out


def test_figure_against_the_power_limit(gpu_run):
    tables = build_tables(open_run(gpu_run))
    points = knob_points(tables, "power_limit_w").sort_values("power_limit_w")
    assert points["power_limit_w"].tolist() == [150.0, 200.0, 300.0]  # n has one limit: no line
    assert points["latency_p90_s"].tolist() == pytest.approx([0.3, 0.2, 0.1])
    assert knob_points(tables, "cpu_max_mhz").empty  # a GPU run: its CPU cap is no axis
    report = build_report(gpu_run)
    assert (report / "figures" / "energy_vs_power_limit.png").stat().st_size > 10_000
    assert not (report / "figures" / "energy_vs_cpu_max_mhz.png").exists()
    assert "against the GPU power limit" in (report / "report.md").read_text()


def test_figure_against_the_cpu_cap(tmp_path):
    cases = []
    for hw, mhz, e in (
        ("cpu-1200mhz", 1200.0, 1.0),
        ("cpu-2400mhz", 2400.0, 1.5),
        ("cpu", None, 2.0),
    ):
        infer = infer_case("m", "fp32", hw, 8, e, trace=False)
        cases.append(_knobbed(infer, "cpu", 0.1, cpu_max_mhz=mhz))
    tables = build_tables(open_run(write_run(tmp_path, cases)))
    points = knob_points(tables, "cpu_max_mhz")
    # the profile whose cap was not recorded is left out rather than placed anywhere
    assert sorted(points["hardware"]) == ["cpu-1200mhz", "cpu-2400mhz"]
    report = build_report(tables.run.path)
    assert (report / "figures" / "energy_vs_cpu_max_mhz.png").is_file()
    assert not (report / "figures" / "energy_vs_power_limit.png").exists()
