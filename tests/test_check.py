"""harness check: one planted run per rule, each failing or warning for the rule's own reason.

Runs are written by tests/fakeruns.py and then changed the way a real fault would change them (a
lost domain's warning, a short steady window, a failed request, power above TDP, a throttled
clock, a forecast miss ...); the command is run in-process and its JSON read back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from fakeruns import FakeCase, accuracy_case, infer_case, train_case, write_run

from harness.cli import main
from harness.report.check import RULES


def plant(root: Path, cases: list[FakeCase], *, suite: dict | None = None, **kw) -> Path:
    """A run folder of ``cases``; ``suite``: keys merged into its manifest's suite (a checks:
    block, measurement settings). Extra columns of the rows (serve figures) reach the loader."""
    run = write_run(root, cases, **kw)
    if suite:
        manifest = json.loads((run / "manifest.json").read_text())
        for key, value in suite.items():
            old = manifest["suite"].get(key)
            manifest["suite"][key] = {**old, **value} if isinstance(old, dict) else value
        (run / "manifest.json").write_text(json.dumps(manifest))
    # fakeruns' measurements table keeps only the standard columns: rebuilt from result.json
    (run / "measurements.parquet").unlink()
    (run / "measurements.csv").unlink()
    return run


def check(capsys, *runs: Path) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["check", *map(str, runs), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def finding(out: dict, rule: str, case: str | None = None) -> dict:
    """The named rule's finding on the (only, or named) case."""
    cases = [c for c in out["cases"] if case is None or c["case"] == case]
    found = [r for c in cases for r in c["rules"] if r["rule"] == rule]
    assert found, f"rule {rule} did not apply"
    return max(found, key=lambda r: ["pass", "warn", "fail"].index(r["level"]))


def infer(**columns) -> FakeCase:
    c = infer_case("tiny-s", "fp32", "cpu", 8, 0.5)
    for r in c.reps:
        r.update(columns)
    return c


def serve(**columns) -> FakeCase:
    rows = []
    for i in range(3):
        row = {
            "model": "tiny-s",
            "variant": "q4",
            "hardware": "cpu",
            "device": "cpu",
            "device_name": "Fake CPU 9000",
            "energy_method": "measured",
            "energy_sources": "rapl",
            "workload": "serve",
            "concurrency": 4,
            "repetition": i,
            "duration_s": 40.0,
            "steady_s": 40.0,
            "tokens_out": 4000,
            "queries": 100,
            "energy_j": 400.0 + i,
            "avg_power_w": 10.0,
            "requests_ok": 100,
            "requests_failed": 0,
            "inflight_avg": 3.9,
            "server_prompt_tokens": 3200,
            "sent_prompt_tokens": 3200,
        }
        row.update(columns)
        rows.append(row)
    return FakeCase("tiny-s/q4/cpu/serve-c4", "serve", rows, spec={"type": "serve"})


def test_every_rule_has_a_source_and_a_reason():
    names = [r.name for r in RULES]
    assert len(names) == len(set(names)) >= 18
    assert all(r.source and r.protects for r in RULES)


def test_a_clean_run_passes(tmp_path, capsys):
    run = plant(tmp_path, [infer(), accuracy_case("tiny-s", "fp32", "cpu", "arith_mc", 0.5)])
    rc, out = check(capsys, run)
    assert rc == 0 and out["counts"] == {"pass": 2, "warn": 0, "fail": 0}


def test_case_status_failed_case_fails(tmp_path, capsys):
    bad = infer()
    bad.status, bad.error = "failed", "worker died (signal 9)"
    rc, out = check(capsys, plant(tmp_path, [bad]))
    f = finding(out, "case.status")
    assert rc == 1 and f["level"] == "fail" and "signal 9" in f["detail"]


def test_energy_method_zero_energy_fails(tmp_path, capsys):
    rc, out = check(capsys, plant(tmp_path, [infer(energy_j=0.0)]))
    assert rc == 1 and finding(out, "energy.method")["level"] == "fail"


def test_energy_method_unlabelled_fails(tmp_path, capsys):
    rc, out = check(capsys, plant(tmp_path, [infer(energy_method=None)]))
    assert rc == 1 and "missing" in finding(out, "energy.method")["detail"]


def test_energy_domains_lost_domain_fails(tmp_path, capsys):
    lost = "dram: lost mid-window (EIO); left out of this window"
    rc, out = check(capsys, plant(tmp_path, [infer(warnings=lost)]))
    f = finding(out, "energy.domains")
    assert rc == 1 and f["level"] == "fail" and "dram lost mid-window" in f["detail"]


def test_energy_domains_reset_warns(tmp_path, capsys):
    reset = "cpu:0: counter reset inside the window; energy after it only"
    rc, out = check(capsys, plant(tmp_path, [infer(warnings=reset)]))
    assert rc == 0 and finding(out, "energy.domains")["level"] == "warn"


def test_energy_update_periods_short_window_warns(tmp_path, capsys):
    text = "cpu:0: window of 0.05 s is shorter than 10 update periods (10 ms); the figure is coarse"
    rc, out = check(capsys, plant(tmp_path, [infer(warnings=text)]))
    f = finding(out, "energy.update_periods")
    assert rc == 0 and f["level"] == "warn" and "0.05" in f["detail"]


def test_energy_power_band_above_tdp_fails(tmp_path, capsys):
    # 100 W of CPU against a 50 W TDP: more than 1.1 × TDP
    c = infer(duration_s=1.0, energy_j=120.0, energy_cpu_j=100.0, avg_power_w=120.0)
    run = plant(tmp_path, [c], suite={"measurement": {"tdp_w": 50}})
    rc, out = check(capsys, run)
    f = finding(out, "energy.power_band")
    assert rc == 1 and f["level"] == "fail" and "1.1 × TDP 50" in f["detail"]


def test_energy_power_band_below_idle_warns_and_checks_block_moves_the_bound(tmp_path, capsys):
    c = infer(duration_s=1.0, energy_j=5.0, energy_cpu_j=52.0, avg_power_w=5.0)
    run = plant(
        tmp_path,
        [c],
        suite={"measurement": {"tdp_w": 50}, "checks": {"max_power_tdp_ratio": 1.2}},
    )
    (run / "idle.json").write_text(json.dumps({"cpu": {"watts": {"cpu:0": 8.0, "total": 9.0}}}))
    rc, out = check(capsys, run)
    f = finding(out, "energy.power_band")  # 52 W < 1.2 × 50 W: only the idle bound is crossed
    assert rc == 0 and f["level"] == "warn" and "below the idle baseline 9" in f["detail"]


def test_energy_counter_vs_power_disagreement_warns(tmp_path, capsys):
    rc, out = check(capsys, plant(tmp_path, [infer(counter_vs_power=0.08)]))
    assert rc == 0 and finding(out, "energy.counter_vs_power")["level"] == "warn"


def test_energy_counter_vs_power_from_the_meter(tmp_path, capsys, monkeypatch):
    """Rows whose counter_vs_power the meter wrote, from a fake NVML GPU whose counter agrees with
    its instant power and one whose counter runs 10 % fast: the rule passes the first, not the
    second; the column is in the files only where a row fills it."""
    import sys
    import time

    import fakenvml

    from harness import store
    from harness.meter import Meter
    from harness.records import measurement_columns
    from harness.sensors.nvml import NvmlSource

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    diffs = {}
    for model, gain in (("tiny-s", 1.0), ("tiny-m", 1.1)):
        gpu = fakenvml.metered_gpu(
            "A100", "GPU-aaaaaaaa-1111-2222-3333-444444444444", counter_gain=gain
        )
        monkeypatch.setitem(sys.modules, "pynvml", fakenvml.module([gpu]))
        with Meter(sensors=[NvmlSource()], sample_hz=100) as meter:
            with meter.window("rep") as w:
                time.sleep(2.0)
        diffs[model] = measurement_columns(w.measurement)["counter_vs_power"]
    assert abs(diffs["tiny-s"]) < 0.02 and diffs["tiny-m"] == pytest.approx(0.1, abs=0.02)
    cases = []
    for model, diff in diffs.items():
        c = infer_case(model, "fp32", "cpu", 8, 0.5)
        for r in c.reps:
            r["counter_vs_power"] = diff
        cases.append(c)
    run = plant(tmp_path / "both", cases)
    rc, out = check(capsys, run)
    ok = finding(out, "energy.counter_vs_power", case=cases[0].case)
    fast = finding(out, "energy.counter_vs_power", case=cases[1].case)
    assert ok["level"] == "pass"
    assert fast["level"] == "warn" and "differ by +" in fast["detail"]
    assert store.rebuild_measurements(run)["counter_vs_power"].notna().all()
    plain = plant(tmp_path / "plain", [infer()])
    assert "counter_vs_power" not in store.rebuild_measurements(plain).columns


@pytest.mark.slow
def test_energy_counter_vs_power_in_a_run_on_the_fake_gpu(tmp_path, capsys):
    """A command suite run with the dry run's fake NVIDIA GPU (tests/fakegpu) whose counter runs
    10 % fast against its power: each repetition records it and harness check flags the row."""
    import os

    from runhelpers import ROOT, command, harness, write_suite

    suite = write_suite(
        tmp_path,
        [command("sleep", "import time; time.sleep(4)")],
        sensors=["estimate", "nvml"],
        sample_hz=10,
        min_repeats=2,
        max_repeats=2,
    )
    path = os.pathsep.join(str(p) for p in (ROOT, ROOT / "tests" / "fakegpu", ROOT / "tests"))
    env = {"PYTHONPATH": path, "FAKE_GPU_COUNTER_GAIN": "1.1"}
    proc = harness(["run", str(suite), "--out", str(tmp_path / "runs")], tmp_path, 300, **env)
    assert proc.returncode == 0, proc.stderr
    run = Path(proc.stdout.strip().splitlines()[-1])
    df = pd.read_csv(run / "measurements.csv")
    assert list(df["energy_sources"]) == ["estimate+nvml"] * 2
    assert df["counter_vs_power"].to_numpy() == pytest.approx([0.1, 0.1], abs=0.01)
    rc, out = check(capsys, run)
    f = finding(out, "energy.counter_vs_power")
    assert f["level"] == "warn" and "differ by +10" in f["detail"]


def test_repeat_stop_reason_time_budget_warns(tmp_path, capsys):
    rc, out = check(capsys, plant(tmp_path, [infer(stop_reason="time_budget")]))
    assert rc == 0 and finding(out, "repeat.stop_reason")["level"] == "warn"


def test_repeat_stop_reason_max_repeats_judged_by_its_interval(tmp_path, capsys):
    wide = infer_case("tiny-s", "fp32", "cpu", 8, [0.3, 0.5, 0.7])
    narrow = infer_case("tiny-s", "fp32", "cpu", 1, 0.5, rel_noise=0.001)
    for c in (wide, narrow):
        for r in c.reps:
            r["stop_reason"] = "max_repeats"
    rc, out = check(capsys, plant(tmp_path, [wide, narrow]))
    assert finding(out, "repeat.stop_reason", wide.case)["level"] == "warn"
    assert finding(out, "repeat.stop_reason", narrow.case)["level"] == "pass"


def test_repeat_energy_cv_scattered_repetitions_warn(tmp_path, capsys):
    c = infer_case("tiny-s", "fp32", "cpu", 8, [0.3, 0.5, 0.7])
    rc, out = check(capsys, plant(tmp_path, [c]))
    f = finding(out, "repeat.energy_cv")
    assert rc == 0 and f["level"] == "warn" and "40.0%" in f["detail"]


def test_thermal_drift_warns(tmp_path, capsys):
    c = infer(temp_start_c=40.0, temp_end_c=52.0)
    run = plant(tmp_path, [c], suite={"checks": {"max_temp_drift_c": 5}})
    rc, out = check(capsys, run)
    f = finding(out, "thermal.drift")
    assert rc == 0 and f["level"] == "warn" and "+12.0 °C" in f["detail"]


def test_thermal_throttle_clock_drop_warns(tmp_path, capsys):
    c = infer()
    for r, mhz in zip(c.reps, (3000.0, 2990.0, 1500.0), strict=True):
        r["clock_mhz"] = mhz
    rc, out = check(capsys, plant(tmp_path, [c]))
    f = finding(out, "thermal.throttle")
    assert rc == 0 and f["level"] == "warn" and "1500 MHz" in f["detail"]


def test_serve_requests_a_failed_request_fails(tmp_path, capsys):
    c = serve(requests_ok=99, requests_failed=1, first_error="HTTP 500")
    rc, out = check(capsys, plant(tmp_path, [c]))
    f = finding(out, "serve.requests")
    assert rc == 1 and f["level"] == "fail" and "HTTP 500" in f["detail"]


def test_serve_requests_within_the_workloads_max_failed_share_pass(tmp_path, capsys):
    c = serve(requests_ok=99, requests_failed=1, max_failed_share=0.05)
    rc, out = check(capsys, plant(tmp_path, [c]))
    assert rc == 0 and finding(out, "serve.requests")["level"] == "pass"


def test_serve_steady_window_short_fails(tmp_path, capsys):
    rc, out = check(capsys, plant(tmp_path, [serve(steady_s=5.0)]))
    f = finding(out, "serve.steady_window")
    assert rc == 1 and f["level"] == "fail" and "< min_steady_s 30" in f["detail"]


def test_serve_steady_window_threshold_row_then_checks_block(tmp_path, capsys):
    own = plant(tmp_path / "a", [serve(steady_s=5.0, min_steady_s=2.0)])
    assert finding(check(capsys, own)[1], "serve.steady_window")["level"] == "pass"
    strict = plant(
        tmp_path / "b",
        [serve(steady_s=5.0, min_steady_s=2.0)],
        suite={"checks": {"min_steady_s": 10}},
    )
    assert finding(check(capsys, strict)[1], "serve.steady_window")["level"] == "fail"


def test_serve_offered_rate_not_kept_warns(tmp_path, capsys):
    c = serve(rate_rps=10.0, offered_rps=6.0, concurrency=None, inflight_avg=None)
    rc, out = check(capsys, plant(tmp_path, [c]))
    assert rc == 0 and finding(out, "serve.offered_rate")["level"] == "warn"


def test_serve_a_server_that_fell_behind_the_offered_rate_warns(tmp_path, capsys):
    # the serving suite's Poisson 40 rps on llama.cpp: 43.2 offered, 20.7 served: not steady
    behind = serve(rate_rps=40.0, offered_rps=43.2, requests_per_s=20.7, concurrency=16)
    rc, out = check(capsys, plant(tmp_path / "a", [behind]))
    f = finding(out, "serve.offered_rate")
    assert rc == 0 and f["level"] == "warn" and "served 20.7 req/s < 0.9 × the 43.2" in f["detail"]
    kept = serve(rate_rps=40.0, offered_rps=43.2, requests_per_s=42.0, concurrency=16)
    _, out = check(capsys, plant(tmp_path / "b", [kept]))
    assert finding(out, "serve.offered_rate")["level"] == "pass"


def test_serve_inflight_below_concurrency_warns(tmp_path, capsys):
    rc, out = check(capsys, plant(tmp_path, [serve(inflight_avg=2.0)]))
    f = finding(out, "serve.inflight")
    assert rc == 0 and f["level"] == "warn" and "< 0.8 × 4" in f["detail"]


def test_serve_inflight_is_not_judged_open_loop(tmp_path, capsys):
    rc, out = check(capsys, plant(tmp_path, [serve(inflight_avg=2.0, rate_rps=40.0)]))
    case = out["cases"][0]
    assert "serve.inflight" not in {r["rule"] for r in case["rules"]}


def test_serve_energy_per_token_out_of_range_fails(tmp_path, capsys):
    rc, out = check(capsys, plant(tmp_path, [serve(energy_j=500000.0, tokens_out=4000)]))
    assert rc == 1 and finding(out, "serve.energy_per_token")["level"] == "fail"


def test_serve_prefill_skipped_by_a_cache_fails(tmp_path, capsys):
    rc, out = check(capsys, plant(tmp_path, [serve(server_prompt_tokens=800)]))
    f = finding(out, "serve.prefill")
    assert rc == 1 and f["level"] == "fail" and "800" in f["detail"]


def test_train_forecast_miss_warns(tmp_path, capsys):
    c = train_case("tiny-s", "fp32", "cpu", [100.0, 100.0, 100.0])
    # 300 J used; the forecast, made in the first chunk only, said 150 J (140-160)
    c.reps[0].update(forecast_j=150.0, forecast_j_ci_low=140.0, forecast_j_ci_high=160.0)
    rc, out = check(capsys, plant(tmp_path, [c]))
    f = finding(out, "train.forecast")
    assert rc == 0 and f["level"] == "warn" and "outside" in f["detail"]


def test_train_budget_stop_fails(tmp_path, capsys):
    c = train_case("tiny-s", "fp32", "cpu", [100.0])
    c.status = "failed"
    c.error = "energy budget: after 40 of 400 steps the forecast is 9000 J, more than 5000 J"
    rc, out = check(capsys, plant(tmp_path, [c]))
    f = finding(out, "train.budget")
    assert rc == 1 and f["level"] == "fail" and "after 40 of 400" in f["detail"]


def test_accuracy_samples_too_few_warn(tmp_path, capsys):
    c = accuracy_case("tiny-s", "fp32", "cpu", "arith_mc", 0.5)
    c.reps[0]["samples"] = 20
    rc, out = check(capsys, plant(tmp_path, [c]))
    f = finding(out, "accuracy.samples")
    assert rc == 0 and f["level"] == "warn" and "20 samples" in f["detail"]


def test_carbon_intensity_unknown_warns(tmp_path, capsys):
    rc, out = check(capsys, plant(tmp_path, [infer()], carbon={}))
    assert rc == 0 and finding(out, "carbon.intensity")["level"] == "warn"


def test_carbon_embodied_unknown_warns(tmp_path, capsys, monkeypatch):
    from harness.carbon import embodied
    from harness.errors import HarnessError

    def unknown(machine):
        raise HarnessError("no embodied figure for this machine")

    monkeypatch.setattr(embodied, "embodied", unknown)
    rc, out = check(capsys, plant(tmp_path, [infer()]))
    f = finding(out, "carbon.embodied")
    assert rc == 0 and f["level"] == "warn" and "no embodied figure" in f["detail"]


def test_text_output_names_rule_and_figures_and_bad_input_is_one_line(tmp_path, capsys):
    run = plant(tmp_path, [serve(steady_s=5.0)])
    assert main(["check", str(run)]) == 1
    out = capsys.readouterr().out
    assert "fail  tiny-s/q4/cpu/serve-c4" in out
    assert "fail serve.steady_window: steady window 5 s < min_steady_s 30" in out
    assert "checks: 0 pass, 0 warn, 1 fail (of 1 cases" in out
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_unknown_checks_key_is_refused(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ncarbon: {country: FRA}\nhardware: [{name: cpu}]\n"
        "workloads: [{type: command, name: x, run: ['true']}]\nchecks: {min_stedy_s: 3}\n"
    )
    assert main(["validate", str(suite)]) == 2
    assert "checks.min_stedy_s" in capsys.readouterr().err


def planted_board(tmp_path: Path) -> Path:
    """Two setups: one clean, one whose power is past its TDP (fails), one warned."""
    good = infer_case("tiny-s", "fp32", "cpu", 8, 0.5)
    hot = infer_case("tiny-l", "fp32", "cpu", 8, 60.0)
    for r in hot.reps:
        r.update(energy_cpu_j=r["energy_j"], duration_s=r["energy_j"] / 200.0)
    warm = infer_case("tiny-m", "fp32", "cpu", 8, 0.9)
    for r in warm.reps:
        r["stop_reason"] = "time_budget"
    return plant(tmp_path, [good, hot, warm], suite={"measurement": {"tdp_w": 65}})


def test_leaderboard_leaves_failed_rows_out_unless_asked(tmp_path, capsys):
    run = planted_board(tmp_path)
    assert main(["leaderboard", str(run), "-o", str(tmp_path / "b.csv")]) == 0
    assert "1 failed harness check, left off" in capsys.readouterr().out
    board = pd.read_csv(tmp_path / "b.csv")
    assert set(board["model"]) == {"tiny-s", "tiny-m"}
    assert dict(zip(board["model"], board["check"], strict=True)) == {
        "tiny-s": "pass",
        "tiny-m": "warn",
    }
    assert (
        "repeat.stop_reason (warn: time_budget"
        in board.set_index("model").at["tiny-m", "check_rules"]
    )
    assert (
        main(["leaderboard", str(run), "--include-failed-checks", "-o", str(tmp_path / "a.csv")])
        == 0
    )
    full = pd.read_csv(tmp_path / "a.csv").set_index("model")
    assert full.at["tiny-l", "check"] == "fail"
    assert "energy.power_band (fail" in full.at["tiny-l", "check_rules"]


def test_report_counts_and_columns(tmp_path):
    from harness.report import build_report

    run = planted_board(tmp_path)
    out = build_report(run, figures=False)
    text = (out / "report.md").read_text()
    lines = text.splitlines()
    assert lines[2] == (
        "**checks: 1 pass, 1 warn, 1 fail (of 3 cases; `harness check`, docs/methodology.md)**"
    )
    assert (
        lines[3].startswith("- fail: tiny-l/fp32/cpu/infer-b8") and "energy.power_band" in lines[3]
    )
    assert "## Checks" in text
    summary = pd.read_csv(out / "summary.csv").set_index("model")
    assert summary.at["tiny-l", "check"] == "fail" and summary.at["tiny-m", "check"] == "warn"
    rows = pd.read_csv(run / "measurements.csv")
    assert set(rows["check"]) == {"pass", "warn", "fail"}
    assert (pd.read_parquet(run / "measurements.parquet")["check"] == rows["check"]).all()


def test_site_data_leaves_failed_rows_off_and_counts_them(tmp_path):
    pytest.importorskip("plotly")
    from harness.report.load import open_runs
    from harness.report.site import site_data

    runs = open_runs([planted_board(tmp_path)])
    data = site_data(runs)
    assert data["failed_checks_left_off"] == 1 and data["include_failed_checks"] is False
    cols = data["rows"]["columns"]
    rows = [dict(zip(cols, r, strict=True)) for r in data["rows"]["data"]]
    by_model = {r["model"]: r for r in rows}
    assert by_model["tiny-l"]["check"] == "fail" and by_model["tiny-l"]["stars"] is None
    assert "tiny-l" not in data["labels"]
    assert by_model["tiny-m"]["check"] == "warn"
    kept = site_data(runs, include_failed_checks=True)
    assert kept["failed_checks_left_off"] == 0 and "tiny-l" in kept["labels"]


def test_a_bad_checks_block_in_a_manifest_is_one_line(tmp_path, capsys):
    run = plant(tmp_path, [infer()], suite={"checks": {"max_energy_cv": "lots"}})
    assert main(["check", str(run)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json: checks.max_energy_cv" in err and "Traceback" not in err
