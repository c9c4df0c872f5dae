"""`harness compare`: a planted regression is flagged, changes inside the noise are not.

Run-to-run noise is measured, not assumed: ``reference()`` writes each case's reference loop
(what every real case measures beside its repetitions) into a fake run, so the machine's move
between two runs is known; without it, and without earlier runs, compare cannot tell.
"""

from __future__ import annotations

import json
import shutil

import pytest
from fakeruns import FakeCase, accuracy_case, infer_case, train_case, write_run

from harness.cli import main
from harness.report.compare import compare_frames, compare_runs, holm, mcnemar_p
from harness.report.load import open_run


def reference(run, machine: float = 1.0, jitter: float = 0.01, window: float = 0.03, phase=0):
    """Write each case's reference loop into a fake run: the machine ``machine`` times slower
    than 1 s / 10 J, each case's loop off by up to ``jitter`` (a spread across cases, shifted by
    ``phase`` from run to run), its 3 windows ``window`` apart."""
    from harness.reference import REFERENCE_FILE, VERSION

    folders = sorted((run / "cases").iterdir())
    for i, folder in enumerate(folders):
        wobble = 1 + jitter * (((i + phase) % 3) - 1)
        d, e = machine * wobble, 10 * machine * wobble
        windows = [{"duration_s": d * f, "energy_j": e * f} for f in (1 - window, 1, 1 + window)]
        data = {"version": VERSION, "method": "measured", "duration_s": d, "energy_j": e}
        (folder / REFERENCE_FILE).write_text(json.dumps({**data, "windows": windows}))
    return run


def compare(base, new, threshold=0.05, history=()):
    return compare_runs(open_run(base), open_run(new), threshold, [open_run(h) for h in history])


def _cases(a=1.0, b=1.0, c=1.0, d=1.0, fail_d=False):
    """a, b, d: 3 repetitions ±2% (95% CI about ±5%); c: ±20% (CI about ±50%)."""
    cases = [
        infer_case("a", "fp32", "cpu", 8, a, rel_noise=0.02, trace=False),
        infer_case("b", "fp32", "cpu", 8, b, rel_noise=0.02, trace=False),
        infer_case("c", "fp32", "cpu", 8, c, rel_noise=0.20, trace=False),
        infer_case("d", "fp32", "cpu", 8, d, rel_noise=0.02, trace=False),
    ]
    if fail_d:
        cases[3] = FakeCase(cases[3].case, "infer", cases[3].reps[:1], status="failed", error="OOM")
    return cases


def _verdicts(rows, metric="energy_per_query_j"):
    r = rows[rows["metric"] == metric]
    return dict(zip(r["case"].str.split("/").str[0], r["verdict"], strict=True))


@pytest.fixture
def runs(tmp_path):
    base = write_run(tmp_path, _cases(), suite="s", started="2025-01-01T00:00:00Z")
    # a +30% (beyond noise), b +3% (under the threshold), c +10% (inside c's wide interval),
    # d -30% (an improvement); the machine did not move (its reference loop did not)
    new = write_run(
        tmp_path, _cases(a=1.3, b=1.03, c=1.1, d=0.7), suite="s", started="2025-01-02T00:00:00Z"
    )
    return reference(base), reference(new)


def test_planted_regression_is_flagged_noise_is_not(runs):
    base, new = runs
    rows = compare(base, new, 0.05)
    v = _verdicts(rows)
    assert v == {"a": "regression", "b": "within noise", "c": "within noise", "d": "improvement"}
    a = rows[(rows["metric"] == "energy_per_query_j") & rows["case"].str.startswith("a/")].iloc[0]
    assert a["change_rel"] == pytest.approx(0.3)
    assert a["new_ci_low"] > a["base_ci_high"]
    # c moved by more than the threshold, but its intervals overlap
    c = rows[(rows["metric"] == "energy_per_query_j") & rows["case"].str.startswith("c/")].iloc[0]
    assert abs(c["change_rel"]) > 0.05 and not c["beyond_noise"]
    # throughput did not change: nothing flagged there
    assert set(_verdicts(rows, "tokens_per_s").values()) == {"within noise"}
    # each figure per unit of work, never per repetition
    assert "energy_j" not in set(rows["metric"]) and "duration_s" not in set(rows["metric"])


def test_threshold_decides_when_intervals_do_not_overlap(runs):
    base, new = runs
    rows = compare(base, new, 0.5)
    assert _verdicts(rows)["a"] == "within noise"  # +30% < 50%


def test_cli_exit_status(runs, tmp_path, capsys):
    base, new = runs
    assert main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "+30.0%" in out
    assert "p_adj" in out and "Holm over" in out  # both p and the adjusted p, and how
    assert main(["compare", str(base), str(base)]) == 0
    # only improvements and changes inside the noise: exit 0
    calm = reference(write_run(tmp_path / "calm", _cases(b=1.03, c=1.1, d=0.7), suite="s"))
    assert main(["compare", str(base), str(calm)]) == 0


def test_a_case_that_now_fails_is_a_regression(runs, tmp_path):
    base, _ = runs
    broken = write_run(tmp_path / "broken", _cases(fail_d=True), suite="s")
    rows = compare_frames(open_run(base).frame, open_run(broken).frame)
    status = rows[rows["metric"] == "status"]
    assert status["case"].str.startswith("d/").all() and (status["verdict"] == "regression").all()
    assert main(["compare", str(base), str(broken)]) == 1


def test_energy_is_not_judged_across_methods(tmp_path):
    base = write_run(tmp_path, [infer_case("a", "fp32", "cpu", 8, 1.0, trace=False)], suite="s")
    est = write_run(
        tmp_path / "est",
        [infer_case("a", "fp32", "cpu", 8, 2.0, trace=False, method="estimated")],
        suite="s",
    )
    rows = compare_frames(open_run(base).frame, open_run(est).frame)
    energy = rows[rows["metric"] == "energy_per_query_j"].iloc[0]
    assert energy["verdict"] == "not comparable" and "estimated" in energy["note"]


def test_baseline_latest_picks_the_previous_run_of_the_same_suite(tmp_path, capsys):
    results = tmp_path / "results"
    first = reference(write_run(results, _cases(d=5.0), suite="s", started="2025-01-01T00:00:00Z"))
    second = reference(write_run(results, _cases(), suite="s", started="2025-01-02T00:00:00Z"))
    # another suite, later, and a later run of the same suite: neither is the baseline of third
    write_run(results, _cases(a=9.0), suite="other", started="2025-01-02T12:00:00Z")
    third = reference(write_run(results, _cases(a=1.3), suite="s", started="2025-01-03T00:00:00Z"))
    write_run(results, _cases(a=0.1), suite="s", started="2025-01-04T00:00:00Z")
    assert main(["compare", "--baseline", "latest", str(third)]) == 1  # 1.0 -> 1.3: regression
    out = capsys.readouterr().out
    assert f"base: {second.name}" in out and f"new:  {third.name}" in out
    assert main(["compare", "--baseline", "latest", str(second)]) == 0  # d: 5.0 -> 1.0
    assert f"base: {first.name}" in capsys.readouterr().out
    assert main(["compare", "--baseline", "latest", str(first)]) == 2  # nothing earlier


def test_baseline_latest_falls_back_to_harness_results(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    old = write_run(results, _cases(), suite="s", started="2025-01-01T00:00:00Z")
    new = write_run(tmp_path / "elsewhere", _cases(), suite="s", started="2025-01-02T00:00:00Z")
    monkeypatch.setenv("HARNESS_RESULTS", str(results))
    assert main(["compare", "--baseline", "latest", str(new)]) == 0
    assert f"base: {old.name}" in capsys.readouterr().out
    shutil.rmtree(old)
    assert main(["compare", "--baseline", "latest", str(new)]) == 2


def test_compare_usage_errors(runs, capsys):
    base, new = runs
    assert main(["compare", str(base)]) == 2
    assert main(["compare", "--baseline", "latest", str(base), str(new)]) == 2
    assert main(["compare", str(base), str(new), "--threshold", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3


# --------------------------------------------------------------------- tests, not overlap
def _energies(center: float, sd: float, n: int) -> list[float]:
    """n values with mean ``center`` and sample standard deviation exactly ``sd``."""
    import numpy as np

    z = np.linspace(-1, 1, n)
    z = z / z.std(ddof=1)
    return list(center + sd * z)


def _steady() -> list[FakeCase]:
    """Two cases that do not change: with a third, the machine's moves across cases are known."""
    return [infer_case(m, "fp32", "cpu", 8, 1.0, rel_noise=0.0, trace=False) for m in ("y", "z")]


def test_welch_flags_a_real_change_whose_intervals_overlap(tmp_path):
    steady = [infer_case("a", "fp32", "cpu", 8, _energies(10, 1, 10), trace=False)]
    # no reference loop: the earlier runs, where a did not move, give the run-to-run noise
    earlier = write_run(tmp_path / "h", steady, suite="s", started="2025-01-01T00:00:00Z")
    base = write_run(tmp_path, steady, suite="s", started="2025-01-02T00:00:00Z")
    new = write_run(
        tmp_path / "n",
        [infer_case("a", "fp32", "cpu", 8, _energies(11.4, 1, 10), trace=False)],
        suite="s",
    )
    rows = compare(base, new, 0.05, history=[earlier])
    row = rows[rows["metric"] == "energy_per_query_j"].iloc[0]
    assert row["new_ci_low"] < row["base_ci_high"]  # the 95% intervals overlap...
    assert row["p_value"] == pytest.approx(0.0058, abs=0.001)  # ...yet Welch's test says real
    # and still after Holm's adjustment over the compare's 4 tests (J/token is J/query's test)
    assert row["p_adj"] == pytest.approx(4 * row["p_value"], rel=1e-9)
    assert rows.attrs["tests"] == 4
    assert row["verdict"] == "regression"


def test_welch_p_value_matches_scipy_where_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    from harness.report.compare import welch_p

    a, b = [1.0, 1.2, 0.9, 1.1, 1.05], [1.3, 1.25, 1.4, 1.2]
    expected = scipy_stats.ttest_ind(a, b, equal_var=False).pvalue
    # df rounded down: the p-value is at least scipy's, never smaller
    assert expected <= welch_p(a, b) <= expected * 1.5


def _with(case: FakeCase, **columns) -> FakeCase:
    for rep in case.reps:
        rep.update(columns)
    return case


def test_a_lost_sensor_or_another_device_is_not_comparable(tmp_path):
    base = write_run(
        tmp_path,
        [
            _with(infer_case("a", "fp32", "cpu", 8, 2.0, trace=False), energy_sources="rapl+nvml"),
            infer_case("b", "fp32", "cpu", 8, 1.0, trace=False),
        ],
        suite="s",
    )
    new = write_run(
        tmp_path / "n",
        [
            # the GPU sensor was lost: less energy counted, which is no improvement
            _with(infer_case("a", "fp32", "cpu", 8, 1.0, trace=False), energy_sources="rapl"),
            _with(infer_case("b", "fp32", "cpu", 8, 1.0, trace=False), device_name="Other CPU"),
        ],
        suite="s",
    )
    rows = compare_frames(open_run(base).frame, open_run(new).frame)
    a = rows[rows["case"].str.startswith("a/") & (rows["metric"] == "energy_per_query_j")].iloc[0]
    assert a["verdict"] == "not comparable" and "rapl+nvml -> rapl" in a["note"]
    b = rows[rows["case"].str.startswith("b/")]
    assert set(b["verdict"]) == {"not comparable"} and "Other CPU" in b["note"].iloc[0]
    assert "improvement" not in set(rows["verdict"])


def test_cases_missing_from_the_new_run_are_listed(runs, tmp_path, capsys):
    base, _ = runs
    fewer = write_run(tmp_path / "fewer", _cases()[:2], suite="s")
    rows = compare_frames(open_run(base).frame, open_run(fewer).frame)
    missing = rows[rows["verdict"] == "missing"]
    assert sorted(missing["case"].str[0]) == ["c", "d"]
    assert main(["compare", str(base), str(fewer)]) == 0
    assert "2 cases missing from the new run" in capsys.readouterr().out


def test_a_nan_threshold_is_refused(runs, capsys):
    base, new = runs
    for bad in ("nan", "inf"):
        assert main(["compare", str(base), str(new), "--threshold", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--threshold" in line for line in err)
    with pytest.raises(ValueError):
        compare_frames(open_run(base).frame, open_run(new).frame, float("nan"))


# ------------------------------------------------------- figures that mean the same, and noise
def test_the_same_training_cut_into_other_chunks_is_no_change(tmp_path):
    """The wrong figure: the same training (403.49 J in all) cut into 5 chunks instead of 10 was
    a regression of +106% per repetition. Per step and per whole case it is the same work."""
    base = write_run(
        tmp_path, [train_case("t", "fp32", "cpu", [40.349] * 10, steps_per_chunk=40)], suite="s"
    )
    new = write_run(
        tmp_path / "n",
        [train_case("t", "fp32", "cpu", [80.698] * 5, steps_per_chunk=80, chunk_duration_s=20.0)],
        suite="s",
    )
    rows = compare(reference(base), reference(new))
    assert set(rows["metric"]) == {
        "energy_per_step_j",
        "duration_per_step_s",
        "energy_case_j",
        "duration_case_s",
    }
    whole = rows[rows["metric"] == "energy_case_j"].iloc[0]
    assert whole["base"] == pytest.approx(403.49) and whole["new"] == pytest.approx(403.49)
    assert set(rows["verdict"]) == {"within noise"}
    assert main(["compare", str(base), str(new)]) == 0


def test_a_machine_that_ran_slower_is_not_code_that_got_slower(tmp_path):
    """The wrong figure: back to back on a shared machine, same code, training +9.7% on every
    metric was a regression. When the reference loop moved as much, the machine moved, not the
    code."""
    base = reference(write_run(tmp_path, _cases(), suite="s"), machine=1.0)
    slower_machine = reference(
        write_run(tmp_path / "m", _cases(a=1.3, b=1.3, c=1.3, d=1.3), suite="s"),
        machine=1.3,
        phase=1,
    )
    rows = compare(base, slower_machine)
    energy = rows[rows["metric"] == "energy_per_query_j"]
    assert set(energy["verdict"]) == {"within noise"}
    assert energy["machine_change_rel"].to_numpy() == pytest.approx([0.3] * 4, abs=0.03)
    assert energy["p_value"].min() > 0.05
    # the same +30% with the machine as it was: code that got slower (c's repetitions spread
    # too widely to say)
    slower_code = reference(
        write_run(tmp_path / "c", _cases(a=1.3, b=1.3, c=1.3, d=1.3), suite="s"), phase=1
    )
    v = _verdicts(compare(base, slower_code))
    assert v["a"] == v["b"] == v["d"] == "regression" and v["c"] == "within noise"


def test_without_a_measure_of_run_to_run_noise_compare_cannot_tell(runs, tmp_path, capsys):
    """One earlier run, no reference loop: a +30% change could be the machine. Not a regression
    (exit 0), unless asked to be strict."""
    base = write_run(tmp_path / "b", _cases(), suite="s", started="2025-01-01T00:00:00Z")
    new = write_run(tmp_path / "b", _cases(a=1.3), suite="s", started="2025-01-02T00:00:00Z")
    rows = compare_frames(open_run(base).frame, open_run(new).frame)
    assert _verdicts(rows)["a"] == "cannot tell"
    assert "run-to-run noise unknown" in rows[rows["verdict"] == "cannot tell"]["note"].iloc[0]
    assert "regression" not in set(rows["verdict"])
    assert main(["compare", str(base), str(new)]) == 0
    assert "cannot tell" in capsys.readouterr().out
    assert main(["compare", str(base), str(new), "--strict"]) == 1
    # an improvement that cannot be told is no failure, strict or not
    better = write_run(tmp_path / "b", _cases(a=0.7), suite="s", started="2025-01-03T00:00:00Z")
    shutil.rmtree(new)
    assert main(["compare", str(base), str(better), "--strict"]) == 0


def test_earlier_runs_give_the_noise_as_bencher_does(tmp_path):
    """No reference loop: the suite's earlier runs tell how much a case moves from run to run."""
    results = tmp_path / "results"
    # a moves ±15% from run to run; b does not move
    history = [1.0, 1.2, 0.85, 1.1, 0.9, 1.15, 1.05, 0.95]
    runs = [
        write_run(results, _cases(a=x), suite="s", started=f"2025-01-0{i + 1}T00:00:00Z")
        for i, x in enumerate(history)
    ]
    inside = write_run(results, _cases(a=1.25), suite="s", started="2025-01-16T00:00:00Z")
    rows = compare(runs[-1], inside, history=runs[-2::-1])
    a = rows[(rows["metric"] == "energy_per_query_j") & rows["case"].str.startswith("a/")]
    assert a["verdict"].iloc[0] == "within noise" and "history of 8 runs" in a["noise"].iloc[0]
    planted = write_run(results, _cases(a=3.0, b=3.0), suite="s", started="2025-01-17T00:00:00Z")
    v = _verdicts(compare(runs[-1], planted, history=runs[-2::-1]))
    assert v["a"] == v["b"] == "regression"
    # the command line finds the earlier runs itself
    assert main(["compare", str(runs[-1]), str(inside)]) == 0
    assert main(["compare", str(runs[-1]), str(planted)]) == 1


def test_many_metrics_are_adjusted_for_multiple_tests(tmp_path):
    """The wrong figure: about 8 metrics a case were each tested at 0.05, so a large suite exits
    1 by chance. Holm's adjustment over all of a compare's tests keeps the family at 0.05."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, float("nan")])[0] == 0.5  # NaN is no test and counts for none
    # 20 cases; one moved by +8% with p about 0.02 on its own: chance among 100 tests
    cases = [infer_case(f"m{i:02}", "fp32", "cpu", 8, 1.0, trace=False) for i in range(20)]
    moved = [infer_case(f"m{i:02}", "fp32", "cpu", 8, 1.0, trace=False) for i in range(20)]
    moved[7] = infer_case("m07", "fp32", "cpu", 8, [1.06, 1.08, 1.10], trace=False)
    base = reference(write_run(tmp_path, cases, suite="s"))
    new = reference(write_run(tmp_path / "n", moved, suite="s"))
    rows = compare(base, new)
    row = rows[rows["case"].str.startswith("m07/") & (rows["metric"] == "energy_per_query_j")]
    assert row["p_value"].iloc[0] < 0.05 < row["p_adj"].iloc[0]
    assert (rows["adjustment"].dropna() == "holm").all()
    assert "regression" not in set(rows["verdict"])


def _answers(run, case_prefix: str, correct: list[int]) -> None:
    folder = next(
        f
        for f in (run / "cases").iterdir()
        if json.loads((f / "case.json").read_text())["case"].startswith(case_prefix)
    )
    samples = [{"doc_id": i, "question_sha": f"q{i}", "correct": c} for i, c in enumerate(correct)]
    (folder / "answers.json").write_text(
        json.dumps({"task": "arith_mc", "metric": "acc", "samples": samples})
    )


def test_accuracy_is_compared_answer_by_answer(tmp_path):
    """200 questions: the new run got 12 wrong that the base got right, and none the other way.
    Two proportions (0.50 -> 0.44) cannot tell that from chance; the paired answers can."""
    base = write_run(tmp_path, [accuracy_case("a", "fp32", "cpu", "arith_mc", 0.50)], suite="s")
    new = write_run(
        tmp_path / "n", [accuracy_case("a", "fp32", "cpu", "arith_mc", 0.44)], suite="s"
    )
    unpaired = compare(reference(base), reference(new))
    acc = unpaired[unpaired["metric"] == "accuracy"].iloc[0]
    assert acc["noise"] == "two proportions" and acc["verdict"] == "within noise"
    right = [1] * 100 + [0] * 100
    _answers(base, "a/", right)
    _answers(new, "a/", [0] * 12 + right[12:])
    paired = compare(base, new)
    acc = paired[paired["metric"] == "accuracy"].iloc[0]
    assert acc["noise"] == "paired answers" and "12 right only before" in acc["note"]
    assert acc["p_value"] == pytest.approx(mcnemar_p(12, 0)) == pytest.approx(2 / 2**12)
    assert acc["verdict"] == "regression"


def test_mcnemar_exact_matches_a_binomial_test():
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in ((12, 0), (7, 3), (20, 25), (0, 0), (1, 9)):
        expected = scipy_stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        assert mcnemar_p(b, c) == pytest.approx(expected)


def test_an_accuracy_case_is_not_judged_by_one_repetitions_energy(tmp_path):
    """The wrong figure: an accuracy case (one repetition) +32% energy was a regression by the
    threshold alone, while the machine itself ran 30% slower."""
    base = reference(
        write_run(tmp_path, [accuracy_case("a", "fp32", "cpu", "t", 0.5, energy_j=50.0)], suite="s")
    )
    new = write_run(
        tmp_path / "n", [accuracy_case("a", "fp32", "cpu", "t", 0.5, energy_j=66.0)], suite="s"
    )
    # one case alone: the machine moved +30%, but how much it moves from case to case is unknown
    rows = compare(base, reference(new, machine=1.3))
    energy = rows[rows["metric"] == "energy_per_sample_j"].iloc[0]
    assert energy["machine_change_rel"] == pytest.approx(0.3, abs=0.02)
    assert energy["verdict"] == "cannot tell"
    # with two more cases measured beside it, the machine's moves are known
    base = reference(
        write_run(
            tmp_path / "b3",
            [accuracy_case("a", "fp32", "cpu", "t", 0.5, energy_j=50.0), *_steady()],
            suite="s",
        )
    )
    new = reference(
        write_run(
            tmp_path / "n3",
            [accuracy_case("a", "fp32", "cpu", "t", 0.5, energy_j=66.0), *_steady()],
            suite="s",
        ),
        machine=1.3,
        phase=1,
    )
    rows = compare(base, new)
    energy = rows[rows["metric"] == "energy_per_sample_j"].iloc[0]
    assert energy["change_rel"] == pytest.approx(0.32)
    assert energy["verdict"] == "within noise"
